"""The BMC as a process: its command line, its pid file, and start/stop helpers for the lab.

    python -m updater.lab.bmc --address 127.77.X.Y [--port 623] --user U --password-file F \\
        (--lxcpath /abs/lxc --name NODE | --process-command CMD --process-pidfile /abs/node.pid) \\
        [--pidfile P] [--lab-dir D]

The password is read from a file only readable by its owner (never from the command line, never logged).
The process logs every power command and refused login to stderr, writes ``--pidfile`` once it listens, and
exits 0 on SIGTERM or SIGINT, removing its pid file.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import NoReturn

from updater.lab.bmc.ipmi import (
    POWER_CYCLE_OFF_SECONDS,
    DeviceIdentity,
    system_guid,
    validate_password,
    validate_user,
)
from updater.lab.bmc.power import LxcPower, PowerControl, SubprocessPower
from updater.lab.bmc.server import LOG, SESSION_IDLE_SECONDS, VirtualBmc

MODULE = "updater.lab.bmc"
DEFAULT_PORT = 623


class BmcConfigError(ValueError):
    """Bad arguments or a bad password file: the message says which and how to fix it."""


class BmcStartError(RuntimeError):
    """The BMC process did not come up (the message carries the end of its log)."""


@dataclass(frozen=True)
class BmcSettings:
    address: str
    port: int
    user: str
    password: str = field(repr=False)
    node: str
    power: PowerControl
    pidfile: Path | None
    lab_dir: Path | None
    session_idle_seconds: float = SESSION_IDLE_SECONDS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise BmcConfigError(message)


def _parser() -> _Parser:
    parser = _Parser(
        prog=f"python -m {MODULE}",
        allow_abbrev=False,  # or "--password x" would be taken for --password-file
        description="A virtual BMC speaking IPMI 2.0 (RMCP+/lanplus) on a loopback address for one lab node.",
    )
    parser.add_argument("--address", required=True, help="loopback address to listen on (127.77.X.Y)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="UDP port (default 623)")
    parser.add_argument("--user", required=True, help="the BMC's user name")
    parser.add_argument(
        "--password-file",
        type=Path,
        required=True,
        help="file holding the password (mode 0600, owned by you)",
    )
    parser.add_argument(
        "--lxcpath", "--lxc-path", type=Path, help="absolute LXC path of the node's container"
    )
    parser.add_argument("--name", "--container", help="the node's LXC container name")
    parser.add_argument("--process-command", help="instead of LXC: a command that is the 'node' (tests)")
    parser.add_argument("--process-pidfile", type=Path, help="with --process-command: the node's pid file")
    parser.add_argument(
        "--cycle-off-seconds",
        type=float,
        default=POWER_CYCLE_OFF_SECONDS,
        help="how long a power cycle keeps the node off (default 1, the IPMI minimum)",
    )
    parser.add_argument(
        "--session-idle-seconds",
        type=float,
        default=SESSION_IDLE_SECONDS,
        help="drop sessions idle this long (default 60)",
    )
    parser.add_argument("--pidfile", type=Path, help="write this process's pid here once listening")
    parser.add_argument("--lab-dir", type=Path, help="the lab's state directory (lets the lab find its BMCs)")
    return parser


def read_password_file(path: Path) -> str:
    """The password in ``path``, a regular file of ours no one else may read (one final newline dropped)."""
    try:
        info = path.lstat()
    except OSError as exc:
        raise BmcConfigError(f"password file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise BmcConfigError(f"password file {path} is not a regular file")
    if info.st_uid != os.geteuid():
        raise BmcConfigError(f"password file {path} belongs to uid {info.st_uid}, not to this user")
    if info.st_mode & 0o077:
        raise BmcConfigError(
            f"password file {path} has mode {stat.S_IMODE(info.st_mode):04o}: "
            f"others may read it; run chmod 600 {shlex.quote(str(path))}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BmcConfigError(f"password file {path} is not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    try:
        return validate_password(text)
    except ValueError as exc:
        raise BmcConfigError(f"password file {path}: {exc}") from None


def _power_backend(args: argparse.Namespace) -> tuple[PowerControl, str]:
    """The node's power backend and the node's name."""
    lxc = args.lxcpath is not None or args.name is not None
    process = args.process_command is not None or args.process_pidfile is not None
    if lxc == process:
        raise BmcConfigError(
            "give the node's power backend: either --lxcpath and --name, "
            "or --process-command and --process-pidfile"
        )
    if lxc:
        if args.lxcpath is None or args.name is None:
            raise BmcConfigError("--lxcpath and --name go together")
        try:
            return LxcPower(args.lxcpath, args.name, cycle_off_seconds=args.cycle_off_seconds), str(args.name)
        except ValueError as exc:
            raise BmcConfigError(str(exc)) from None
    if args.process_command is None or args.process_pidfile is None:
        raise BmcConfigError("--process-command and --process-pidfile go together")
    command = shlex.split(args.process_command)
    if not command:
        raise BmcConfigError("--process-command is empty")
    power = SubprocessPower(command, args.process_pidfile, cycle_off_seconds=args.cycle_off_seconds)
    return power, str(args.process_pidfile.stem)


def parse_args(argv: list[str]) -> BmcSettings:
    """Validate a BMC command line (also used by :func:`start_bmc_process` before it spawns anything)."""
    args = _parser().parse_args(argv)
    try:
        address = ipaddress.ip_address(args.address)
    except ValueError:
        raise BmcConfigError(f"--address {args.address!r} is not an IP address") from None
    if not address.is_loopback:
        raise BmcConfigError(
            f"--address {args.address}: a lab BMC listens on loopback only (127.0.0.0/8 or ::1)"
        )
    if not 1 <= args.port <= 65535:
        raise BmcConfigError(f"--port {args.port}: give a UDP port 1-65535")
    if not 1 <= args.session_idle_seconds <= 3600:
        raise BmcConfigError(f"--session-idle-seconds {args.session_idle_seconds}: give 1 to 3600 seconds")
    if not POWER_CYCLE_OFF_SECONDS <= args.cycle_off_seconds <= 60:
        raise BmcConfigError(f"--cycle-off-seconds {args.cycle_off_seconds}: give 1 to 60 seconds")
    try:
        user = validate_user(args.user)
    except ValueError as exc:
        raise BmcConfigError(str(exc)) from None
    for option, value in (("--pidfile", args.pidfile), ("--process-pidfile", args.process_pidfile)):
        if value is not None and not value.is_absolute():
            raise BmcConfigError(f"{option} {value}: give an absolute path")
    power, node = _power_backend(args)
    password = read_password_file(args.password_file)
    return BmcSettings(
        address=str(address),
        port=args.port,
        user=user,
        password=password,
        node=node,
        power=power,
        pidfile=args.pidfile,
        lab_dir=args.lab_dir,
        session_idle_seconds=args.session_idle_seconds,
    )


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _is_bmc_process(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    zombie = state[state.rfind(")") + 2 :].startswith("Z")
    return not zombie and MODULE.encode() in cmdline


def running_bmc_pid(pidfile: Path) -> int | None:
    """The pid in ``pidfile`` if that process is a running BMC (a stale or reused pid gives None)."""
    pid = _read_pid(pidfile)
    return pid if pid is not None and _is_bmc_process(pid) else None


def _write_pidfile(pidfile: Path) -> None:
    tmp = pidfile.with_name(f".{pidfile.name}.tmp")
    tmp.write_text(f"{os.getpid()}\n", encoding="ascii")
    tmp.replace(pidfile)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_args(sys.argv[1:] if argv is None else argv)
    except BmcConfigError as exc:
        print(f"{MODULE}: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s bmc[{settings.node}] %(levelname)s %(message)s",
    )
    if settings.pidfile is not None:
        other = running_bmc_pid(settings.pidfile)
        if other is not None and other != os.getpid():
            LOG.error("another BMC (pid %d) owns %s", other, settings.pidfile)
            return 1
    try:
        bmc = VirtualBmc(
            power=settings.power,
            address=settings.address,
            port=settings.port,
            users={settings.user: settings.password},
            guid=system_guid(settings.node),
            identity=DeviceIdentity(),
        )
    except OSError as exc:
        LOG.error("cannot listen on %s port %d/udp: %s", settings.address, settings.port, exc.strerror or exc)
        return 1
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        LOG.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()
        bmc.wake()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        if settings.pidfile is not None:
            _write_pidfile(settings.pidfile)
        LOG.info(
            "listening on %s port %d/udp for %r (user %s%s)",
            bmc.address,
            bmc.port,
            settings.power,
            settings.user,
            f", lab {settings.lab_dir}" if settings.lab_dir else "",
        )
        bmc.serve(stop, session_idle_seconds=settings.session_idle_seconds)
    finally:
        bmc.close()
        if settings.pidfile is not None and _read_pid(settings.pidfile) == os.getpid():
            settings.pidfile.unlink(missing_ok=True)
        LOG.info("stopped")
    return 0


# Children started here, kept so that stop_bmc_process can reap them (no zombies, no ResourceWarning).
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


def _log_tail(log_file: Path, size: int = 2000) -> str:
    try:
        return log_file.read_text(encoding="utf-8", errors="replace")[-size:].strip()
    except OSError:
        return ""


def start_bmc_process(
    *,
    address: str,
    user: str,
    password_file: Path,
    pidfile: Path,
    log_file: Path,
    lxcpath: Path | None = None,
    name: str | None = None,
    process_command: str | None = None,
    process_pidfile: Path | None = None,
    port: int = DEFAULT_PORT,
    lab_dir: Path | None = None,
    cycle_off_seconds: float | None = None,
    timeout: float = 10.0,
) -> int:
    """Start a detached BMC process and return its pid once it listens.

    Give either ``lxcpath`` + ``name`` (a lab node) or ``process_command`` + ``process_pidfile``. The process
    runs in its own session (it outlives the caller), appends its log to ``log_file`` and writes ``pidfile``
    when its socket is bound. Raises :class:`BmcConfigError` for bad arguments (nothing started) and
    :class:`BmcStartError` if the process fails or does not listen within ``timeout`` (nothing left behind).
    """
    argv = ["--address", address, "--port", str(port), "--user", user, "--password-file", str(password_file)]
    if lxcpath is not None:
        argv += ["--lxcpath", str(lxcpath)]
    if name is not None:
        argv += ["--name", name]
    if process_command is not None:
        argv += ["--process-command", process_command]
    if process_pidfile is not None:
        argv += ["--process-pidfile", str(process_pidfile)]
    if lab_dir is not None:
        argv += ["--lab-dir", str(lab_dir)]
    if cycle_off_seconds is not None:
        argv += ["--cycle-off-seconds", str(cycle_off_seconds)]
    argv += ["--pidfile", str(pidfile)]
    parse_args(argv)
    running = running_bmc_pid(pidfile)
    if running is not None:
        raise BmcStartError(f"a BMC is already running from {pidfile} (pid {running})")
    try:
        log = open(log_file, "ab")  # noqa: SIM115 - closed right after the child inherits it
    except OSError as exc:
        raise BmcStartError(f"cannot open the BMC log {log_file}: {exc.strerror}") from None
    with log:
        child = subprocess.Popen(
            [sys.executable, "-m", MODULE, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    _STARTED[child.pid] = child
    deadline = time.monotonic() + timeout
    while _read_pid(pidfile) != child.pid:
        if child.poll() is not None:
            del _STARTED[child.pid]
            raise BmcStartError(
                f"BMC on {address}:{port} exited with code {child.returncode}: {_log_tail(log_file)}"
            )
        if time.monotonic() > deadline:
            child.kill()
            child.wait()
            del _STARTED[child.pid]
            if _read_pid(pidfile) == child.pid:
                pidfile.unlink(missing_ok=True)
            raise BmcStartError(
                f"BMC on {address}:{port} did not listen within {timeout:.0f}s: {_log_tail(log_file)}"
            )
        time.sleep(0.02)
    return child.pid


def _gone(pid: int) -> bool:
    child = _STARTED.get(pid)
    if child is not None:
        if child.poll() is None:
            return False
        del _STARTED[pid]
        return True
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return not _is_bmc_process(pid)


def stop_bmc_process(pidfile: Path, *, timeout: float = 10.0) -> bool:
    """Stop the BMC whose pid is in ``pidfile`` (SIGTERM, then SIGKILL after ``timeout``).

    True if a BMC was running; False if none was (a stale pid file is removed). The node's power is not
    touched: like a real BMC reset, stopping the BMC leaves the node as it is.
    """
    pid = running_bmc_pid(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = False
    while not _gone(pid):
        if time.monotonic() > deadline:
            if killed:
                raise BmcStartError(f"BMC pid {pid} survived SIGKILL")
            LOG.warning("BMC pid %d ignored SIGTERM for %.0fs: killing it", pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + 5.0
        time.sleep(0.02)
    if _read_pid(pidfile) == pid:
        pidfile.unlink(missing_ok=True)
    return True
