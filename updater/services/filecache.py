"""Results computed from files, kept until those files change: the Overview's inventory (an
``ansible-inventory`` run, ≈ 0.6 s) and its verified license (signature checks), read on every status request.

A result is kept with the **fingerprint** of the files it was computed from: every file's path and SHA-256,
and which of them are missing. Content, not ``mtime``: a file rewritten twice within one timestamp tick
(the kernel's file clock is coarse, a few milliseconds) with the same size would keep its ``mtime``, size and
inode, and the stale result would be served until the next change. Hashing the few kilobytes of an
inventory or a trust directory costs tens of microseconds; the results it saves cost hundreds of
milliseconds.

A result may also carry the moments it is valid between (a license is valid through its ``expires`` day, a
keyring until its ``expires`` instant): outside them it is computed again, so an expiry is seen when it
comes, without any file changing. Failures are never kept: a source that cannot be read is read again on the
next request, and the caller reports the error each time.

One :class:`FileMemo` per kind of result, per process; it is safe to share between threads, and when many
threads miss at once only one computes (the others wait for its result instead of starting the same work).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

# A fingerprint: for each path, its SHA-256 (a file), "dir" plus its sorted entries (a directory walked), or
# None (missing or unreadable).
Fingerprint = tuple[tuple[str, str | None], ...]

MAX_FILE_BYTES = 16 * 1024 * 1024  # a bigger file is stamped by its metadata only (no inventory is this big)


def _file_stamp(path: Path) -> str | None:
    try:
        info = path.stat()
        if info.st_size > MAX_FILE_BYTES:
            return f"stat:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def fingerprint(paths: Iterable[Path], *, trees: Iterable[Path] = ()) -> Fingerprint:
    """The fingerprint of ``paths`` (files) and of every file under ``trees`` (directories, walked; a tree
    that is a file is stamped as one; a missing tree counts, so its creation is a change)."""
    stamps: list[tuple[str, str | None]] = [(str(path), _file_stamp(path)) for path in paths]
    for tree in trees:
        if tree.is_file():
            stamps.append((str(tree), _file_stamp(tree)))
            continue
        if not tree.is_dir():
            stamps.append((str(tree), None))
            continue
        for directory, subdirs, files in os.walk(tree):
            subdirs.sort()
            stamps.append((directory, "dir:" + "/".join(sorted(subdirs + files))))
            for name in sorted(files):
                path = Path(directory, name)
                stamps.append((str(path), _file_stamp(path)))
    return tuple(stamps)


@dataclass(frozen=True)
class Kept(Generic[T]):
    """A computed value and the time it holds for: ``[valid_from, valid_until)`` (None: unbounded)."""

    value: T
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def holds_at(self, now: datetime | None) -> bool:
        if now is None:
            return True
        if self.valid_from is not None and now < self.valid_from:
            return False
        return self.valid_until is None or now < self.valid_until


@dataclass(frozen=True)
class _Entry(Generic[T]):
    stamp: Fingerprint
    kept: Kept[T]


class FileMemo(Generic[T]):
    """Keeps, per key, the last result computed from files, while their fingerprint is unchanged and the
    result's validity covers ``now``. At most ``size`` keys (the least recently used goes)."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, _Entry[T]] = OrderedDict()
        self._lock = threading.Lock()  # guards _entries
        self._computing = threading.Lock()  # one computation at a time: concurrent misses wait for it
        self.computed = 0  # how many times a result was computed (not taken from the memo)

    def _lookup(self, key: Hashable, stamp: Fingerprint, now: datetime | None) -> Kept[T] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.stamp != stamp or not entry.kept.holds_at(now):
                return None
            self._entries.move_to_end(key)
            return entry.kept

    def get(
        self,
        key: Hashable,
        stamp: Callable[[], Fingerprint],
        compute: Callable[[], Kept[T]],
        *,
        now: datetime | None = None,
    ) -> T:
        """The value for ``key``: kept if ``stamp()`` is what it was computed under and it holds at ``now``,
        else ``compute()`` (whose exceptions pass through and keep nothing)."""
        before = stamp()
        kept = self._lookup(key, before, now)
        if kept is not None:
            return kept.value
        with self._computing:
            before = stamp()  # another thread may have computed it while this one waited
            kept = self._lookup(key, before, now)
            if kept is not None:
                return kept.value
            kept = compute()
            self.computed += 1
            # Stamped before computing: a file changed during the computation leaves a stamp that no longer
            # matches, so the next call computes again rather than keeping a result of the old content.
            with self._lock:
                self._entries[key] = _Entry(before, kept)
                self._entries.move_to_end(key)
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
            return kept.value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
