"""The update service's rollout stack for tests: a home made by the real ``corral-updater init``, a real
``corral-updater worker`` process (killable with SIGKILL, restartable), Redis and ZooKeeper from the existing
fixtures' classes, and readers of the store. Used by the integration and lab tiers' rollout tests (not a
conftest: they import what they need)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from celery import Celery
from sqlalchemy.orm import Session

from updater.config import ServiceConfig, load_config
from updater.services.jobs import TASK_ROLLOUT
from updater.store import queries
from updater.store.db import make_engine, session_factory, transaction
from updater.tasks.app import make_celery

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CLI = str(VENV_BIN / "corral-updater")


def service_env() -> dict[str, str]:
    """What the worker needs to run ansible-playbook: the venv on PATH and the repository's ansible.cfg."""
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_NOCOLOR": "1",
    }


def write_inventory(path: Path, base: dict[str, Any], extra_vars: dict[str, Any]) -> Path:
    """``base`` (an inventory as YAML data) with ``extra_vars`` added to group ``all``."""
    data = {**base}
    data["all"] = {**data.get("all", {}), "vars": {**data.get("all", {}).get("vars", {}), **extra_vars}}
    path.write_text(yaml.safe_dump(data))
    return path


class ServiceProcess:
    """A service process (web, worker, beat) in its own session, its children with it, with the service's
    environment and a log."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            args,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=service_env(),
            cwd=ROOT,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL to the whole process group: no handler runs, nothing is cleaned up."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._out.close()

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()


class Worker(ServiceProcess):
    """``corral-updater worker`` (its pool children in its session)."""

    def __init__(self, home: Path, log: Path, *, concurrency: int = 1) -> None:
        super().__init__([CLI, "--home", str(home), "worker", "--concurrency", str(concurrency)], log)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, worker: Worker | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        if worker is not None and not worker.alive():
            raise AssertionError(f"{what}: the worker exited:\n{worker.output()[-3000:]}")
        time.sleep(0.3)
    tail = f"\n{worker.output()[-4000:]}" if worker is not None else ""
    raise AssertionError(f"{what}: not within {timeout} s{tail}")


@dataclass
class RolloutView:
    """A rollout as the store keeps it (what the pages read)."""

    state: str
    executed: list[str]
    steps: dict[str, dict[str, Any]]
    log: list[str]
    probe_report: dict[str, Any] | None
    created_by: str


@dataclass
class Service:
    home: Path
    config: ServiceConfig
    workers: list[Worker] = field(default_factory=list)
    _celery: Celery | None = None

    @contextmanager
    def db(self) -> Iterator[Session]:
        engine = make_engine(self.config.effective_database_url)
        try:
            with transaction(session_factory(engine)) as session:
                yield session
        finally:
            engine.dispose()

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = make_celery(self.config)
        return self._celery

    def enqueue(self, rollout_id: str) -> None:
        self.celery.send_task(TASK_ROLLOUT, args=[rollout_id])

    def start_worker(self) -> Worker:
        worker = Worker(self.home, self.home.parent / f"worker{len(self.workers)}.log")
        self.workers.append(worker)
        wait_for(lambda: self.celery.control.ping(timeout=0.5), 60, "worker ready", worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self._celery is not None:
            self._celery.close()

    def view(self, rollout_id: str) -> RolloutView:
        with self.db() as db:
            rollout = queries.get_rollout(db, rollout_id)
            return RolloutView(
                state=str(rollout.state),
                executed=list(rollout.executed_order),
                steps={
                    step.node: {
                        "state": str(step.state),
                        "started": step.started_at,
                        "finished": step.finished_at,
                        "phases": dict(step.phase_seconds),
                        "message": step.message,
                    }
                    for step in rollout.steps
                },
                log=[line.text for line in queries.log_lines(db, rollout_id, limit=100_000)],
                probe_report=rollout.probe_report,
                created_by=rollout.created_by,
            )

    def wait_state(
        self, rollout_id: str, states: set[str], timeout: float, worker: Worker | None = None
    ) -> RolloutView:
        view: list[RolloutView] = []

        def reached() -> bool:
            view[:] = [self.view(rollout_id)]
            return view[0].state in states

        wait_for(reached, timeout, f"rollout {rollout_id} reaching {sorted(states)}", worker)
        return view[0]

    def audit(self) -> list[tuple[str, str, str, str]]:
        with self.db() as db:
            return [
                (entry.actor, entry.action, entry.target, str(entry.outcome))
                for entry in reversed(queries.list_audit(db, limit=1000))
            ]


def init_service(
    root: Path,
    *,
    redis_url: str,
    inventory: Path,
    trust: dict[str, Path] | None = None,
    database_url: str | None = None,
) -> Service:
    """A home made by the real ``corral-updater init`` (trust files verified by it when given; the store in
    ``database_url`` when given, else the embedded SQLite)."""
    home = root / "home"
    trust_args = ["--database-url", database_url] if database_url else []
    for option, name in (
        ("--trust-root", "trust_root"),
        ("--keyring", "keyring"),
        ("--license", "license"),
        ("--entitlement-key", "entitlement_key"),
    ):
        if trust and name in trust:
            trust_args += [option, str(trust[name])]
    result = subprocess.run(
        [
            CLI,
            "--home",
            str(home),
            "init",
            "--redis-url",
            redis_url,
            "--inventory",
            str(inventory),
            *trust_args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"password: \S+", result.stdout)
    return Service(home, load_config(home))
