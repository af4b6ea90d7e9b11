"""Lab tier: real privileged-LXC lab nodes.

The session shares ONE lab, ``citest`` (3 nodes, booted from the image built from every role's declared
packages), through the ``lab`` fixture; later issues' lab tests reuse it. It is torn down at the end of the
session even when tests fail (a leftover from a crashed run is removed first). A test that changes a node's
boot pointer or RAM disk puts it back with :meth:`LabSession.reset`, which re-points the node at the base
image and power-cycles it into a fresh RAM disk (the state volume stays).

Two sessions on one machine (engineers sharing a host) must not share a lab: set CORRAL_TEST_LAB_NAME
(1-10 lowercase letters/digits) for the second one. A session refuses to take over a lab that another
live pytest process is using, instead of tearing it down under it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from updater.lab import bootptr
from updater.lab.errors import LabError
from updater.lab.image import ImageStore
from updater.lab.lab import Lab

if TYPE_CHECKING:
    from tests.lab.site_story import Deployment

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
# The shared lab; the overrides are for a second session on the same host and for the nested session of the
# teardown-after-failure test.
LAB_NAME = os.environ.get("CORRAL_TEST_LAB_NAME", "citest")
LAB_NODES = int(os.environ.get("CORRAL_TEST_LAB_NODES", "3"))


def side_lab(suffix: str) -> str:
    """The name of an extra lab a test makes, derived from this session's lab (citest -> citestb)."""
    return LAB_NAME[: 10 - len(suffix)] + suffix


def vip_command(vip: str) -> str:
    """The shell command whose output `holds_vip` reads on one node."""
    return f"ip -j -4 addr show to {vip}"


def holds_vip(output: str) -> bool:
    """Whether `vip_command` output shows the VIP on a network interface: a draining node's copy parked on
    loopback (the endpoint role's drain) is not holding it."""
    return any(interface.get("ifname") != "lo" for interface in json.loads(output or "[]"))


def ansible_env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_NOCOLOR": "1",
    }


