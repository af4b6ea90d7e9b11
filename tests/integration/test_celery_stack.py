"""The service's processes for real: Redis, a Celery worker, beat, and the web app under gunicorn over HTTPS.

Everything is started by these fixtures on loopback (Debian ``redis-server``; ``corral-updater worker``,
``beat`` and ``web`` as separate processes from a home made by ``corral-updater init``), and stopped.
No eager mode: tasks travel through Redis to another process, which writes to the same database.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import requests

from tests.support.net import free_port, listening
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer
from tests.support.service_stack import CLI, ServiceProcess, Worker, wait_for
from updater.config import ServiceConfig, load_config
from updater.services.jobs import TASK_CHECK_CHANNEL, TASK_RECORD_AUDIT
from updater.store import queries as q
from updater.store.db import make_engine, session_factory, transaction
from updater.store.models import AuditEntry, Outcome
from updater.tasks.app import CHANNEL_CHECK_ENTRY, make_celery


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The whole service on one database backend: SQLite (the default) or a real PostgreSQL server."""
    root = tmp_path_factory.mktemp(f"stack-{request.param}")
    home = root / "home"
    with ExitStack() as cleanup:
        database: list[str] = []
        if request.param == "postgresql":
            postgres = PostgresServer()
            cleanup.callback(postgres.stop)
            postgres.start()
            database = ["--database-url", postgres.create_database()]
        init = subprocess.run(
            [
                CLI, "--home", str(home), "init", "--redis-url", redis.url, "--channel-check-interval", "1",
                "--bind", f"127.0.0.1:{free_port()}", *database,
            ],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        password = re.search(r"password: (\S+)", init.stdout)
        assert password is not None
        worker = Worker(home, root / "worker.log")
        cleanup.callback(worker.stop)
        config = load_config(home)
        celery = make_celery(config)
        cleanup.callback(celery.close)
        wait_for(lambda: celery.control.ping(timeout=0.5), 60, "worker ready", worker)
        yield {
            "home": home,
            "config": config,
            "celery": celery,
            "worker": worker,
            "password": password.group(1),
        }


def audit_entries(config: ServiceConfig) -> list[AuditEntry]:
    engine = make_engine(config.effective_database_url)
    try:
        with transaction(session_factory(engine)) as db:
            return list(reversed(q.list_audit(db, limit=1000)))
    finally:
        engine.dispose()


def test_a_task_travels_through_redis_to_the_worker_process_and_reaches_the_database(
    stack: dict[str, Any],
) -> None:
    result = stack["celery"].send_task(
        TASK_RECORD_AUDIT, kwargs={"actor": "tester", "action": "celery.roundtrip", "target": "redis"}
    )
    assert result.get(timeout=30) == "recorded"
    entry = audit_entries(stack["config"])[-1]
    assert (entry.actor, entry.action, entry.target, entry.outcome) == (
        "tester",
        "celery.roundtrip",
        "redis",
        Outcome.OK,
    )
    assert str(stack["worker"].proc.pid) != str(os.getpid())


def test_tasks_are_acknowledged_when_they_start_so_a_crash_never_replays_them(stack: dict[str, Any]) -> None:
    # Recovery comes from persisted state; a redelivered task could run a node's procedure twice.
    conf = stack["celery"].conf
    assert conf.task_acks_late is False
    assert conf.task_reject_on_worker_lost is False
    assert conf.worker_prefetch_multiplier == 1


def test_a_task_with_bad_arguments_fails_in_the_worker_and_writes_nothing(stack: dict[str, Any]) -> None:
    before = len(audit_entries(stack["config"]))
    result = stack["celery"].send_task(
        TASK_RECORD_AUDIT, kwargs={"actor": "tester", "action": "x", "outcome": "maybe"}
    )
    with pytest.raises(ValueError, match="'maybe' is not a valid Outcome"):
        result.get(timeout=30)
    assert len(audit_entries(stack["config"])) == before


def test_beat_runs_the_channel_check_on_its_configured_interval(stack: dict[str, Any]) -> None:
    schedule = stack["celery"].conf.beat_schedule[CHANNEL_CHECK_ENTRY]
    assert schedule["task"] == TASK_CHECK_CHANNEL
    assert schedule["schedule"].total_seconds() == 1
    beat = ServiceProcess([CLI, "--home", str(stack["home"]), "beat"], stack["home"].parent / "beat.log")
    try:
        checks = wait_for(
            lambda: [e for e in audit_entries(stack["config"]) if e.action == "channel.check"][2:],
            60,
            "three periodic channel checks",
            beat,
        )
    finally:
        beat.stop()
    entry = checks[-1]
    assert entry.actor == "beat"
    assert entry.outcome is Outcome.FAILED
    assert "no update channel is configured" in entry.detail


def test_the_web_app_serves_https_only_with_the_init_certificate(stack: dict[str, Any]) -> None:
    config: ServiceConfig = stack["config"]
    web = ServiceProcess([CLI, "--home", str(stack["home"]), "web"], stack["home"].parent / "web.log")
    host, port = config.bind.rsplit(":", 1)
    base = f"https://{host}:{port}"
    browser = requests.Session()
    # The self-signed certificate from init (it names 127.0.0.1). Passed per request: a session's own
    # `verify` loses to REQUESTS_CA_BUNDLE from the environment.
    ca = str(config.cert_path)
    try:
        wait_for(lambda: listening(host, int(port)), 60, "web service listening", web)
        login_page = browser.get(f"{base}/login", timeout=10, verify=ca)
        token = re.search(r'name="csrf_token" value="([^"]+)"', login_page.text)
        assert token is not None
        signed_in = browser.post(
            f"{base}/login",
            data={"username": "admin", "password": stack["password"], "csrf_token": token.group(1)},
            timeout=10,
            verify=ca,
            allow_redirects=False,
        )
        assert signed_in.status_code == 302
        cookie = signed_in.headers["Set-Cookie"]
        assert "Secure" in cookie
        assert "HttpOnly" in cookie
        overview = browser.get(f"{base}/", timeout=10, verify=ca)
        assert overview.status_code == 200
        assert "admin (operator)" in overview.text
        assert overview.headers["Strict-Transport-Security"].startswith("max-age=")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://{host}:{port}/", timeout=5)
    finally:
        web.stop()
    assert stack["password"] not in web.output()
