"""Where a lab lives and how it is addressed: pure rules, no I/O.

A lab has a name (``demo`` by default, the tests use their own) and a host-wide index 1..250 chosen at
``up``. The index gives it an address range used only on its own bridge (10.77.<index>.0/24, never routed,
NAT-ed or forwarded), a bridge name, and a loopback range for its virtual BMCs (127.77.<index>.<node>).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from updater.lab.errors import LabError

DEFAULT_ROOT = Path("/var/lib/corral-lab")
DEFAULT_LAB = "demo"
MIN_NODES = 1
MAX_NODES = 12  # above ~12 nodes fs.inotify.max_user_instances must be raised (DESIGN.md §10)
MAX_INDEX = 250
MAX_DISKS = 8
BMC_PORT = 623
_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")  # the bridge name "crl-<name>" must fit IFNAMSIZ (15)
_NODE = re.compile(r"^node([1-9][0-9]?)$")


def validate_lab_name(name: str) -> str:
    if not _NAME.match(name):
        raise LabError(
            f"lab name {name!r}: use 1-10 lowercase letters and digits, starting with a letter (e.g. citest)"
        )
    if name == "images":
        raise LabError("lab name 'images' is reserved (the shared image cache lives there)")
    return name


def validate_node_count(count: int) -> int:
    if not MIN_NODES <= count <= MAX_NODES:
        raise LabError(f"--nodes {count}: a lab has {MIN_NODES} to {MAX_NODES} nodes")
    return count


def validate_disks(count: int, size_gib: float) -> None:
    if not 0 <= count <= MAX_DISKS:
        raise LabError(f"--disks {count}: a node has 0 to {MAX_DISKS} data disks")
    if not 0.01 <= size_gib <= 1024:
        raise LabError(f"--disk-size {size_gib}: give a size in GiB between 0.01 and 1024")


def validate_racks(racks: int, nodes: int) -> None:
    if not 0 <= racks <= nodes:
        raise LabError(f"--racks {racks}: give 0 (the failure domain is the host) to {nodes} (one per node)")


def node_name(number: int) -> str:
    return f"node{number}"


def node_number(name: str, nodes: int) -> int:
    match = _NODE.match(name)
    if not match or not 1 <= int(match.group(1)) <= nodes:
        known = ", ".join(node_name(i) for i in range(1, nodes + 1))
        raise LabError(f"unknown node {name!r}: this lab has {known}")
    return int(match.group(1))


def free_index(used: set[int]) -> int:
    for index in range(1, MAX_INDEX + 1):
        if index not in used:
            return index
    raise LabError(f"no free lab index: {MAX_INDEX} labs exist on this host; `corral-lab down` one")


@dataclass(frozen=True)
class LabLayout:
    """Every path and address of one lab."""

    name: str
    index: int
    root: Path = DEFAULT_ROOT

    # --- paths ------------------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.root / self.name

    @property
    def lxc_path(self) -> Path:
        return self.state_dir / "lxc"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def inventory_file(self) -> Path:
        return self.state_dir / "inventory.yml"

    @property
    def boot_log(self) -> Path:
        return self.state_dir / "boot.log"

    @property
    def ssh_key(self) -> Path:
        return self.state_dir / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "ssh" / "known_hosts"

    @property
    def bmc_credentials(self) -> Path:
        return self.state_dir / "bmc" / "credentials.json"

    @property
    def hooks_dir(self) -> Path:
        return self.state_dir / "hooks"

    def node_dir(self, node: str) -> Path:
        return self.state_dir / "nodes" / node

    # --- names and addresses ------------------------------------------------------------------------------
    @property
    def bridge(self) -> str:
        return f"crl-{self.name}"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.77.{self.index}.0/24")

    @property
    def host_address(self) -> str:
        return f"10.77.{self.index}.1"

    @property
    def vip(self) -> str:
        return f"10.77.{self.index}.10"

    def container(self, node: str) -> str:
        return f"{self.name}-{node}"

    def node_address(self, number: int) -> str:
        return f"10.77.{self.index}.{10 + number}"

    def node_mac(self, number: int) -> str:
        # Locally administered, fixed per lab and node: a restarted node keeps its MAC (no stale ARP).
        return f"02:c0:77:{self.index:02x}:00:{number:02x}"

    def veth(self, number: int) -> str:
        return f"crl{self.index}n{number}"

    def bmc_address(self, number: int) -> str:
        return f"127.77.{self.index}.{number}"
