"""Self-update of a running service: a real ``corral-updater web`` (gunicorn, HTTPS) and ``worker`` (Celery
on a real Redis) of the old release run from ``<home>/current`` under supervisor loops (what systemd's
``Restart=always`` does in production) on a SQLite store with history; the self-update builds the new
release's venv from a real wheel, migrates, flips ``current`` and runs the restart hook; the restarted
processes run the new release and the history is intact.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.net import free_port
from tests.support.redis_server import RedisServer
from tests.unit import bundle_kit as kit_
from tests.unit.test_self_update import NEW_REVISION, package
from updater.config import ServiceConfig, load_config
from updater.services.installation import self_update as su
from updater.store import queries as q
from updater.store.db import make_engine, session_factory, transaction
from updater.store.models import Outcome, ReleaseSource
from updater.tasks.app import make_celery

CLI = str(Path(sys.executable).with_name("corral-updater"))


@dataclass
class Supervisor:
    """Keeps ``<home>/current/bin/corral-updater <process>`` running: restarts it whenever it exits."""

    home: Path
    process: list[str]
    log: Path
    pidfile: Path
    pids: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _child: subprocess.Popen[bytes] | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        with self.log.open("ab") as out:
            while not self._stop.is_set():
                self._child = subprocess.Popen(
                    [str(self.home / "current" / "bin" / "corral-updater"), "--home", str(self.home),
                     *self.process],
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.home,
                )  # fmt: skip
                self.pids.append(self._child.pid)
                self.pidfile.write_text(str(self._child.pid))
                self._child.wait()
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        child = self._child
        if child is not None and child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        if self._thread is not None:
            self._thread.join(timeout=30)


@dataclass
class Service:
    config: ServiceConfig
    token: str
    supervisor: Supervisor
    worker: Supervisor

    @property
    def base(self) -> str:
        return f"https://{self.config.bind}/api/v1"

    def get(self, path: str) -> Any:
        answer = requests.get(
            self.base + path,
            headers={"Authorization": f"Bearer {self.token}"},
            verify=str(self.config.cert_path),  # init's self-signed certificate names 127.0.0.1
            timeout=5,
        )
        answer.raise_for_status()
        return answer.json()

    def wait_serving(self, pid_count: int, timeout: float = 60) -> int:
        """Wait until the supervisor's ``pid_count``-th process answers; its pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.supervisor.pids) >= pid_count:
                try:
                    self.get("/whoami")
                    return self.supervisor.pids[pid_count - 1]
                except requests.RequestException:
                    pass
            time.sleep(0.2)
        raise AssertionError(
            f"process {pid_count} did not serve in {timeout} s:\n{self.supervisor.log.read_text()[-3000:]}"
        )


def worker_pid(config: ServiceConfig, timeout: float = 60) -> int:
    """The pid the Celery worker reports over Redis (``inspect().stats()``)."""
    celery = make_celery(config)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = celery.control.inspect(timeout=1).stats() or {}
            if len(stats) == 1:
                return int(next(iter(stats.values()))["pid"])
            time.sleep(0.5)
    finally:
        celery.close()
    raise AssertionError(f"no single worker answered over Redis within {timeout} s")


