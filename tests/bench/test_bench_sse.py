"""50 viewers following one rollout's live output over Server-Sent Events, through the real service:
``corral-updater web`` (gunicorn over HTTPS, its default worker processes and threads) on 127.0.0.1.

A writer appends log lines to the rollout in the store (as the rollout task does) at a steady rate, then ends
the rollout. Each viewer is a thread that follows ``/api/v1/rollouts/<id>/events`` like a browser's
``EventSource``: it reconnects after the server's ``retry`` with ``Last-Event-ID`` until the ``end`` event.
At most ``max_streams`` streams are held open (the rest poll), so while the viewers watch, a client reading
``/api/v1/status`` is measured too.

Smoke size (default): 200 lines at 50 lines/s. Full size (CORRAL_BENCH_SIZE=full): 2000 lines at 100/s.
Printed: delivery latency (append to receipt) p50/p99/max over every line and viewer, how long the last
viewer took to see the end, reconnects, and the status client's p50/p99 meanwhile. Asserted: every viewer got
every line once, in order, and the end; never a time.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import cast

import pytest
import requests
from pytest_benchmark.fixture import BenchmarkFixture

from tests.support.stats import percentile
from tests.support.web_service import WebService, running_web
from updater.config import load_config
from updater.domain.states import RolloutState
from updater.store import queries as q
from updater.store.db import make_engine, session_factory, transaction
from updater.store.models import ReleaseSource
from updater.web.events import StreamSettings

FULL = os.environ.get("CORRAL_BENCH_SIZE") == "full"
VIEWERS = 50
LINES = 2000 if FULL else 200
LINES_PER_SECOND = 100 if FULL else 50
BATCH = 5


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebService]:
    inventory = {"nodes": {"hosts": ["node1", "node2", "node3"]}, "_meta": {"hostvars": {}}}
    with running_web(tmp_path_factory.mktemp("bench-sse"), inventory) as web:
        yield web


@dataclass
class Viewer:
    received: dict[int, float] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    ended_at: float | None = None
    connections: int = 0
    errors: list[str] = field(default_factory=list)


def _follow(service: WebService, rollout_id: str, viewer: Viewer, start: threading.Barrier) -> None:
    """What a browser's EventSource does: read events, reconnect after `retry` with Last-Event-ID."""
    session = requests.Session()
    headers = {"Authorization": f"Bearer {service.token}", "Accept": "text/event-stream"}
    last_id: str | None = None
    retry = 2.0
    start.wait()
    while viewer.ended_at is None and len(viewer.errors) < 5:
        viewer.connections += 1
        sent = {**headers, **({"Last-Event-ID": last_id} if last_id is not None else {})}
        try:
            with session.get(
                f"{service.base}/api/v1/rollouts/{rollout_id}/events",
                headers=sent,
                stream=True,
                timeout=60,
                verify=service.ca,
            ) as answer:
                if answer.status_code != 200:
                    viewer.errors.append(f"HTTP {answer.status_code}")
                    continue
                kind, data = "message", ""
                for raw in answer.iter_lines(decode_unicode=True):
                    line = cast(str, raw)
                    if line.startswith("retry: "):
                        retry = int(line[7:]) / 1000
                    elif line.startswith("id: "):
                        last_id = line[4:]
                    elif line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif line == "":
                        if kind == "log":
                            seq = json.loads(data)["seq"]
                            viewer.received[seq] = time.time()
                            viewer.order.append(seq)
                        elif kind == "end":
                            viewer.ended_at = time.time()
                            break
                        kind, data = "message", ""
        except requests.RequestException as error:
            viewer.errors.append(f"{type(error).__name__}: {error}")
        if viewer.ended_at is None:
            time.sleep(retry)
    session.close()


def _status_probe(
    service: WebService, stop: threading.Event, latencies: list[float], errors: list[str]
) -> None:
    session = requests.Session()
    while not stop.is_set():
        began = time.perf_counter()
        try:
            answer = session.get(
                f"{service.base}/api/v1/status",
                headers={"Authorization": f"Bearer {service.token}"},
                timeout=60,
                verify=service.ca,
            )
            if answer.status_code != 200:
                errors.append(f"HTTP {answer.status_code}")
        except requests.RequestException as error:
            errors.append(type(error).__name__)
        latencies.append(time.perf_counter() - began)
        time.sleep(0.1)
    session.close()


