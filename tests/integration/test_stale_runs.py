"""A crashed worker's play dies before its rollout is taken over (issue 19 item 1a).

A real process tree shaped like a run's: the worker starts an ``ansible-playbook`` stand-in in its own
session that ignores SIGHUP (as ansible-runner does), which starts a grandchild (a fork, an SSH, the per-node
play); every one of them inherits the run's marker. ``kill -9 -- -PGID`` of the worker's process group (the
fault run) leaves them running; the takeover's sweep (:func:`kill_stale_runs`) kills them all, and touches
neither a live owner's processes nor another rollout's.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from updater.services.rollouts.ownership import (
    RUN_MARKER,
    RunOwner,
    kill_stale_runs,
    process_start,
    run_marker,
    stale_run_processes,
)

ROLLOUT = "update-to-0.2.0-20261207T180000Z"
HOST = socket.gethostname()

# The worker: its marker names itself; its "ansible-playbook" runs in a new session, ignores SIGHUP and
# starts a grandchild; both inherit the marker. It writes their pids and waits to be killed.
WORKER = """
import os, signal, subprocess, sys, time
from updater.services.rollouts.ownership import RUN_MARKER, RunOwner, process_start, run_marker
me = RunOwner(sys.argv[2], os.getpid(), process_start(os.getpid()), time.time())
env = {**os.environ, RUN_MARKER: run_marker(sys.argv[1], me)}
play = subprocess.Popen(
    [sys.executable, "-c",
     "import signal, subprocess, sys, time; signal.signal(signal.SIGHUP, signal.SIG_IGN);"
     "child = subprocess.Popen(['sleep', '300']); print(child.pid, flush=True); time.sleep(300)"],
    env=env, start_new_session=True, stdout=subprocess.PIPE, text=True,
)
grandchild = play.stdout.readline().strip()
print(play.pid, grandchild, flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def _marked(marker: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "300"], env={**os.environ, RUN_MARKER: marker}, start_new_session=True)


def test_the_dead_workers_play_outlives_its_process_group_and_the_takeover_kills_it(tmp_path: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, ROLLOUT, HOST],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert worker.stdout is not None
    play, grandchild = (int(pid) for pid in worker.stdout.readline().split())
    # a live run of the same rollout (its owner, this test process, is alive) and a dead run of another one
    me = RunOwner(HOST, os.getpid(), process_start(os.getpid()), time.time())
    live = _marked(run_marker(ROLLOUT, me))
    other = _marked(f"update-to-0.3.0:{HOST}:{worker.pid}:{process_start(worker.pid)}")
    try:
        os.killpg(worker.pid, signal.SIGKILL)  # the fault run: kill -9 -- -PGID of the worker
        worker.wait(timeout=10)
        time.sleep(0.5)
        # what the issue saw: the play and its child go on without the worker
        assert _alive(play)
        assert _alive(grandchild)
        assert sorted(stale_run_processes(ROLLOUT, HOST)) == sorted([play, grandchild])
        started = time.monotonic()
        killed = kill_stale_runs(ROLLOUT, HOST)
        print(f"\nsweep killed {sorted(killed)} in {time.monotonic() - started:.2f} s")
        assert sorted(killed) == sorted([play, grandchild])
        deadline = time.monotonic() + 10
        while (_alive(play) or _alive(grandchild)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(play)
        assert not _alive(grandchild)
        assert stale_run_processes(ROLLOUT, HOST) == []
        assert live.poll() is None  # a live owner's run is not touched
        assert other.poll() is None  # nor another rollout's
    finally:
        for process in (live, other):
            process.kill()
            process.wait()
        for pid in (play, grandchild):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