def build_collection(out: Path) -> Path:
    """This tree's corral.cloud collection tarball (what a release bundle carries), built into ``out``."""
    subprocess.run(
        [str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (tarball,) = out.glob("corral-cloud-*.tar.gz")
    return tarball


def corral_lab(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real `corral-lab` command."""
    return subprocess.run(
        [str(VENV_BIN / "corral-lab"), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class LabSession:
    lab: Lab
    base_image: str
    derived: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.lab.name

    @property
    def inventory(self) -> Path:
        return self.lab.layout.inventory_file

    def hostvars(self, node: str) -> dict[str, object]:
        data = yaml.safe_load(self.inventory.read_text())
        return dict(data["all"]["children"]["nodes"]["hosts"][node])

    def ssh(self, node: str, command: str, timeout: float = 60) -> str:
        return self.lab.run_on(node, command, timeout)

    def boot_id(self, node: str) -> str:
        return self.ssh(node, "cat /proc/sys/kernel/random/boot_id").strip()

    def release(self, node: str) -> str:
        return self.ssh(node, "cat /etc/corral-release")

    def ansible(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "ansible"), "-i", str(self.inventory), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=ansible_env(),
            check=False,
        )

    def playbook(self, text: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=ROOT / "build", delete=False) as f:
            f.write(text)
        try:
            return subprocess.run(
                [str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory), f.name, *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=ROOT,
                env=ansible_env(),
                check=False,
            )
        finally:
            os.unlink(f.name)

    def reboot_inside(self, node: str, timeout: float = 120) -> float:
        """`systemctl reboot` inside the node; returns seconds until it is SSH-ready with a new boot id."""
        before = self.boot_id(node)
        started = time.monotonic()
        subprocess.run(
            self.lab.ssh_command(node, "systemctl reboot"), capture_output=True, timeout=30, check=False
        )
        deadline = started + timeout
        while time.monotonic() < deadline:
            try:
                if self.boot_id(node) != before:
                    return time.monotonic() - started
            except LabError:
                pass  # not back yet
            time.sleep(0.1)
        raise AssertionError(f"{node} did not come back from a reboot within {timeout}s")

    def derive_image(self, version: str, files: dict[str, str] | None = None) -> str:
        image = self.lab.images.derive(self.base_image, version, files or {}, note=f"{LAB_NAME} test")
        self.derived.append(image.id)
        return image.id

    def reset(self, node: str) -> None:
        """Back to the base image, no pending one-shot, a fresh RAM disk (the state volume stays)."""
        self.lab.boot_once(node, None)
        self.lab.set_default(node, self.base_image)
        self.lab.power(node, "cycle")

    def boots(self, node: str) -> list[bootptr.Boot]:
        return self.lab.boots(node)


def _remove(lab: Lab) -> None:
    if (lab.root / lab.name).exists():
        lab.down()


def _owner_file(lab: Lab) -> Path:
    return lab.root / lab.name / "test-session.pid"


def _refuse_if_another_session_owns(lab: Lab) -> None:
    try:
        pid = int(_owner_file(lab).read_text().strip())
    except (OSError, ValueError):
        return
    if pid != os.getpid() and Path(f"/proc/{pid}").exists():
        pytest.fail(
            f"lab {lab.name!r} is in use by another test session (pid {pid}); "
            "set CORRAL_TEST_LAB_NAME=<another name> to run a second session on this host"
        )


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # pytest then still tears the session's fixtures down


@pytest.fixture(scope="session")
def lab() -> Iterator[LabSession]:
    """The shared lab `citest` (3 nodes), torn down at the end of the session whatever happened."""
    if os.geteuid() != 0:
        pytest.fail("the lab tier runs as root (it creates containers, bridges and loop devices)")
    (ROOT / "build").mkdir(exist_ok=True)
    shared = Lab(LAB_NAME)
    _refuse_if_another_session_owns(shared)
    _remove(shared)  # a crashed earlier run
    session: LabSession | None = None
    # A CI timeout or `timeout` sends SIGTERM: turn it into an interrupt so the lab is still torn down.
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        started = time.monotonic()
        result = shared.up(nodes=LAB_NODES)
        _owner_file(shared).write_text(f"{os.getpid()}\n")
        print(f"\n[lab] {LAB_NAME}: {LAB_NODES} nodes up in {time.monotonic() - started:.1f}s", flush=True)
        session = LabSession(shared, result.image)
        yield session
    finally:
        _remove(shared)
        store = ImageStore()
        for image in session.derived if session else []:
            store.remove(image)
        signal.signal(signal.SIGTERM, previous)


# --- what a lab may leave behind (the teardown contract) ----------------------------------------------------
def _indexes_in_use() -> set[int]:
    """The indexes of the labs present on this host now (each lab's ``lab.json``)."""
    used = set()
    for cfg in Path("/var/lib/corral-lab").glob("*/lab.json"):
        try:
            used.add(int(json.loads(cfg.read_text())["index"]))
        except (OSError, ValueError, KeyError):
            continue
    return used


def leftovers(name: str, index: int | None) -> list[str]:
    """Everything of lab ``name`` still on the host; [] when `down` did its job.

    ``index`` is the lab's (its veth names and addresses carry it). ``None`` when it is not known, as for a
    lab made and torn down by another process: then any veth or address rule of an index that no present lab
    has counts as left over."""
    state_dir = f"/var/lib/corral-lab/{name}"
    in_use = _indexes_in_use() if index is None else set()

    def ours(found: str) -> bool:
        return int(found) == index if index is not None else int(found) not in in_use

    found = [f"state directory {state_dir}"] if Path(state_dir).exists() else []
    found += [f"lock file {p}" for p in Path("/var/lib/corral-lab").glob(f".{name}.lock")]
    found += [
        f"mount {line.split()[4]}" for line in _lines("/proc/self/mountinfo") if f"{state_dir}/" in line
    ]
    found += [f"loop device {dev}" for dev in _loops_under(state_dir)]
    found += [
        f"network device {dev.name}"
        for dev in Path("/sys/class/net").iterdir()
        if dev.name == f"crl-{name}" or ((m := re.fullmatch(r"crl(\d+)n\d+", dev.name)) and ours(m[1]))
    ]
    found += [f"process {cmd[:120]}" for cmd in _cmdlines() if state_dir in cmd]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout.splitlines()
    found += [
        f"iptables rule {r}"
        for r in rules
        if f"crl-{name}" in r or any(ours(i) for i in re.findall(r"\b10\.77\.(\d+)\.", r))
    ]
    found += [f"cgroup {c}" for c in Path("/sys/fs/cgroup").glob(f"*/lxc.*.{name}-node*")]
    return found


def _lines(path: str) -> list[str]:
    return Path(path).read_text().splitlines()


def _loops_under(directory: str) -> list[str]:
    out = subprocess.run(["losetup", "-J", "-l"], capture_output=True, text=True, check=False).stdout
    rows = json.loads(out).get("loopdevices", []) if out.strip() else []
    return [row["name"] for row in rows if (row.get("back-file") or "").startswith(f"{directory}/")]


def _cmdlines() -> list[str]:
    result = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                result.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return result


@pytest.fixture(scope="session")
def deployed(lab: LabSession) -> Deployment:
    """corral.cloud.site deployed once on the shared lab, and run a second time (the story's first chapter,
    tests/lab/site_story.py); every later chapter uses this deployment instead of converging again."""
    from tests.lab.site_story import deploy

    return deploy(lab)
