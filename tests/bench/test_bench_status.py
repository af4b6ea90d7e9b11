"""``GET /api/v1/status`` under 50 concurrent clients, through the real service configured as ``make demo``
configures it: ``corral-updater web`` (gunicorn over HTTPS, its default worker processes and threads) on
127.0.0.1, a 3-node lab-shaped inventory file read through ``ansible-inventory``, a vendor-signed license,
Redis; API-token authenticated.

Each client is a thread with its own keep-alive HTTPS session that sends its requests back to back. The
natural baseline runs side by side, by the same client code against the same gunicorn: a static file
(``/static/app.css``, served by the same app), then the status document; the ratio of their p99 is what
the status view costs over serving anything at all through this stack on this machine.
Smoke size (default): 40 requests per client. Full size (CORRAL_BENCH_SIZE=full): 400 per client (2,000
and 20,000 requests). Printed and recorded: p50, p99 and max latency, throughput and errors of both. The
test asserts only that every answer is the status document (or the file), never a time.
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

from tests.support.figures import Figures
from tests.support.redis_server import RedisServer
from tests.support.stats import percentile
from tests.support.web_service import WebService, demo_like_web
from updater.config import load_config

FULL = os.environ.get("CORRAL_BENCH_SIZE") == "full"
CLIENTS = 50
REQUESTS_PER_CLIENT = 400 if FULL else 40
NODES = 3  # the demo's cluster
STATIC = "/static/app.css"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer) -> Iterator[WebService]:
    with demo_like_web(tmp_path_factory.mktemp("bench-status"), redis.url, nodes=NODES) as web:
        yield web


@dataclass
class Load:
    latencies: list[float]
    errors: list[str]
    seconds: float = 0.0

    def p(self, fraction: float) -> float:
        return percentile(self.latencies, fraction) * 1000

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds

    def summary(self) -> str:
        return (
            f"p50 {self.p(0.50):.1f} ms, p99 {self.p(0.99):.1f} ms, max {max(self.latencies) * 1000:.1f} ms, "
            f"throughput {self.throughput:.0f} req/s, errors {len(self.errors)}"
        )


def _is_status(answer: requests.Response) -> bool:
    document = answer.json()
    return len(document["nodes"]) == NODES and document["license"] is not None and not document["problems"]


def _is_static(answer: requests.Response) -> bool:
    return answer.headers["Content-Type"].startswith("text/css") and len(answer.content) > 0


def _client(
    service: WebService,
    path: str,
    valid: Callable[[requests.Response], bool],
    *,
    load: Load,
    lock: threading.Lock,
    start: threading.Barrier,
) -> None:
    session = requests.Session()
    headers = {"Authorization": f"Bearer {service.token}"}
    mine: list[float] = []
    problems: list[str] = []
    start.wait()
    for _ in range(REQUESTS_PER_CLIENT):
        began = time.perf_counter()
        try:
            answer = session.get(f"{service.base}{path}", headers=headers, timeout=60, verify=service.ca)
            if answer.status_code != 200 or not valid(answer):
                problems.append(f"HTTP {answer.status_code}: {answer.text[:200]}")
        except (requests.RequestException, ValueError, KeyError) as error:
            problems.append(f"{type(error).__name__}: {error}")
        mine.append(time.perf_counter() - began)
    session.close()
    with lock:
        load.latencies.extend(mine)
        load.errors.extend(problems)


def _run_load(service: WebService, path: str, valid: Callable[[requests.Response], bool]) -> Load:
    load = Load([], [])
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS + 1)
    threads = [
        threading.Thread(
            target=_client,
            args=(service, path, valid),
            kwargs={"load": load, "lock": lock, "start": start},
            daemon=True,
        )
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


def _both(service: WebService) -> tuple[Load, Load]:
    static = _run_load(service, STATIC, _is_static)
    return static, _run_load(service, "/api/v1/status", _is_status)


def test_bench_status_with_50_concurrent_clients(
    benchmark: BenchmarkFixture, figures: Figures, service: WebService
) -> None:
    _both(service)  # warm-up: TLS sessions, every worker's first inventory read, the database pools
    pedantic = cast(Callable[..., tuple[Load, Load]], benchmark.pedantic)  # pytest-benchmark is untyped
    static, status = pedantic(_both, args=(service,), rounds=1, iterations=1)
    total = CLIENTS * REQUESTS_PER_CLIENT
    assert len(status.latencies) == len(static.latencies) == total
    config = load_config(service.home)
    print(
        f"\n{CLIENTS} concurrent keep-alive HTTPS clients, {total} requests each run, gunicorn "
        f"{config.web_workers} processes x {config.web_threads} threads, {NODES}-node inventory file "
        f"through ansible-inventory, license installed:\n"
        f"  GET {STATIC} (baseline): {static.summary()}\n"
        f"  GET /api/v1/status:      {status.summary()}\n"
        f"  status p99 / static p99: {status.p(0.99) / static.p(0.99):.2f}x"
    )
    figures.record("status p50", status.p(0.50), "ms", baseline=("static file p50", static.p(0.50)))
    figures.record("status p99", status.p(0.99), "ms", baseline=("static file p99", static.p(0.99)))
    figures.record(
        "status throughput", status.throughput, "req/s", baseline=("static file", static.throughput)
    )
    figures.record("status errors", len(status.errors), "requests")
    assert static.errors == [], static.errors[:5]
    assert status.errors == [], status.errors[:5]
