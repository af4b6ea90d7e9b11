"""The per-node run from the target release's collection: a child ``ansible-playbook`` whose output is
streamed and kept, stopped with its whole process group when the process that started it goes away.
Behind the ``corral.cloud.release_playbook`` action.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


# --- the per-node run from the target release's collection --------------------------------------------------
@dataclass(frozen=True)
class ChildRun:
    returncode: int
    log: Path
    tail: tuple[str, ...]
    orphaned: bool  # the controller's ansible-playbook went away and the run was stopped


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when the process that started it dies, ``kill -9`` included
    (Linux ``PR_SET_PDEATHSIG``), so no child of a killed controller or worker goes on alone."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def run_release_playbook(
    argv: Sequence[str],
    *,
    collections_paths: Sequence[str | Path],
    log: Path,
    on_line: Callable[[str], None],
    env: Mapping[str, str] | None = None,
    tail_lines: int = 40,
) -> ChildRun:
    """Run ``argv`` (an ``ansible-playbook`` command) with ``collections_paths`` (the target release's
    collections first) as its collection path, streaming every line to ``on_line`` and ``log``.

    The run is stopped (SIGTERM to its process group, SIGKILL after 10 s) as soon as this process's parent
    goes away: when the operator's ``ansible-playbook`` is killed, its per-node run does not go on alone. When
    this process itself is killed (``kill -9`` of the operator's whole process group), the run gets SIGTERM
    from the kernel (:func:`die_with_parent`). Any worker it left finishing a task is fenced off by the next
    run's newer token.
    """
    environment = dict(os.environ if env is None else env)
    environment["ANSIBLE_COLLECTIONS_PATH"] = ":".join(str(path) for path in collections_paths if str(path))
    log.parent.mkdir(parents=True, exist_ok=True)
    parent = os.getppid()
    tail: list[str] = []
    orphaned = False
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
            text=True,
            bufsize=1,
            preexec_fn=die_with_parent,  # noqa: PLW1509 (a single prctl call, no locks taken)
        )
        assert process.stdout is not None  # noqa: S101 (stdout=PIPE)
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while True:
                if os.getppid() != parent:
                    orphaned = True
                    _stop(process)
                    break
                if not selector.select(timeout=1.0):
                    continue
                line = process.stdout.readline()
                if not line:
                    break
                line = line.rstrip("\n")
                out.write(line + "\n")
                out.flush()
                tail = [*tail[-(tail_lines - 1) :], line]
                on_line(line)
        returncode = process.wait()
    return ChildRun(returncode, log, tuple(tail), orphaned)


def _stop(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
