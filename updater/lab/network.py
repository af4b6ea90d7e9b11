"""The lab bridge: an isolated L2 segment with the host at .1. No route out, no NAT, no forwarding.

Also the one host sysctl the lab needs beyond its bridge: every systemd node takes inotify instances.
"""

from __future__ import annotations

from pathlib import Path

from updater.lab.host import run
from updater.lab.layout import LabLayout


def exists(bridge: str) -> bool:
    return Path("/sys/class/net", bridge).exists()


def create(layout: LabLayout) -> None:
    bridge = layout.bridge
    if not exists(bridge):
        run(["ip", "link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
    # The host answers on the bridge but never forwards for it, and the bridge carries no IPv6 chatter.
    _sysctl(f"net/ipv4/conf/{bridge}/forwarding", "0")
    _sysctl(f"net/ipv6/conf/{bridge}/disable_ipv6", "1")
    address = f"{layout.host_address}/{layout.network.prefixlen}"
    current = run(["ip", "-4", "-o", "addr", "show", "dev", bridge]).stdout
    if address not in current:
        run(["ip", "addr", "replace", address, "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])


def remove(layout: LabLayout) -> None:
    if exists(layout.bridge):
        run(["ip", "link", "del", layout.bridge])


def _sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key
    if path.exists():
        path.write_text(value, encoding="ascii")


# Each systemd node takes several inotify instances; with a few labs up, the default 128 runs out and
# nodes fail to boot (DESIGN.md §3). Raised, never lowered; it is a host limit, not a lab object.
INOTIFY_INSTANCES = 1024


def ensure_inotify_instances() -> None:
    path = Path("/proc/sys/fs/inotify/max_user_instances")
    if path.exists() and int(path.read_text(encoding="ascii")) < INOTIFY_INSTANCES:
        path.write_text(str(INOTIFY_INSTANCES), encoding="ascii")
