"""Drive probe clients on a fixed interval and record every operation (DESIGN.md §6 definitions).

Each client runs in its own thread. One *operation* may take several *attempts*: a retryable error
(connection refused, timeout, a lost ZooKeeper connection) is retried until the operation's deadline,
and the retries are counted; a non-retryable error (the service answered with wrong data) fails the
operation at once. An operation that has not succeeded by its deadline is a failure too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from updater.domain.availability import DEFAULT_DEADLINE_S, Operation, Report, build_report

Clock = Callable[[], float]


class DataError(Exception):
    """The service answered, but wrongly (e.g. an object read back differs): never retried."""


class ProbeClient(Protocol):
    """One service as the probe uses it."""

    name: str

    def setup(self) -> None:
        """Connect and prepare (e.g. write the objects later read back); errors here abort the probe."""

    def attempt(self, timeout: float) -> None:
        """One attempt of one operation, finishing within `timeout` seconds; raises on error."""

    def close(self) -> None:
        """Release connections."""


def run_operation(
    client: ProbeClient,
    deadline_s: float = DEFAULT_DEADLINE_S,
    retry_delay_s: float = 0.05,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Operation:
    started = clock()
    expires = started + deadline_s
    retries = 0
    while True:
        remaining = expires - clock()
        try:
            client.attempt(timeout=max(remaining, 0.001))
        except DataError as exc:
            return Operation(client.name, started, clock(), ok=False, retries=retries, error=_describe(exc))
        except Exception as exc:  # any other error is a retryable fault by definition
            now = clock()
            if now + retry_delay_s >= expires:
                error = f"no success within the {deadline_s:g} s deadline; last error: {_describe(exc)}"
                return Operation(client.name, started, now, ok=False, retries=retries, error=error)
            retries += 1
            sleep(retry_delay_s)
            continue
        finished = clock()
        if finished > expires:
            error = f"succeeded after the {deadline_s:g} s deadline ({finished - started:.2f} s)"
            return Operation(client.name, started, finished, ok=False, retries=retries, error=error)
        return Operation(client.name, started, finished, ok=True, retries=retries)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


class Probe:
    """Run clients until stopped; `report()` judges what was recorded."""

    def __init__(
        self,
        clients: Sequence[ProbeClient],
        interval_s: float = 0.1,
        deadline_s: float = DEFAULT_DEADLINE_S,
        clock: Clock = time.monotonic,
    ) -> None:
        if not clients:
            raise ValueError("the probe needs at least one service client")
        names = [c.name for c in clients]
        if len(set(names)) != len(names):
            raise ValueError(f"probe client names must be unique, got {names}")
        self.clients = list(clients)
        self.interval_s = interval_s
        self.deadline_s = deadline_s
        self.clock = clock
        self.operations: list[Operation] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = 0.0
        self.started_at_unix: float | None = None
        self.finished = 0.0

    def start(self) -> None:
        for client in self.clients:
            client.setup()
        self.started = self.clock()
        self.started_at_unix = time.time()
        for client in self.clients:
            thread = threading.Thread(
                target=self._loop, args=(client,), name=f"probe-{client.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> Report:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.deadline_s + 5)
        self.finished = self.clock()
        for client in self.clients:
            client.close()
        return self.report()

    def report(self) -> Report:
        with self._lock:
            ops = list(self.operations)
        end = self.finished or self.clock()
        names = [c.name for c in self.clients]
        return build_report(ops, self.started, end, services=names, started_at_unix=self.started_at_unix)

    def _loop(self, client: ProbeClient) -> None:
        next_at = self.clock()
        while not self._stop.is_set():
            op = run_operation(client, self.deadline_s, clock=self.clock)
            with self._lock:
                self.operations.append(op)
            next_at = max(next_at + self.interval_s, self.clock())
            self._stop.wait(max(0.0, next_at - self.clock()))
