"""One virtual BMC process per lab node (``updater.lab.bmc``), on its own loopback address, port 623.

``up`` starts them detached (their own session, so they outlive the command), with a pid file each;
``down`` stops them. A pid file is trusted only if that pid still runs ``updater.lab.bmc`` for this lab.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from updater.lab.errors import LabError
from updater.lab.layout import BMC_PORT, LabLayout, node_name

BMC_MODULE = "updater.lab.bmc"


def available() -> bool:
    """Whether the BMC server can be run as ``python -m updater.lab.bmc``."""
    try:
        return importlib.util.find_spec(f"{BMC_MODULE}.__main__") is not None
    except ImportError:
        return False


def _pid_file(layout: LabLayout, number: int) -> Path:
    return layout.state_dir / "bmc" / f"{node_name(number)}.pid"


def _pid(layout: LabLayout, number: int) -> int | None:
    try:
        pid = int(_pid_file(layout, number).read_text(encoding="ascii").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    if BMC_MODULE.encode() in cmdline and str(layout.state_dir).encode() in b" ".join(cmdline):
        return pid
    return None


def state(layout: LabLayout, number: int) -> str:
    return "running" if _pid(layout, number) is not None else "stopped"


def _argv(layout: LabLayout, number: int, user: str, password_file: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        BMC_MODULE,
        "--address",
        layout.bmc_address(number),
        "--port",
        str(BMC_PORT),
        "--user",
        user,
        "--password-file",
        str(password_file),
        "--lxc-path",
        str(layout.lxc_path),
        "--container",
        layout.container(node_name(number)),
        "--lab-dir",
        str(layout.state_dir),
    ]


def ensure(layout: LabLayout, nodes: int, user: str, password: str) -> bool:
    """Start the BMCs that are not running; True if any was started."""
    if not available():
        return False
    bmc_dir = layout.state_dir / "bmc"
    bmc_dir.mkdir(parents=True, exist_ok=True)
    password_file = bmc_dir / "password"
    if not password_file.exists():
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(password)
    started = []
    for number in range(1, nodes + 1):
        if _pid(layout, number) is not None:
            continue
        log = open(bmc_dir / f"{node_name(number)}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            _argv(layout, number, user, password_file),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
        log.close()
        _pid_file(layout, number).write_text(f"{proc.pid}\n", encoding="ascii")
        started.append((number, proc))
    for number, proc in started:
        _wait_listening(layout, number, proc)
    return bool(started)


def _wait_listening(
    layout: LabLayout, number: int, proc: subprocess.Popen[bytes], timeout: float = 15
) -> None:
    """Until the BMC's UDP port is bound (an RMCP ping would need the protocol; binding is enough here)."""
    deadline = time.monotonic() + timeout
    address = layout.bmc_address(number)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = layout.state_dir / "bmc" / f"{node_name(number)}.log"
            tail = log.read_text(encoding="utf-8", errors="replace")[-1500:] if log.exists() else ""
            raise LabError(f"BMC of {node_name(number)} exited (code {proc.returncode}): {tail}")
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((address, BMC_PORT))
        except OSError:
            return  # taken: the BMC is listening
        finally:
            probe.close()
        time.sleep(0.1)
    raise LabError(f"BMC of {node_name(number)} did not bind {address}:{BMC_PORT} within {timeout:.0f}s")


def stop_all(layout: LabLayout) -> None:
    bmc_dir = layout.state_dir / "bmc"
    for pid_file in sorted(bmc_dir.glob("node*.pid")) if bmc_dir.is_dir() else []:
        number = int(pid_file.stem.removeprefix("node"))
        pid = _pid(layout, number)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
