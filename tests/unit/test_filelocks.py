"""The one file-lock helper of the services: flocks between threads and processes, naming their holder.

Real flocks on real files; the "other process" is a real child process where the kernel's per-process
behaviour matters (a holder that dies lets go).
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from updater.services import filelocks


def test_a_second_taker_is_refused_at_once_with_the_holders_name_until_it_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "start.lock"
    with filelocks.take(path, holder="olga is starting a rollout to 1.3.0"):
        assert filelocks.is_held(path)
        with pytest.raises(filelocks.Busy) as busy:
            filelocks.take(path, holder="vera is starting a rollout to 1.3.0")
        assert busy.value.holder == "olga is starting a rollout to 1.3.0"
    assert not filelocks.is_held(path)
    assert path.read_bytes() == b""  # nobody holds it: no stale name left to mislead a reader
    with filelocks.take(path, holder="vera"):
        assert path.read_text() == "vera"
    assert path.exists()  # left in place: unlinking would race a process that has just opened it


def test_two_threads_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "start.lock"
    results: list[str] = []
    with filelocks.take(path, holder="main thread"):

        def contender() -> None:
            try:
                filelocks.take(path).release()
                results.append("took it")
            except filelocks.Busy as busy:
                results.append(f"busy: {busy.holder}")

        thread = threading.Thread(target=contender)
        thread.start()
        thread.join()
    assert results == ["busy: main thread"]


def test_a_waiting_taker_gets_the_lock_when_the_holder_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "fence.lock"
    order: list[str] = []
    first = filelocks.take(path, wait=True)
    waiter_started = threading.Event()

    def waiter() -> None:
        waiter_started.set()
        with filelocks.take(path, wait=True):
            order.append("second")

    thread = threading.Thread(target=waiter)
    thread.start()
    waiter_started.wait()
    thread.join(timeout=0.3)
    assert thread.is_alive()  # still waiting: the first holder has not let go
    order.append("first")
    first.release()
    thread.join(timeout=10)
    assert order == ["first", "second"]


def test_a_holder_that_dies_lets_go_and_its_name_stays_for_nobody(tmp_path: Path) -> None:
    path = tmp_path / "download.lock"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib; from updater.services import filelocks; "
            f"held = filelocks.take(pathlib.Path({str(path)!r}), holder='4242'); print('held', flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "held\n"
        assert filelocks.is_held(path)
        with pytest.raises(filelocks.Busy, match="held by 4242"):
            filelocks.take(path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not filelocks.is_held(path)
    with filelocks.take(path, holder=str(os.getpid())):
        assert path.read_text() == str(os.getpid())


def test_a_probe_sees_a_holder_and_never_mistakes_another_probe_for_one(tmp_path: Path) -> None:
    path = tmp_path / "download.lock"
    assert not filelocks.is_held(path)  # no file: nobody
    assert not path.exists()  # and the probe did not create one
    with filelocks.take(path):
        assert filelocks.is_held(path)
        assert filelocks.is_held(path)  # the first probe let go of its shared flock at once
    with path.open("rb") as prober:
        fcntl.flock(prober.fileno(), fcntl.LOCK_SH)  # another probe, in the middle of its look
        assert not filelocks.is_held(path)


def test_a_created_lock_appears_whole_and_flocked_and_an_existing_one_is_never_replaced(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lock.json"
    handle = filelocks.create_locked(path, b'{"import_id": "imp-1"}')
    try:
        assert path.read_bytes() == b'{"import_id": "imp-1"}'
        assert filelocks.is_held(path)
        with path.open("rb") as other:
            assert not filelocks.try_lock(other)
        with pytest.raises(FileExistsError):
            filelocks.create_locked(path, b'{"import_id": "imp-2"}')
        filelocks.rewrite(handle, b'{"import_id": "imp-1", "phase": "queued"}')
        assert path.read_bytes() == b'{"import_id": "imp-1", "phase": "queued"}'
        assert [p.name for p in tmp_path.iterdir()] == ["lock.json"]  # no private copy left
    finally:
        handle.close()
    with path.open("rb") as other:
        assert filelocks.try_lock(other)  # its holder closed it: anyone may judge it now
