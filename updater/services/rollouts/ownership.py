"""Which process runs a rollout: an ephemeral znode that names its host and process, gone with its
ZooKeeper session; a recovering worker uses it to tell a dead run from a live one.
"""

from __future__ import annotations

import contextlib
import json
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
