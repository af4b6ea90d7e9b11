"""SSH to lab nodes with the lab's own key and known_hosts (host keys pinned at `up`: no TOFU)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from updater.lab.errors import LabError
from updater.lab.host import run
from updater.lab.layout import LabLayout


def ssh_command(layout: LabLayout, address: str, *remote: str, connect_timeout: int = 5) -> list[str]:
    return [
        "ssh",
        "-i",
        str(layout.ssh_key),
        "-o",
        f"UserKnownHostsFile={layout.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        f"ConnectTimeout={connect_timeout}",
        f"root@{address}",
        *remote,
    ]


def ssh_run(layout: LabLayout, address: str, command: str, timeout: float = 60) -> str:
    return run(ssh_command(layout, address, command), timeout=timeout).stdout


def is_ready(layout: LabLayout, address: str) -> bool:
    try:
        cmd = ssh_command(layout, address, "true", connect_timeout=1)
        return subprocess.run(cmd, capture_output=True, timeout=5, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def wait_ready(layout: LabLayout, addresses: dict[str, str], timeout: float = 120) -> None:
    """Until every node accepts an SSH login with the lab key (and the pinned host key)."""
    pending = dict(addresses)
    deadline = time.monotonic() + timeout
    while pending:
        for name, address in list(pending.items()):
            if is_ready(layout, address):
                del pending[name]
        if pending and time.monotonic() > deadline:
            raise LabError(
                f"not SSH-ready after {timeout:.0f}s: {', '.join(sorted(pending))} "
                f"(see {layout.state_dir}/nodes/NODE/console.log and lxc.log)"
            )
        if pending:
            time.sleep(0.2)


def keygen(path: Path, comment: str) -> str:
    """Create an ed25519 key pair at ``path`` (if absent) and return the public key line."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_name(path.name + ".pub").read_text(encoding="ascii").strip()
