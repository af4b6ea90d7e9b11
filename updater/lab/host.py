"""Thin wrappers around the host tools the lab drives: the one subprocess door."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from updater.lab.errors import LabError


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; a failure becomes a :class:`LabError` naming the command."""
    try:
        result = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            input=input_text,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(f"{cmd[0]}: not installed (run `make bootstrap`: scripts/host-packages.txt)") from exc
    if check and result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise LabError(f"`{' '.join(cmd)}` failed (exit {result.returncode}): {detail}")
    return result


def require_root(action: str) -> None:
    """The lab creates bridges, containers and loop devices: only root can."""
    if os.geteuid() != 0:
        raise LabError(
            f"corral-lab {action}: must run as root (it creates bridges, containers and loop devices)"
        )


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise LabError(
            f"missing host tools: {', '.join(missing)} (run `make bootstrap`: scripts/host-packages.txt)"
        )


def is_mountpoint(path: str) -> bool:
    return run(["mountpoint", "-q", path], check=False).returncode == 0


def unmount_tree(path: str) -> None:
    """Unmount everything at or below ``path`` (deepest first); a missing path is fine."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target == path or target.startswith(path.rstrip("/") + "/"):
                mounts.append(target)
    for target in sorted(set(mounts), key=len, reverse=True):
        run(["umount", "-l", target], check=False)
