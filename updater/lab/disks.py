"""Data disks: sparse files on the host, attached as loop devices (direct I/O) and passed into a node."""

from __future__ import annotations

import json
from pathlib import Path

from updater.lab.host import run


def ensure(disk_dir: Path, count: int, size_gib: float) -> tuple[str, ...]:
    """Create (sparse) and attach ``count`` disk files; returns their loop devices, in disk order."""
    disk_dir.mkdir(parents=True, exist_ok=True)
    size = int(size_gib * 1024**3)
    devices = []
    for i in range(count):
        image = disk_dir / f"disk{i}.img"
        if not image.exists():
            with open(image, "wb") as f:
                f.truncate(size)
        devices.append(attach(image))
    return tuple(devices)


def attach(image: Path) -> str:
    current = attached_to(image)
    if current:
        return current[0]
    return run(["losetup", "--find", "--show", "--direct-io=on", str(image)]).stdout.strip()


def attached_to(image: Path) -> list[str]:
    """Loop devices backed by ``image`` (normally none or one)."""
    out = run(["losetup", "--json", "--list"], check=False).stdout
    if not out.strip():
        return []
    rows = json.loads(out).get("loopdevices", [])
    target = str(image.resolve())
    return [row["name"] for row in rows if (row.get("back-file") or "").removesuffix(" (deleted)") == target]


def detach_all(disk_dir: Path) -> None:
    for image in sorted(disk_dir.glob("disk*.img")) if disk_dir.is_dir() else []:
        for dev in attached_to(image):
            run(["losetup", "--detach", dev], check=False)


def loops_under(root: Path) -> list[str]:
    """Every loop device whose backing file lies under ``root`` (what teardown must leave at zero)."""
    out = run(["losetup", "--json", "--list"], check=False).stdout
    if not out.strip():
        return []
    prefix = str(root.resolve()).rstrip("/") + "/"
    return [
        row["name"]
        for row in json.loads(out).get("loopdevices", [])
        if (row.get("back-file") or "").startswith(prefix)
    ]
