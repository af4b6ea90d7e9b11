# Copyright: Corral maintainers
# Apache-2.0
"""Ceph drive policy: decide, per offered disk, whether it becomes an OSD, and say why.

Pure decision logic (no Ansible, no I/O): the ``ceph_disk_policy`` module feeds it what
``lsblk --json -O -b``, ``blkid -p -o export`` and ``ceph-bluestore-tool show-label`` printed on the node,
and the unit tests feed it recorded outputs of the same commands.

Safety comes before preference: a disk holding a partition table, a filesystem or any other signature,
an LVM physical volume, a mounted child, a holder (device-mapper, md) or a BlueStore label of another
cluster is never selected, whatever the policy says. A disk already carrying an OSD of *this* cluster is
reported as such so the role activates it instead of preparing it again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# Decisions, in the order a reader meets them in a report.
NEW_OSD = "new-osd"  # blank, matches the policy: ceph-volume prepares it
EXISTING_OSD = "existing-osd"  # already an OSD of this cluster: activate, never prepare again
SKIP = "skip"  # left untouched; the reason says why

BLUESTORE_TYPE = "ceph_bluestore"
POLICY_KEYS = frozenset({"rotational", "min_size", "max_size", "model", "serial", "exclude"})
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)
_WHOLE_DISK_TYPES = frozenset({"disk", "loop"})


class PolicyError(ValueError):
    """The policy itself is malformed (unknown key, bad size, bad pattern)."""


class DeviceDataError(ValueError):
    """What a node's tools printed cannot be understood (not lsblk JSON, unknown device...)."""


