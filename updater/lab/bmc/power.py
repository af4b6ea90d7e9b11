"""Power backends a virtual BMC drives: an LXC lab node, or a plain process (for tests).

A backend's state lives outside the BMC process (LXC's own state, a pid file), so a BMC that restarts sees
the node as it is, and a BMC that stops leaves the node running, like a real BMC reset. Failures raise
:class:`PowerError`, which carries the IPMI completion code the BMC answers with.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from updater.lab.bmc.ipmi import POWER_CYCLE_OFF_SECONDS, CompletionCode, IpmiError

# lxc-start -d returns once the container's init runs; lxc-stop -k takes ~0.6 s (DESIGN.md §10).
LXC_TOOL_TIMEOUT_SECONDS = 30.0
_LXC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_LXC_STATE = re.compile(r"^State:\s+([A-Z]+)\s*$", re.MULTILINE)
LXC_STATES = frozenset(
    {"STOPPED", "STARTING", "RUNNING", "STOPPING", "ABORTING", "FREEZING", "FROZEN", "THAWED"}
)


class PowerError(IpmiError):
    """The backend could not read or change the node's power."""


@runtime_checkable
class PowerControl(Protocol):
    """A node's power, as its BMC sees it. Every method may raise :class:`PowerError`."""

    def is_on(self) -> bool: ...

    def power_on(self) -> None:
        """Start the node; a no-op if it is on."""

    def power_off(self) -> None:
        """Cut the power (hard); a no-op if it is off."""

    def power_cycle(self) -> None:
        """Hard off, at least a second off, on."""

    def reset(self) -> None:
        """Hard reset: off and on at once."""

    def shutdown(self) -> None:
        """Ask the node's OS to shut down cleanly (ACPI soft-off); returns without waiting."""


def parse_lxc_state(output: str) -> str:
    """The state from ``lxc-info -s`` output (``State:          RUNNING``)."""
    match = _LXC_STATE.search(output)
    if match is None or match.group(1) not in LXC_STATES:
        raise PowerError(CompletionCode.UNSPECIFIED_ERROR, f"unexpected lxc-info output: {output.strip()!r}")
    return match.group(1)


def lxc_state_is_on(state: str) -> bool:
    """Anything but STOPPED has a running init (a frozen node is on, as a hung server is)."""
    return state != "STOPPED"


class LxcPower:
    """A privileged LXC system container as a node: power on = lxc-start, hard off = lxc-stop -k."""

    def __init__(
        self, lxcpath: Path, name: str, *, cycle_off_seconds: float = POWER_CYCLE_OFF_SECONDS
    ) -> None:
        if not lxcpath.is_absolute():
            raise ValueError(f"lxc path {str(lxcpath)!r} must be absolute (lxc tools misbehave otherwise)")
        if not _LXC_NAME.fullmatch(name):
            raise ValueError(f"container name {name!r}: letters, digits, '.', '_' or '-' only")
        self.lxcpath = lxcpath
        self.name = name
        self.cycle_off_seconds = cycle_off_seconds

    def __repr__(self) -> str:
        return f"LxcPower({str(self.lxcpath)!r}, {self.name!r})"

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [tool, "-P", str(self.lxcpath), "-n", self.name, *args]
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=LXC_TOOL_TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            raise PowerError(
                CompletionCode.TIMEOUT, f"{' '.join(argv)} did not finish in {LXC_TOOL_TIMEOUT_SECONDS:.0f}s"
            ) from None
        except OSError as exc:
            raise PowerError(CompletionCode.UNSPECIFIED_ERROR, f"cannot run {tool}: {exc}") from None

    def _check(self, tool: str, *args: str) -> None:
        result = self._run(tool, *args)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip() or "no output"
            raise PowerError(
                CompletionCode.UNSPECIFIED_ERROR, f"{tool} {self.name} failed ({result.returncode}): {detail}"
            )

    def state(self) -> str:
        result = self._run("lxc-info", "-s")
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip() or "no output"
            raise PowerError(CompletionCode.UNSPECIFIED_ERROR, f"lxc-info {self.name} failed: {detail}")
        return parse_lxc_state(result.stdout)

    def is_on(self) -> bool:
        return lxc_state_is_on(self.state())

    def power_on(self) -> None:
        if not self.is_on():
            self._check("lxc-start", "-d")

    def power_off(self) -> None:
        if self.is_on():
            try:
                self._check("lxc-stop", "-k")
            except PowerError:
                if self.is_on():  # it may have stopped by itself meanwhile: then the request is met
                    raise

    def power_cycle(self) -> None:
        self.power_off()
        time.sleep(self.cycle_off_seconds)
        self.power_on()

    def reset(self) -> None:
        self.power_off()
        self.power_on()

    def shutdown(self) -> None:
        if self.is_on():
            # Without -k lxc-stop asks init to halt (systemd: SIGRTMIN+3); --nowait leaves it to finish.
            self._check("lxc-stop", "--nowait")