@dataclass
class Run:
    viewers: list[Viewer]
    appended: dict[int, float]
    finished_at: float
    status: list[float]
    status_errors: list[str]


def _run(service: WebService, rollout_id: str) -> Run:
    engine = make_engine(load_config(service.home).effective_database_url)
    sessions = session_factory(engine)
    with transaction(sessions) as db:
        release = q.find_release(db, "1.3.0") or q.add_release(
            db,
            version="1.3.0",
            channel="stable",
            release_date=date(2026, 11, 1),
            source=ReleaseSource.IMPORTED,
        )
        rollout = q.add_rollout(
            db, rollout_id=rollout_id, release=release, created_by="bench", plan={}, nodes=["node1", "node2"]
        )
        rollout.state, rollout.started_at = RolloutState.RUNNING, datetime.now(UTC)
    viewers = [Viewer() for _ in range(VIEWERS)]
    start = threading.Barrier(VIEWERS + 1)
    threads = [
        threading.Thread(target=_follow, args=(service, rollout_id, v, start), daemon=True) for v in viewers
    ]
    for thread in threads:
        thread.start()
    stop = threading.Event()
    status: list[float] = []
    status_errors: list[str] = []
    probe = threading.Thread(target=_status_probe, args=(service, stop, status, status_errors), daemon=True)
    start.wait()
    probe.start()
    time.sleep(1.0)  # every viewer connected (or polling)
    appended: dict[int, float] = {}
    for first in range(0, LINES, BATCH):
        with transaction(sessions) as db:
            lines = q.append_log(
                db,
                rollout_id,
                [("node1", "stdout", f"TASK [line {n}] ok") for n in range(first, first + BATCH)],
            )
        now = time.time()
        appended.update({line.seq: now for line in lines})
        time.sleep(BATCH / LINES_PER_SECOND)
    with transaction(sessions) as db:
        done = q.get_rollout(db, rollout_id)
        done.state, done.finished_at = RolloutState.SUCCEEDED, datetime.now(UTC)
    finished_at = time.time()
    for thread in threads:
        thread.join(timeout=120)
    stop.set()
    probe.join()
    engine.dispose()
    return Run(viewers, appended, finished_at, status, status_errors)


def test_bench_sse_with_50_viewers_of_one_rollout(benchmark: BenchmarkFixture, service: WebService) -> None:
    pedantic = cast(Callable[..., Run], benchmark.pedantic)  # pytest-benchmark is untyped
    run = pedantic(_run, args=(service, "bench-sse-1"), rounds=1, iterations=1)
    delays = [
        v.received[seq] - at for v in run.viewers for seq, at in run.appended.items() if seq in v.received
    ]
    last_end = max(v.ended_at or float("inf") for v in run.viewers) - run.finished_at
    reconnects = sum(v.connections - 1 for v in run.viewers)
    p50, p99 = percentile(delays, 0.50) * 1000, percentile(delays, 0.99) * 1000
    status_p50, status_p99 = percentile(run.status, 0.5) * 1000, percentile(run.status, 0.99) * 1000
    config = load_config(service.home)
    print(
        f"\nSSE, {VIEWERS} viewers of one rollout over HTTPS (gunicorn: {config.web_workers} processes x "
        f"{config.web_threads} threads, at most {StreamSettings().max_streams} streams held open per "
        f"process, the rest poll), {LINES} lines at {LINES_PER_SECOND}/s: "
        f"delivery p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
        f"max {max(delays) * 1000:.0f} ms; last viewer saw the end {last_end:.2f} s after it; "
        f"{reconnects} reconnects; meanwhile GET /api/v1/status p50 {status_p50:.1f} ms, "
        f"p99 {status_p99:.1f} ms ({len(run.status)} requests, "
        f"{len(run.status_errors)} errors)"
    )
    for viewer in run.viewers:
        assert viewer.errors == [], viewer.errors
        assert viewer.order == sorted(run.appended), "every line once, in order"
        assert viewer.ended_at is not None
    assert run.status_errors == []
