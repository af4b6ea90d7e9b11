"""File locks between the service's threads and processes: an ``flock`` on a lock file that names its holder.

Every lock in the services is one of these: one rollout start at a time (``rollouts.control.starting``), one
download per release (``channel.downloads``), one self-update per home, one boot pointer writer per node
(``cluster.boot.fenced``), one bundle import at a time (``bundles.imports``, whose lock is handed from the
web thread to the worker and judged stale when nobody holds its flock).

Why ``flock``: it belongs to the open file, so two threads of the web process exclude each other as two
processes do, and the kernel lets go of it when its holder dies: a killed worker never blocks the next one.
(fasteners' process locks are ``lockf`` record locks, which belong to the process: threads of one process
would not exclude each other. filelock's ``FileLock`` keeps its descriptor to itself, so it can neither
write the holder's name into the file nor ask whether anyone holds it; its reader-writer lock is SQLite.)

A lock file stays in place after use: unlinking it would race another process that has just opened it and
would then lock a file nobody else can find. Only the import lock is removed, by its holder, under its own
rules (:mod:`updater.services.bundles.imports`).
"""

from __future__ import annotations

import fcntl
import os
import secrets
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

HOLDER_MAX_BYTES = 512


class Busy(Exception):
    """Someone else holds the lock; ``holder`` is what they wrote in the file (empty if they have not yet)."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path, self.holder = path, holder
        super().__init__(f"{path} is held by {holder or 'another process'}")


class HeldLock:
    """An exclusive flock held on an open lock file; :meth:`release` (or the end of ``with``) lets go."""

    def __init__(self, path: Path, handle: BinaryIO, *, named: bool) -> None:
        self.path, self.handle, self._named = path, handle, named

    def release(self) -> None:
        if self.handle.closed:
            return
        try:
            if self._named:  # nobody will hold it: no name left behind to mislead a reader
                rewrite(self.handle, b"", durable=False)
        finally:
            self.handle.close()  # closing lets go of the flock

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


def take(path: Path, *, wait: bool = False, holder: str = "", mode: int = 0o600) -> HeldLock:
    """An exclusive flock on ``path`` (created with ``mode`` if missing), with ``holder`` written in it.

    Without ``wait`` a lock someone else holds raises :class:`Busy` at once, naming them; with ``wait`` it
    blocks until they let go.
    """
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode), "r+b")
    try:
        if wait:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        elif not try_lock(handle):
            raise Busy(path, read_holder(handle))
        if holder:
            rewrite(handle, holder.encode(), durable=False)
    except BaseException:
        handle.close()
        raise
    return HeldLock(path, handle, named=bool(holder))


def try_lock(handle: BinaryIO) -> bool:
    """Take an exclusive flock on the open ``handle`` if nobody else holds one; False if someone does."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def is_held(path: Path) -> bool:
    """Whether anybody holds an exclusive flock on ``path`` now (a missing file: nobody).

    The probe asks for a shared flock, so two probes never make each other (or a holder) fail; it is
    released at once.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def create_locked(path: Path, content: bytes) -> BinaryIO:
    """A new lock file at ``path`` that appears already flocked and holding ``content``; the returned open
    file keeps the flock. FileExistsError if ``path`` exists (someone else's lock, live or stale).

    Written and flocked under a private name first, then linked into place: a lock created empty and
    filled afterwards can be read in between (a holder with no name), and one seen before its flock can be
    judged stale and removed.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    handle = os.fdopen(os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "r+b")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        rewrite(handle, content)
        os.link(tmp, path)
    except BaseException:
        handle.close()
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return handle


def rewrite(handle: BinaryIO, content: bytes, *, durable: bool = True) -> None:
    """Replace what the lock file says, in place (the flock stays on the file).

    ``durable`` also writes it to disk: for a lock whose content outlives its holder's process (the import
    lock, read after a restart); a holder's name read only while it lives needs no disk write.
    """
    handle.seek(0)
    handle.truncate()
    handle.write(content)
    handle.flush()
    if durable:
        os.fsync(handle.fileno())


def read_holder(handle: BinaryIO) -> str:
    """What the holder wrote in the lock file (at most :data:`HOLDER_MAX_BYTES`), stripped."""
    return os.pread(handle.fileno(), HOLDER_MAX_BYTES, 0).decode("utf-8", "replace").strip()
