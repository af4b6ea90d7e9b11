"""The login throttle holds across the web tier's worker processes: two app instances and two processes that
share one real Redis count the same failures, and a locked-out sign-in answers 429 with Retry-After on
whichever instance it reaches. (With the throttle in each process's memory, as before, each worker had its
own allowance: the first test fails.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from tests.support.redis_server import RedisServer
from tests.unit.test_web import PASSWORD, HttpsClient, login, make_site
from updater.services.accounts.auth import Throttled
from updater.services.accounts.throttle import SharedLoginThrottle
from updater.web import create_app
from updater.web.context import EXTENSION


def twin(app: Flask) -> Flask:
    """A second web app on the same configuration and store: what a second gunicorn worker runs."""
    context = app.extensions[EXTENSION]
    second = create_app(context.config, engine=context.engine)
    second.test_client_class = HttpsClient
    return second


def test_failures_on_two_app_instances_add_up_and_lock_out_on_both(
    tmp_path: Path, redis: RedisServer
) -> None:
    site = make_site(tmp_path, login_throttle_url=redis.url, login_max_failures=3)
    first, second = site.app, twin(site.app)
    assert first.extensions[EXTENSION].throttle is not second.extensions[EXTENSION].throttle
    one, other = first.test_client(), second.test_client()
    assert login(one, "olga", "wrong password one").status_code == 401
    assert login(other, "olga", "wrong password two").status_code == 401
    assert login(one, "olga", "wrong password three").status_code == 401
    for client in (other, one):
        refused = login(client, "olga", PASSWORD)  # the right password, too late
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 300
        assert "too many failed logins" in refused.get_data(as_text=True)


FAIL_FROM_A_PROCESS = """
import sys
from updater.services.accounts.throttle import SharedLoginThrottle
throttle = SharedLoginThrottle(sys.argv[1], max_failures=100, lockout_seconds=300)
for attempt in range(50):
    throttle.failed("carol", f"192.0.2.{attempt}")
"""


def test_two_processes_failing_at_once_lose_no_failure(redis: RedisServer) -> None:
    workers = [subprocess.Popen([sys.executable, "-c", FAIL_FROM_A_PROCESS, redis.url]) for _ in range(2)]
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0]
    here = SharedLoginThrottle(redis.url, max_failures=100, lockout_seconds=300)
    with pytest.raises(Throttled):  # 2 x 50 failures, every one counted: carol is at her 100
        here.check("carol", "198.51.100.1")
    here.check("carol-2", "198.51.100.1")
    limit_101 = SharedLoginThrottle(redis.url, max_failures=101, lockout_seconds=300)
    limit_101.check("carol", "198.51.100.1")  # exactly 100, not more: nothing counted twice