def parse_size(value: object, key: str) -> int | None:
    """Return bytes for ``100G`` / ``1.5T`` / ``4096`` / ``None`` (binary units: G means GiB)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PolicyError(f"ceph_osd_policy.{key}: {value!r} is not a size (use bytes or e.g. '100G')")
    if isinstance(value, int):
        if value < 0:
            raise PolicyError(f"ceph_osd_policy.{key}: size must not be negative, got {value}")
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise PolicyError(f"ceph_osd_policy.{key}: {value!r} is not a size (use bytes or e.g. '100G', '2T')")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.upper()])


def _compile(pattern: object, key: str) -> re.Pattern[str] | None:
    if pattern is None or pattern == "":
        return None
    if not isinstance(pattern, str):
        raise PolicyError(f"ceph_osd_policy.{key}: expected a regular expression string, got {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise PolicyError(
            f"ceph_osd_policy.{key}: {pattern!r} is not a valid regular expression: {exc}"
        ) from exc


@dataclass(frozen=True)
class OsdPolicy:
    """Which blank disks become OSDs. ``None`` means "any" for every rule."""

    rotational: bool | None = None
    min_size: int | None = None
    max_size: int | None = None
    model: re.Pattern[str] | None = None
    serial: re.Pattern[str] | None = None
    exclude: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, raw: dict[str, Any] | None) -> OsdPolicy:
        raw = dict(raw or {})
        unknown = sorted(set(raw) - POLICY_KEYS)
        if unknown:
            raise PolicyError(
                f"ceph_osd_policy: unknown key(s) {', '.join(unknown)}; "
                f"known keys: {', '.join(sorted(POLICY_KEYS))}"
            )
        rotational = raw.get("rotational")
        if rotational is not None and not isinstance(rotational, bool):
            raise PolicyError(f"ceph_osd_policy.rotational: expected true, false or null, got {rotational!r}")
        exclude = raw.get("exclude") or []
        if isinstance(exclude, str) or not all(isinstance(item, str) for item in exclude):
            raise PolicyError(
                f"ceph_osd_policy.exclude: expected a list of device paths/names/serials, got {exclude!r}"
            )
        policy = cls(
            rotational=rotational,
            min_size=parse_size(raw.get("min_size"), "min_size"),
            max_size=parse_size(raw.get("max_size"), "max_size"),
            model=_compile(raw.get("model"), "model"),
            serial=_compile(raw.get("serial"), "serial"),
            exclude=tuple(exclude),
        )
        if policy.min_size is not None and policy.max_size is not None and policy.min_size > policy.max_size:
            raise PolicyError(
                f"ceph_osd_policy: min_size ({raw.get('min_size')}) is larger than "
                f"max_size ({raw.get('max_size')})"
            )
        return policy


@dataclass(frozen=True)
class BluestoreLabel:
    """The part of ``ceph-bluestore-tool show-label`` output the policy needs."""

    ceph_fsid: str
    osd_id: int | None
    osd_uuid: str


@dataclass(frozen=True)
class Device:
    """One whole block device as lsblk (and, where lsblk had nothing, blkid) saw it."""

    path: str
    name: str
    type: str
    size: int
    rotational: bool
    read_only: bool
    removable: bool
    model: str | None
    serial: str | None
    wwn: str | None
    pttype: str | None
    fstype: str | None
    mountpoints: tuple[str, ...]
    children: tuple[str, ...]  # kernel names of partitions / holders below it
    mounted_children: tuple[str, ...]  # "child at /mountpoint"


@dataclass(frozen=True)
class Decision:
    path: str
    decision: str
    reason: str
    size: int | None = None
    rotational: bool | None = None
    model: str | None = None
    serial: str | None = None
    osd_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "decision": self.decision,
            "reason": self.reason,
            "size": self.size,
            "rotational": self.rotational,
            "model": self.model,
            "serial": self.serial,
            "osd_id": self.osd_id,
        }


@dataclass
class Inventory:
    """The whole devices lsblk reported, by path."""

    by_path: dict[str, Device] = field(default_factory=dict)


def _strip(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _mountpoints(node: dict[str, Any]) -> list[str]:
    points = node.get("mountpoints")
    if points is None:
        points = [node.get("mountpoint")]
    return [p for p in points if p]


def _flatten_children(node: dict[str, Any]) -> tuple[list[str], list[str]]:
    names: list[str] = []
    mounted: list[str] = []
    for child in node.get("children") or []:
        name = str(child.get("name") or child.get("kname"))
        names.append(name)
        mounted.extend(f"{name} at {point}" for point in _mountpoints(child))
        sub_names, sub_mounted = _flatten_children(child)
        names.extend(sub_names)
        mounted.extend(sub_mounted)
    return names, mounted


def _as_bool(value: Any) -> bool:
    # lsblk prints JSON booleans since util-linux 2.33 and "0"/"1" strings before.
    if isinstance(value, str):
        return value.strip() == "1"
    return bool(value)


def parse_lsblk(text: str) -> Inventory:
    """Parse ``lsblk --json -O -b`` (whole devices at the top level, partitions/holders as children)."""
    try:
        data = json.loads(text)
        nodes = data["blockdevices"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DeviceDataError(f"lsblk output is not `lsblk --json` output: {exc}") from exc
    inventory = Inventory()
    for node in nodes:
        name = str(node.get("name") or node.get("kname"))
        path = str(node.get("path") or f"/dev/{name}")
        children, mounted_children = _flatten_children(node)
        size = node.get("size")
        inventory.by_path[path] = Device(
            path=path,
            name=name,
            type=str(node.get("type") or ""),
            size=int(size) if size is not None else 0,
            rotational=_as_bool(node.get("rota")),
            read_only=_as_bool(node.get("ro")),
            removable=_as_bool(node.get("rm")),
            model=_strip(node.get("model")),
            serial=_strip(node.get("serial")),
            wwn=_strip(node.get("wwn")),
            pttype=_strip(node.get("pttype")),
            fstype=_strip(node.get("fstype")),
            mountpoints=tuple(_mountpoints(node)),
            children=tuple(children),
            mounted_children=tuple(mounted_children),
        )
    return inventory


def parse_blkid_export(text: str) -> dict[str, str]:
    """Parse ``blkid -p -o export DEV`` (KEY=value lines; empty output means no signature found)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def parse_bluestore_label(text: str, path: str) -> BluestoreLabel:
    """Parse ``ceph-bluestore-tool show-label --dev PATH`` JSON for one device."""
    try:
        data = json.loads(text)
        label = data.get(path) or next(iter(data.values()))
        whoami = label.get("whoami")
        return BluestoreLabel(
            ceph_fsid=str(label["ceph_fsid"]),
            osd_id=int(whoami) if whoami not in (None, "") else None,
            osd_uuid=str(label.get("osd_uuid", "")),
        )
    except (ValueError, KeyError, TypeError, StopIteration, AttributeError) as exc:
        raise DeviceDataError(f"{path}: cannot read the BlueStore label ({exc})") from exc


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _excluded_by(policy: OsdPolicy, device: Device) -> str | None:
    identities = {device.path, device.name, device.serial, device.wwn} - {None}
    for item in policy.exclude:
        if item in identities:
            return item
    return None


