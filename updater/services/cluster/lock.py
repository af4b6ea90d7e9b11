"""The cluster update lock, its fencing token, and rollout progress, in ZooKeeper (DESIGN.md §7).

Layout under ``root`` (default ``/corral/update``)::

    lock                        JSON: rollout id, token, owner, time; absent when nobody holds it
    token                       the fencing counter: its znode *version* is the newest token issued
    rollouts/<id>/record        the rollout record (state, plan, order executed), JSON
    rollouts/<id>/nodes/<node>  per-node progress, JSON
    boot/<node>                 the node's boot pointer (one-shot and default image), JSON

Every acquisition, take-back, release and break bumps the ``token`` counter in the same ZooKeeper
transaction that changes the lock, so the counter's version is always the one valid token. Every
write that changes a node (progress, boot pointer, record) is a transaction of ``check(token,
version=<writer's token>)`` plus the write: a worker holding an older token is refused atomically,
with no read-then-write window.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, RolledBackError

from updater.domain.rollout import Rollout
from updater.domain.states import NodeProgress

DEFAULT_ROOT = "/corral/update"
_ATTEMPTS = 20
_T = TypeVar("_T")


class LockError(RuntimeError):
    """Base of the cluster lock errors."""


class LockHeld(LockError):
    """Another rollout holds the cluster update lock."""

    def __init__(self, holder: LockHolder) -> None:
        self.holder = holder
        super().__init__(
            f"the cluster update lock is held by rollout {holder.rollout_id} ({holder.owner}, since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(holder.acquired_at))}, "
            f"token {holder.token}); "
            f"wait for it to finish, or if it is dead break the lock with -e corral_lock_break={holder.token}"
        )


class StaleToken(LockError):
    """A write carried a fencing token older than the newest one: its writer no longer owns the cluster."""


class LockNotHeld(LockError):
    """The operation needs the lock, and the caller (or nobody) does not hold it as claimed."""


@dataclass(frozen=True)
class LockHolder:
    rollout_id: str
    token: int
    owner: str
    acquired_at: float

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "rollout_id": self.rollout_id,
                "token": self.token,
                "owner": self.owner,
                "acquired_at": self.acquired_at,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> LockHolder:
        data = json.loads(raw)
        return cls(
            str(data["rollout_id"]), int(data["token"]), str(data["owner"]), float(data["acquired_at"])
        )


def _failure(results: list[Any]) -> Exception | None:
    """The first real failure of a transaction (the others are reported as rolled back)."""
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, RolledBackError):
            return result
    return None


def _valid_name(kind: str, name: str) -> str:
    if not name or "/" in name or name in {".", ".."}:
        raise ValueError(f"invalid {kind} {name!r}: it must be non-empty and contain no '/'")
    return name


class ClusterLock:
    def __init__(
        self, client: KazooClient, root: str = DEFAULT_ROOT, clock: Callable[[], float] = time.time
    ) -> None:
        self.client = client
        self.root = root.rstrip("/")
        self.lock_path = f"{self.root}/lock"
        self.token_path = f"{self.root}/token"
        self._clock = clock

    # --- the lock --------------------------------------------------------------------------------
    def _counter_version(self) -> int:
        try:
            return int(self.client.get(self.token_path)[1].version)
        except NoNodeError:
            with contextlib.suppress(NodeExistsError):
                self.client.create(self.token_path, b"", makepath=True)
            return int(self.client.get(self.token_path)[1].version)

    def holder(self) -> LockHolder | None:
        try:
            raw, _ = self.client.get(self.lock_path)
        except NoNodeError:
            return None
        return LockHolder.from_json(raw)

    def current_token(self) -> int:
        """The newest token issued: the only one writes are accepted with."""
        return self._counter_version()

    def acquire(self, rollout_id: str, owner: str) -> LockHolder:
        """Take the lock for ``rollout_id`` with a new token, or take it back if it already holds it.

        Raises :class:`LockHeld`, naming the holder, when another rollout holds it.
        """
        _valid_name("rollout id", rollout_id)
        for _ in range(_ATTEMPTS):
            version = self._counter_version()
            try:
                raw, lock_stat = self.client.get(self.lock_path)
                current: LockHolder | None = LockHolder.from_json(raw)
            except NoNodeError:
                current, lock_stat = None, None
            if current is not None and current.rollout_id != rollout_id:
                raise LockHeld(current)
            holder = LockHolder(rollout_id, version + 1, owner, self._clock())
            transaction = self.client.transaction()
            transaction.set_data(self.token_path, b"", version=version)
            if lock_stat is None:
                transaction.create(self.lock_path, holder.to_json())
            else:
                transaction.set_data(self.lock_path, holder.to_json(), version=lock_stat.version)
            failure = _failure(transaction.commit())
            if failure is None:
                return holder
            if not isinstance(failure, BadVersionError | NodeExistsError | NoNodeError):
                raise failure
            # Someone else changed the counter or the lock between our reads and our commit: re-read.
        raise LockError(
            f"could not take the cluster update lock after {_ATTEMPTS} attempts (heavy contention)"
        )

    def _drop_lock(self, token: int, why: str) -> LockHolder:
        """Delete the lock held with ``token`` and bump the counter, atomically."""
        for _ in range(_ATTEMPTS):
            try:
                raw, lock_stat = self.client.get(self.lock_path)
            except NoNodeError:
                raise LockNotHeld(f"cannot {why}: nobody holds the cluster update lock") from None
            holder = LockHolder.from_json(raw)
            if holder.token != token:
                raise LockNotHeld(
                    f"cannot {why} with token {token}: the lock is held by rollout {holder.rollout_id} "
                    f"({holder.owner}) with token {holder.token}"
                )
            transaction = self.client.transaction()
            transaction.delete(self.lock_path, version=lock_stat.version)
            transaction.set_data(self.token_path, b"", version=token)
            failure = _failure(transaction.commit())
            if failure is None:
                return holder
            if not isinstance(failure, BadVersionError | NoNodeError):
                raise failure
        raise LockError(f"could not {why} after {_ATTEMPTS} attempts (heavy contention)")

    def release(self, rollout_id: str, token: int) -> None:
        """Release at the end of a rollout; needs the holder's current token."""
        holder = self.holder()
        if holder is not None and holder.rollout_id != rollout_id:
            raise LockNotHeld(
                f"rollout {rollout_id} cannot release a lock held by rollout {holder.rollout_id}"
            )
        self._drop_lock(token, f"release the lock of rollout {rollout_id}")

    def break_lock(self, token: int) -> LockHolder:
        """Remove a stale lock (``-e corral_lock_break=<token>``); the holder's token must be given."""
        return self._drop_lock(token, "break the lock")

    def check(self, token: int) -> None:
        newest = self.current_token()
        if token != newest:
            raise StaleToken(f"fencing token {token} is stale: token {newest} was issued since")

    # --- fenced writes ---------------------------------------------------------------------------
    def fenced_write(self, token: int, path: str, value: bytes) -> None:
        """Write ``value`` at ``path`` only if ``token`` is still the newest token, atomically.

        The node itself is created inside the fenced transaction, so a stale writer leaves nothing
        behind (only the parent path, which is structure, may be created outside it).
        """
        self.client.ensure_path(path.rsplit("/", 1)[0])
        for _ in range(_ATTEMPTS):
            exists = self.client.exists(path) is not None
            transaction = self.client.transaction()
            transaction.check(self.token_path, version=token)
            if exists:
                transaction.set_data(path, value)
            else:
                transaction.create(path, value)
            failure = _failure(transaction.commit())
            if failure is None:
                return
            if isinstance(failure, BadVersionError):
                newest = self.current_token()
                raise StaleToken(
                    f"write to {path} refused: fencing token {token} is stale (token {newest} was issued "
                    "since; another worker or rollout owns the cluster now)"
                ) from failure
            if isinstance(failure, NoNodeError) and self.client.exists(self.token_path) is None:
                raise LockNotHeld(f"write to {path} refused: no fencing token was ever issued") from failure
            if not isinstance(failure, NodeExistsError | NoNodeError):
                raise failure
            # The node appeared or vanished between our look and our commit: look again.
        raise LockError(f"could not write {path} after {_ATTEMPTS} attempts (heavy contention)")

    def _read_json(self, path: str) -> Any:
        try:
            raw, _ = self.client.get(path)
        except NoNodeError:
            return None
        return json.loads(raw) if raw else None

    def _rollout_path(self, rollout_id: str) -> str:
        return f"{self.root}/rollouts/{_valid_name('rollout id', rollout_id)}"

    def write_progress(self, token: int, rollout_id: str, node: str, progress: NodeProgress) -> None:
        path = f"{self._rollout_path(rollout_id)}/nodes/{_valid_name('node name', node)}"
        self.fenced_write(token, path, json.dumps(progress.to_dict()).encode())

    def read_progress(self, rollout_id: str) -> dict[str, NodeProgress]:
        base = f"{self._rollout_path(rollout_id)}/nodes"
        try:
            names = self.client.get_children(base)
        except NoNodeError:
            return {}
        records = {name: self._read_json(f"{base}/{name}") for name in names}
        return {name: NodeProgress.from_dict(data) for name, data in sorted(records.items()) if data}

    def write_rollout(self, token: int, rollout: Rollout) -> None:
        """The rollout's record (state, plan, order executed) and every node's progress."""
        self.fenced_write(
            token, f"{self._rollout_path(rollout.rollout_id)}/record", json.dumps(rollout.to_dict()).encode()
        )

    def update_rollout(
        self, token: int, rollout_id: str, change: Callable[[Rollout], _T], *, progress_of: str | None = None
    ) -> _T:
        """Read the rollout's record, apply ``change`` to it and write it back, fenced by ``token`` and by the
        record's version: the nodes of one batch move at the same time, and no move may overwrite another.
        When ``progress_of`` names a node, its progress record is written in the same transaction.

        ``change`` may raise (a refused transition): nothing is written then.
        """
        path = f"{self._rollout_path(rollout_id)}/record"
        for _ in range(_ATTEMPTS):
            try:
                raw, stat = self.client.get(path)
            except NoNodeError:
                raise LockError(f"rollout {rollout_id} has no record: it was never begun") from None
            rollout = Rollout.from_dict(json.loads(raw))
            result = change(rollout)
            transaction = self.client.transaction()
            transaction.check(self.token_path, version=token)
            transaction.set_data(path, json.dumps(rollout.to_dict()).encode(), version=stat.version)
            if progress_of is not None:
                self._add_progress_write(transaction, rollout_id, progress_of, rollout.nodes[progress_of])
            failure = _failure(transaction.commit())
            if failure is None:
                return result
            if isinstance(failure, BadVersionError) and self.current_token() != token:
                raise StaleToken(
                    f"update of rollout {rollout_id} refused: fencing token {token} is stale (token "
                    f"{self.current_token()} was issued since; another worker or rollout owns the cluster)"
                ) from failure
            if not isinstance(failure, BadVersionError | NodeExistsError | NoNodeError):
                raise failure
            # Another node of the batch moved between our read and our commit: read again and re-apply.
        raise LockError(
            f"could not update rollout {rollout_id} after {_ATTEMPTS} attempts (heavy contention)"
        )

    def _add_progress_write(
        self, transaction: Any, rollout_id: str, node: str, progress: NodeProgress
    ) -> None:
        path = f"{self._rollout_path(rollout_id)}/nodes/{_valid_name('node name', node)}"
        self.client.ensure_path(path.rsplit("/", 1)[0])
        value = json.dumps(progress.to_dict()).encode()
        if self.client.exists(path) is None:
            transaction.create(path, value)
        else:
            transaction.set_data(path, value)

    def read_rollout(self, rollout_id: str) -> Rollout | None:
        data = self._read_json(f"{self._rollout_path(rollout_id)}/record")
        return None if data is None else Rollout.from_dict(data)

    def set_boot_pointer(self, token: int, node: str, pointer: Mapping[str, Any]) -> None:
        """Record where ``node`` boots (e.g. ``{"once": image, "default": image}``), fenced."""
        self.fenced_write(
            token, f"{self.root}/boot/{_valid_name('node name', node)}", json.dumps(dict(pointer)).encode()
        )

    def boot_pointer(self, node: str) -> dict[str, Any] | None:
        data = self._read_json(f"{self.root}/boot/{_valid_name('node name', node)}")
        return None if data is None else dict(data)
