"""Which process runs a rollout: an ephemeral znode that names its host and process, gone with its
ZooKeeper session; a recovering worker uses it to tell a dead run from a live one.

Every process a run's play starts carries the run's marker in its environment (``CORRAL_ROLLOUT_RUN=
<rollout id>:<host>:<pid>:<process start>`` of the process running it): ansible-runner's ``ansible-playbook``
(its own session, deaf to SIGHUP: killing the worker's process group does not reach it), its forks, their
SSH, the per-node ``ansible-playbook`` of ``release_playbook``. Not the probe: it only measures, dies with
the worker by its ``PR_SET_PDEATHSIG`` and writes its report on the way. Before a run of a rollout acts, it
kills every process of this host whose marker names that rollout and an owner that is no longer alive
(:func:`kill_stale_runs`), so no play of a dead owner is still running when the new owner begins. A stale
play on another host is fenced off by the newer token (DESIGN.md §7).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kazoo.exceptions import NodeExistsError, NoNodeError

from updater.services.cluster.lock import ClusterLock
from updater.services.rollouts.records import _rollout_child
from updater.services.rollouts.release import RolloutRunnerError


# --- the run's owner: an ephemeral znode, gone when the process running the rollout is ----------------------
@dataclass(frozen=True)
class RunOwner:
    host: str
    pid: int
    process_start: str  # /proc/<pid>/stat start time: a recycled pid is not the same process
    since: float

    def to_json(self) -> bytes:
        return json.dumps(
            {"host": self.host, "pid": self.pid, "process_start": self.process_start, "since": self.since}
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> RunOwner:
        data = json.loads(raw)
        return cls(str(data["host"]), int(data["pid"]), str(data["process_start"]), float(data["since"]))

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


class RunClaimed(RolloutRunnerError):
    """Another live process runs this rollout."""

    def __init__(self, rollout_id: str, owner: RunOwner | None) -> None:
        self.owner = owner
        who = owner.describe() if owner else "another process"
        super().__init__(f"rollout {rollout_id} is already being run by {who}")


def process_start(pid: int) -> str:
    """The start time of ``pid`` (clock ticks since boot) or ``""`` when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def claim_run(lock: ClusterLock, rollout_id: str, owner: RunOwner) -> None:
    """Become the one process running ``rollout_id``: an ephemeral znode tied to this ZooKeeper session."""
    path = _rollout_child(lock, rollout_id, "owner")
    lock.client.ensure_path(path.rsplit("/", 1)[0])
    try:
        lock.client.create(path, owner.to_json(), ephemeral=True)
    except NodeExistsError:
        raise RunClaimed(rollout_id, run_owner(lock, rollout_id)) from None


def run_owner(lock: ClusterLock, rollout_id: str) -> RunOwner | None:
    try:
        raw, _ = lock.client.get(_rollout_child(lock, rollout_id, "owner"))
    except NoNodeError:
        return None
    return RunOwner.from_json(raw)


def owner_is_dead_here(owner: RunOwner, host: str) -> bool:
    """True when ``owner`` ran on this host and its process is gone (its session has not expired yet)."""
    return owner.host == host and process_start(owner.pid) != owner.process_start


def drop_run_owner(lock: ClusterLock, rollout_id: str) -> None:
    with contextlib.suppress(NoNodeError):
        lock.client.delete(_rollout_child(lock, rollout_id, "owner"))


# --- the processes of a run: its marker, and the sweep of a dead owner's ------------------------------------
RUN_MARKER = "CORRAL_ROLLOUT_RUN"


def run_marker(rollout_id: str, owner: RunOwner) -> str:
    """The value of :data:`RUN_MARKER` every process of ``owner``'s run of ``rollout_id`` inherits."""
    return f"{rollout_id}:{owner.host}:{owner.pid}:{owner.process_start}"


def _marker_of(pid: int, proc: Path) -> str | None:
    try:
        environ = (proc / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or a kernel thread
        return None
    prefix = f"{RUN_MARKER}=".encode()
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def _processes(proc: Path) -> Iterator[int]:
    for entry in proc.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def stale_run_processes(rollout_id: str, host: str, proc: Path = Path("/proc")) -> list[int]:
    """Processes of this host left by a run of ``rollout_id`` whose owner (named in their marker) is gone."""
    stale = []
    for pid in _processes(proc):
        marker = _marker_of(pid, proc)
        if marker is None or pid == os.getpid():
            continue
        parts = marker.rsplit(":", 3)
        if len(parts) != 4 or parts[0] != rollout_id or parts[1] != host or not parts[2].isdigit():
            continue
        if process_start(int(parts[2])) != parts[3]:
            stale.append(pid)
    return stale


def kill_stale_runs(rollout_id: str, host: str, *, wait_seconds: float = 10.0) -> list[int]:
    """SIGKILL every process of a dead owner's run of ``rollout_id`` on this host, until none is left (a
    process forking meanwhile is found by the next sweep); returns the pids killed. Raises
    :class:`StaleRunSurvives` when one is still there after ``wait_seconds``."""
    killed: list[int] = []
    deadline = time.monotonic() + wait_seconds
    while True:
        stale = stale_run_processes(rollout_id, host)
        if not stale:
            return killed
        if time.monotonic() > deadline:
            raise StaleRunSurvives(rollout_id, stale)
        for pid in stale:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if pid not in killed:
                killed.append(pid)
        time.sleep(0.1)


class StaleRunSurvives(RolloutRunnerError):
    """A dead owner's process of the rollout could not be killed: the new run must not act beside it."""

    def __init__(self, rollout_id: str, pids: list[int]) -> None:
        self.pids = pids
        super().__init__(
            f"rollout {rollout_id}: processes of a dead run are still alive after SIGKILL "
            f"({', '.join(map(str, pids))}); the run does not start beside them"
        )