def _process_start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) process in clock ticks, or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may contain spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _live_group_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that have not exited (zombies have: they only wait to be reaped)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


class SubprocessPower:
    """A plain process group as a node (power on = start ``argv`` in a new session, hard off = SIGKILL).

    Its "power state" is a pid file holding the pid and the process start time, so a pid reused by another
    process never counts as the node. Used where a real container is not needed to exercise the BMC.
    """

    def __init__(
        self,
        argv: Sequence[str],
        pidfile: Path,
        *,
        cycle_off_seconds: float = POWER_CYCLE_OFF_SECONDS,
        kill_timeout_seconds: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not argv:
            raise ValueError("the node's command must not be empty")
        if not pidfile.is_absolute():
            raise ValueError(f"node pid file {str(pidfile)!r} must be absolute")
        self.argv = list(argv)
        self.pidfile = pidfile
        self.cycle_off_seconds = cycle_off_seconds
        self.kill_timeout_seconds = kill_timeout_seconds
        self._sleep = sleep  # the off interval of a power cycle (a test's, to see the node off during it)
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def __repr__(self) -> str:
        return f"SubprocessPower({self.argv!r}, {str(self.pidfile)!r})"

    def _reap(self) -> None:
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[pid]

    def pid(self) -> int | None:
        """The node's process (group leader) if it is running."""
        self._reap()
        try:
            pid_text, start_text = self.pidfile.read_text(encoding="ascii").split()
            pid, start = int(pid_text), int(start_text)
        except FileNotFoundError:
            return None
        except ValueError:
            raise PowerError(
                CompletionCode.UNSPECIFIED_ERROR, f"{self.pidfile} is not '<pid> <start time>'"
            ) from None
        return pid if _process_start_time(pid) == start else None

    def is_on(self) -> bool:
        return self.pid() is not None

    def power_on(self) -> None:
        if self.is_on():
            return
        try:
            child = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise PowerError(
                CompletionCode.UNSPECIFIED_ERROR, f"cannot start {self.argv[0]}: {exc}"
            ) from None
        self._children[child.pid] = child
        start = _process_start_time(child.pid)
        if start is None:
            child.wait()
            raise PowerError(
                CompletionCode.UNSPECIFIED_ERROR, f"{self.argv[0]} exited at once (code {child.returncode})"
            )
        tmp = self.pidfile.with_name(f".{self.pidfile.name}.tmp")
        tmp.write_text(f"{child.pid} {start}\n", encoding="ascii")
        tmp.replace(self.pidfile)

    def power_off(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        # SIGKILL is delivered to each member on its own: the leader may be gone while another member has
        # yet to run to its exit. The power is off once no member is left, not once the leader is.
        deadline = time.monotonic() + self.kill_timeout_seconds
        while self.pid() is not None or _live_group_members(pid):
            if time.monotonic() > deadline:
                raise PowerError(CompletionCode.TIMEOUT, f"process group {pid} survived SIGKILL")
            time.sleep(0.01)
        self.pidfile.unlink(missing_ok=True)

    def power_cycle(self) -> None:
        self.power_off()
        self._sleep(self.cycle_off_seconds)
        self.power_on()

    def reset(self) -> None:
        self.power_off()
        self.power_on()

    def shutdown(self) -> None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