def wait_for_new_worker(config: ServiceConfig, old: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = worker_pid(config, timeout=timeout)
        if pid != old:
            return pid
        time.sleep(0.5)
    raise AssertionError(f"the worker was not restarted within {timeout} s")


def interpreter(pid: int) -> str:
    """The interpreter a process runs: argv[0] in its command line (the console script's shebang)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


def add_history(config: ServiceConfig) -> None:
    engine = make_engine(config.effective_database_url)
    try:
        with transaction(session_factory(engine)) as db:
            release = q.add_release(
                db,
                version="0.1.0",
                channel="stable",
                release_date=kit_.RELEASE_DATE,
                source=ReleaseSource.IMPORTED,
            )
            q.mark_installed(db, release)
            q.add_rollout(
                db, rollout_id="r-history", release=release, created_by="alice", plan={}, nodes=["n1", "n2"]
            )
            q.append_log(db, "r-history", [("n1", "stdout", "drained"), ("n2", "stdout", "rebooted")])
            q.add_audit(
                db,
                actor="alice",
                action="apply",
                target="0.1.0",
                outcome=Outcome.OK,
                source_ip=None,
                detail="",
            )
    finally:
        engine.dispose()


@pytest.fixture
def service(tmp_path: Path, redis: RedisServer) -> Iterator[Service]:
    home = tmp_path / "home"
    subprocess.run(
        [CLI, "--home", str(home), "init", "--bind", f"127.0.0.1:{free_port()}", "--redis-url", redis.url],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    token = subprocess.run(
        [CLI, "--home", str(home), "token", "create", "admin", "--name", "selftest"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    config = load_config(home)
    add_history(config)
    web = Supervisor(home, ["web"], tmp_path / "web.log", tmp_path / "web.pid")
    worker = Supervisor(
        home, ["worker", "--concurrency", "1"], tmp_path / "worker.log", tmp_path / "worker.pid"
    )
    try:
        yield Service(config, token, web, worker)
    finally:
        web.stop()
        worker.stop()


def test_a_running_service_self_updates_restarts_onto_the_new_release_and_keeps_its_history(
    service: Service, tmp_path: Path
) -> None:
    config, home = service.config, service.config.home
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    old = kit_.build_service_wheel(wheels, "0.2.0")
    new = kit_.build_service_wheel(wheels, "0.3.0", migration=NEW_REVISION)
    su.install(config, package(old, "0.2.0"))  # the old release, in the layout
    pidfiles = f"{service.supervisor.pidfile} {service.worker.pidfile}"
    restart = f'for f in {pidfiles}; do kill -TERM "$(cat "$f")"; done'  # systemd: restart the target
    (home / su.SETTINGS_FILE).write_text(json.dumps({"restart_command": ["/bin/sh", "-c", restart]}))
    service.supervisor.start()
    service.worker.start()
    old_pid = service.wait_serving(1)
    old_worker = worker_pid(config)
    assert old_worker == service.worker.pids[0]
    for pid in (old_pid, old_worker):
        assert interpreter(pid) == str(home / "venvs" / "0.2.0" / "bin" / "python")
    history_before = service.get("/rollouts/r-history"), service.get("/rollouts/r-history/log")

    answered: list[bool] = []
    stop_polling = threading.Event()

    def poll_old_process() -> None:  # the old release keeps serving while the new venv is built and migrated
        while not stop_polling.is_set():
            try:
                answered.append(service.get("/rollouts/r-history")["id"] == "r-history")
            except requests.RequestException:
                answered.append(False)
            time.sleep(0.1)

    poller = threading.Thread(target=poll_old_process)
    poller.start()
    try:
        result = su.install(config, package(new, "0.3.0"))
    finally:
        stop_polling.set()
        poller.join()

    assert (result.previous, result.database_revision_after, result.restart) == (
        "0.2.0", NEW_REVISION, "restart command ran",
    )  # fmt: skip
    assert len(answered) > 5
    assert all(answered[:-3])  # the last few may see the restart itself
    new_pid = service.wait_serving(2)
    assert new_pid != old_pid
    assert interpreter(new_pid) == str(home / "venvs" / "0.3.0" / "bin" / "python")
    new_worker = wait_for_new_worker(config, old_worker)
    assert new_worker == service.worker.pids[-1]
    assert interpreter(new_worker) == str(home / "venvs" / "0.3.0" / "bin" / "python")
    assert (service.get("/rollouts/r-history"), service.get("/rollouts/r-history/log")) == history_before

    # the new release's own CLI, from current, reports itself and the migrated database
    status = subprocess.run(
        [str(home / "current" / "bin" / "python"), "-I", "-m", "updater.cli.self_update_commands",
         "--home", str(home), "self-update", "status", "--json"],
        check=True, capture_output=True, text=True, cwd=home,
    )  # fmt: skip
    state = json.loads(status.stdout)
    assert (state["running"], state["current"], state["previous"]) == ("0.3.0", "0.3.0", "0.2.0")
    assert state["database_revision"] == NEW_REVISION
