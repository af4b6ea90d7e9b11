"""Boot pointers of lab nodes: a default image and an optional one-shot "next boot" image, plus the boot log.

The pre-start hook (``hooks.py``) is what reads them at every (re)start of a node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from updater.lab.layout import LabLayout


@dataclass(frozen=True)
class BootPointer:
    default: str
    next: str | None
    current: str | None  # the image the running node booted (None when it is off)


@dataclass(frozen=True)
class Boot:
    time: str
    node: str
    image: str
    kind: str  # "default", "once", or "<kind> failed:<why>"


def _dir(layout: LabLayout, node: str) -> Path:
    return layout.node_dir(node) / "boot"


def _read(path: Path) -> str | None:
    try:
        value = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    return value or None


def _write(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(value + "\n", encoding="ascii")
    os.replace(tmp, path)


def read(layout: LabLayout, node: str) -> BootPointer:
    d = _dir(layout, node)
    return BootPointer(
        default=_read(d / "default") or "", next=_read(d / "next"), current=_read(d / "current")
    )


def set_default(layout: LabLayout, node: str, image_id: str) -> None:
    _write(_dir(layout, node) / "default", image_id)


def set_next(layout: LabLayout, node: str, image_id: str | None) -> None:
    """Boot ``image_id`` once at the next start of the node (``None`` clears it)."""
    path = _dir(layout, node) / "next"
    if image_id is None:
        path.unlink(missing_ok=True)
    else:
        _write(path, image_id)


def parse_log(text: str) -> list[Boot]:
    boots = []
    for line in text.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 4:
            boots.append(Boot(*parts))
    return boots


def boots(layout: LabLayout, node: str | None = None) -> list[Boot]:
    try:
        text = layout.boot_log.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [b for b in parse_log(text) if node is None or b.node == node]
