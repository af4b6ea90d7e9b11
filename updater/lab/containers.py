"""Lab nodes as privileged LXC system containers: their config and their power (start, hard stop, state)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from updater.lab.errors import LabError
from updater.lab.host import run
from updater.lab.layout import LabLayout


@dataclass(frozen=True)
class NodeSpec:
    name: str
    number: int
    loop_devices: tuple[str, ...]  # /dev/loopN passed into the node as data disks


def render_config(layout: LabLayout, spec: NodeSpec, pre_start: Path, post_stop: Path) -> str:
    """The node's LXC config. Pitfalls from DESIGN.md §3/§10 are handled here, once."""
    node_dir = layout.node_dir(spec.name)
    lines = [
        "# Corral lab node (written by corral-lab up; edits are overwritten)",
        "lxc.include = /usr/share/lxc/config/common.conf",
        "lxc.arch = linux64",
        f"lxc.uts.name = {spec.name}",
        f"lxc.rootfs.path = dir:{node_dir / 'rootfs'}",
        "lxc.apparmor.profile = unconfined",  # no AppArmor in this kernel
        "lxc.autodev = 1",
        "lxc.tty.max = 1",
        "lxc.signal.halt = SIGRTMIN+3",
        "lxc.signal.reboot = SIGTERM",
        "lxc.start.auto = 0",
        f"lxc.console.logfile = {node_dir / 'console.log'}",
        f"lxc.hook.pre-start = {pre_start} {spec.name}",
        f"lxc.hook.post-stop = {post_stop} {spec.name}",
        # Network: the lab bridge only. No gateway: a node has no default route and no way out.
        "lxc.net.0.type = veth",
        f"lxc.net.0.link = {layout.bridge}",
        f"lxc.net.0.veth.pair = {layout.veth(spec.number)}",
        "lxc.net.0.name = eth0",
        "lxc.net.0.flags = up",
        f"lxc.net.0.hwaddr = {layout.node_mac(spec.number)}",  # fixed: no stale ARP after a restart
        f"lxc.net.0.ipv4.address = {layout.node_address(spec.number)}/{layout.network.prefixlen}",
        # The persistent state volume.
        f"lxc.mount.entry = {node_dir / 'state'} var/lib/corral none bind,create=dir 0 0",
    ]
    for dev in spec.loop_devices:
        minor = int(dev.removeprefix("/dev/loop"))
        lines.append(f"lxc.cgroup.devices.allow = b 7:{minor} rwm")  # cgroup v1 devices controller
        lines.append(f"lxc.mount.entry = {dev} {dev.lstrip('/')} none bind,create=file 0 0")
    return "\n".join(lines) + "\n"


def write_config(layout: LabLayout, spec: NodeSpec, pre_start: Path, post_stop: Path) -> None:
    ct_dir = layout.lxc_path / layout.container(spec.name)
    ct_dir.mkdir(parents=True, exist_ok=True)
    (ct_dir / "config").write_text(render_config(layout, spec, pre_start, post_stop), encoding="utf-8")


def _lxc(tool: str, layout: LabLayout, node: str, *args: str, check: bool = True) -> str:
    # Always an absolute -P: relative lxc paths silently address another container store.
    cmd = [tool, "-P", str(layout.lxc_path.resolve()), "-n", layout.container(node), *args]
    return run(cmd, check=check, timeout=120).stdout


def state(layout: LabLayout, node: str) -> str:
    """RUNNING, STOPPED, STARTING, STOPPING, ... or ABSENT when the container does not exist."""
    if not (layout.lxc_path / layout.container(node) / "config").is_file():
        return "ABSENT"
    out = _lxc("lxc-info", layout, node, "-s", "-H", check=False).strip()
    return out or "STOPPED"


def start(layout: LabLayout, node: str) -> None:
    if state(layout, node) == "RUNNING":
        return
    log = layout.node_dir(node) / "lxc.log"
    result = run(
        [
            "lxc-start",
            "-P",
            str(layout.lxc_path.resolve()),
            "-n",
            layout.container(node),
            "-d",
            "-o",
            str(log),
            "-l",
            "INFO",
        ],
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:] if log.exists() else []
        raise LabError(f"{node}: lxc-start failed: {result.stderr.strip()} {' | '.join(tail)}")


def power_off(layout: LabLayout, node: str) -> None:
    """A hard power-off: the node gets no chance to shut down (``lxc-stop -k``)."""
    if state(layout, node) in ("STOPPED", "ABSENT"):
        return
    _lxc("lxc-stop", layout, node, "-k", check=False)
    wait_state(layout, node, "STOPPED", 30)


def wait_state(layout: LabLayout, node: str, wanted: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while state(layout, node) != wanted:
        if time.monotonic() > deadline:
            raise LabError(f"{node}: not {wanted} after {timeout:.0f}s (state {state(layout, node)})")
        time.sleep(0.1)


def destroy(layout: LabLayout, node: str) -> None:
    power_off(layout, node)
    ct_dir = layout.lxc_path / layout.container(node)
    if ct_dir.is_dir():
        run(["rm", "-rf", "--one-file-system", str(ct_dir)])


def init_pid(layout: LabLayout, node: str) -> int | None:
    out = _lxc("lxc-info", layout, node, "-p", "-H", check=False).strip()
    return int(out) if out.isdigit() else None