def _content_reason(  # noqa: PLR0911 - one early return per reason reads best
    device: Device, signature: dict[str, str], label: BluestoreLabel | None, cluster_fsid: str | None
) -> str | None:
    """Why the disk must not be touched, or None when it is blank."""
    if device.mountpoints:
        return f"mounted at {', '.join(device.mountpoints)}"
    if device.mounted_children:
        return f"has mounted children: {', '.join(device.mounted_children)}"
    pttype = device.pttype or signature.get("PTTYPE")
    if pttype:
        return f"holds a partition table ({pttype})"
    fstype = device.fstype or signature.get("TYPE")
    if fstype == BLUESTORE_TYPE:
        if label is None:
            return "holds a BlueStore label that could not be read; left alone"
        return (
            f"holds a foreign BlueStore OSD (osd.{label.osd_id}, cluster {label.ceph_fsid}"
            f"{'' if cluster_fsid is None else f', this cluster is {cluster_fsid}'})"
        )
    if fstype == "LVM2_member":
        users = f" (in use by {', '.join(device.children)})" if device.children else ""
        return f"is an LVM physical volume{users}"
    if fstype:
        return f"holds a filesystem or signature ({fstype})"
    if device.children:
        return f"is in use by {', '.join(device.children)}"
    return None


def _rule_reason(policy: OsdPolicy, device: Device) -> str | None:
    """Why the policy does not want this (blank) disk, or None when it does."""
    if policy.rotational is not None and device.rotational != policy.rotational:
        kind = "rotational" if device.rotational else "non-rotational"
        wanted = "rotational" if policy.rotational else "non-rotational"
        return f"policy wants {wanted} disks; this one is {kind}"
    if policy.min_size is not None and device.size < policy.min_size:
        return f"smaller ({human_size(device.size)}) than policy min_size ({human_size(policy.min_size)})"
    if policy.max_size is not None and device.size > policy.max_size:
        return f"larger ({human_size(device.size)}) than policy max_size ({human_size(policy.max_size)})"
    if policy.model is not None and not policy.model.search(device.model or ""):
        return f"model {device.model!r} does not match policy model {policy.model.pattern!r}"
    if policy.serial is not None and not policy.serial.search(device.serial or ""):
        return f"serial {device.serial!r} does not match policy serial {policy.serial.pattern!r}"
    return None


def decide(  # noqa: PLR0917 - the inputs are the commands' outputs, named at every call
    inventory: Inventory,
    offered: list[str],
    policy: OsdPolicy,
    signatures: dict[str, dict[str, str]] | None = None,
    labels: dict[str, BluestoreLabel] | None = None,
    cluster_fsid: str | None = None,
) -> list[Decision]:
    """One decision per offered device path, in the order offered.

    ``offered`` is the inventory's ``corral_data_disks``; only those are ever considered, so a disk the
    operator did not offer is never touched. ``signatures`` holds ``blkid -p`` results and ``labels``
    BlueStore labels, both by path.
    """
    signatures = signatures or {}
    labels = labels or {}
    decisions: list[Decision] = []
    seen: set[str] = set()
    for path in offered:
        if path in seen:
            raise DeviceDataError(f"{path} is offered twice in corral_data_disks")
        seen.add(path)
        device = inventory.by_path.get(path)
        if device is None:
            decisions.append(Decision(path, SKIP, "no such block device on this node"))
            continue

        def make(decision: str, reason: str, osd_id: int | None = None, dev: Device = device) -> Decision:
            return Decision(
                dev.path, decision, reason, dev.size, dev.rotational, dev.model, dev.serial, osd_id
            )

        label = labels.get(path)
        if label is not None and cluster_fsid is not None and label.ceph_fsid == cluster_fsid:
            decisions.append(make(EXISTING_OSD, f"already osd.{label.osd_id} of this cluster", label.osd_id))
            continue
        if device.type not in _WHOLE_DISK_TYPES:
            decisions.append(make(SKIP, f"not a whole disk (lsblk type {device.type!r})"))
            continue
        excluded = _excluded_by(policy, device)
        if excluded is not None:
            decisions.append(make(SKIP, f"excluded by policy ({excluded})"))
            continue
        if device.read_only:
            decisions.append(make(SKIP, "read-only device"))
            continue
        if device.size == 0:
            decisions.append(make(SKIP, "zero-size device (no medium)"))
            continue
        content = _content_reason(device, signatures.get(path, {}), label, cluster_fsid)
        if content is not None:
            decisions.append(make(SKIP, content))
            continue
        rule = _rule_reason(policy, device)
        if rule is not None:
            decisions.append(make(SKIP, rule))
            continue
        decisions.append(make(NEW_OSD, f"blank {human_size(device.size)} disk matching the policy"))
    return decisions


def needs_label(inventory: Inventory, path: str, signature: dict[str, str]) -> bool:
    """Whether the module must read a BlueStore label for this path before deciding."""
    device = inventory.by_path.get(path)
    fstype = (device.fstype if device else None) or signature.get("TYPE")
    return fstype == BLUESTORE_TYPE
