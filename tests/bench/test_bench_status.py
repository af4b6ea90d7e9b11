"""``GET /api/v1/status`` under 50 concurrent clients, through the real service: ``corral-updater web``
(gunicorn over HTTPS, one process with threads, as deployed) on 127.0.0.1, API-token authenticated.

Each client is a thread with its own keep-alive HTTPS session that sends its requests back to back.
Smoke size (default): 40 requests per client. Full size (CORRAL_BENCH_SIZE=full): 400 per client.
Printed: p50, p99 and max latency, throughput and errors. The test asserts only that every answer is the
status document, never a time.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import pytest
import requests
from pytest_benchmark.fixture import BenchmarkFixture

from tests.support.stats import percentile
from tests.support.web_service import WebService, running_web

FULL = os.environ.get("CORRAL_BENCH_SIZE") == "full"
CLIENTS = 50
REQUESTS_PER_CLIENT = 400 if FULL else 40
NODES = 30
WEB_THREADS = 16  # corral-updater web: one gunicorn process with 16 threads


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebService]:
    hosts = [f"node{i:02d}" for i in range(1, NODES + 1)]
    hostvars = {h: {"corral_site": "site1", "corral_rack": f"rack{i % 3}"} for i, h in enumerate(hosts)}
    inventory = {"nodes": {"hosts": hosts}, "_meta": {"hostvars": hostvars}}
    with running_web(tmp_path_factory.mktemp("bench-status"), inventory) as web:
        yield web


@dataclass
class Load:
    latencies: list[float]
    errors: list[str]
    seconds: float = 0.0


def _client(service: WebService, load: Load, lock: threading.Lock, start: threading.Barrier) -> None:
    session = requests.Session()
    headers = {"Authorization": f"Bearer {service.token}"}
    mine: list[float] = []
    problems: list[str] = []
    start.wait()
    for _ in range(REQUESTS_PER_CLIENT):
        began = time.perf_counter()
        try:
            answer = session.get(
                f"{service.base}/api/v1/status", headers=headers, timeout=60, verify=service.ca
            )
            ok = (
                answer.status_code == 200
                and "nodes" in answer.json()
                and len(answer.json()["nodes"]) == NODES
            )
            if not ok:
                problems.append(f"HTTP {answer.status_code}: {answer.text[:200]}")
        except (requests.RequestException, ValueError) as error:
            problems.append(f"{type(error).__name__}: {error}")
        mine.append(time.perf_counter() - began)
    session.close()
    with lock:
        load.latencies.extend(mine)
        load.errors.extend(problems)


def _run_load(service: WebService) -> Load:
    load = Load([], [])
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS + 1)
    threads = [
        threading.Thread(target=_client, args=(service, load, lock, start), daemon=True)
        for _ in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    load.seconds = time.perf_counter() - began
    return load


def test_bench_status_with_50_concurrent_clients(benchmark: BenchmarkFixture, service: WebService) -> None:
    _run_load(service)  # warm-up: TLS sessions, the inventory read, the database pool
    pedantic = cast(Callable[..., Load], benchmark.pedantic)  # pytest-benchmark is untyped
    load = pedantic(_run_load, args=(service,), rounds=1, iterations=1)
    total = CLIENTS * REQUESTS_PER_CLIENT
    assert len(load.latencies) == total
    print(
        f"\nGET /api/v1/status, {CLIENTS} concurrent clients over HTTPS (gunicorn: 1 process x "
        f"{WEB_THREADS} threads), {total} requests, {NODES}-node inventory: "
        f"p50 {percentile(load.latencies, 0.50) * 1000:.1f} ms, "
        f"p99 {percentile(load.latencies, 0.99) * 1000:.1f} ms, "
        f"max {max(load.latencies) * 1000:.1f} ms, "
        f"throughput {total / load.seconds:.0f} req/s, errors {len(load.errors)}"
    )
    assert load.errors == [], load.errors[:5]
