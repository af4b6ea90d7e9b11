"""The update service for tests, run as an operator runs it: a home made by the real ``corral-updater init``
(bound to a free loopback port), real ``corral-updater worker`` processes (killable with SIGKILL,
restartable), ``corral-updater web`` (gunicorn over HTTPS), and readers of the store.

``Service`` is the home, its store and its processes (the integration and lab tiers' rollout tests drive it);
``Stack`` is a whole running service with the vendor kit its trust and license came from, the admin's password
and an API token (``running_stack``: the integration tier's import tests and the browser tier). Not a
conftest: the tiers import what they need."""

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

import requests
import yaml
from celery import Celery
from sqlalchemy.orm import Session

from tests.support.net import free_port, listening
from tests.unit import bundle_kit
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


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, process: ServiceProcess | None = None
) -> Any:
    """``condition()``'s first true result within ``timeout`` seconds; fails at once if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        if process is not None and not process.alive():
            raise AssertionError(f"{what}: the process exited:\n{process.output()[-3000:]}")
        time.sleep(0.3)
    tail = f"\n{process.output()[-4000:]}" if process is not None else ""
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
    password: str = ""  # the admin's, as init printed it
    workers: list[Worker] = field(default_factory=list)
    web: ServiceProcess | None = None
    _celery: Celery | None = None

    @property
    def base(self) -> str:
        return f"https://{self.config.bind}"

    def start_web(self) -> ServiceProcess:
        """``corral-updater web``, once it listens."""
        web = ServiceProcess([CLI, "--home", str(self.home), "web"], self.home.parent / "web.log")
        self.web = web
        host, port = self.config.bind.rsplit(":", 1)
        wait_for(lambda: listening(host, int(port)), 60, "the web service listening", web)
        return web

    def create_token(self, name: str) -> str:
        """A new API token of the admin."""
        return subprocess.run(
            [CLI, "--home", str(self.home), "token", "create", "admin", "--name", name],
            capture_output=True, text=True, check=True, env=service_env(), cwd=ROOT,
        ).stdout.strip()  # fmt: skip

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
        for process in [*([self.web] if self.web else []), *self.workers]:
            process.stop()
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
    """A home made by the real ``corral-updater init`` under ``root`` (trust files verified by it when given;
    the store in ``database_url`` when given, else the embedded SQLite; the web bound to a free port)."""
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
            "--bind",
            f"127.0.0.1:{free_port()}",
            *trust_args,
        ],
        capture_output=True,
        text=True,
        check=False,
        env=service_env(),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    password = re.search(r"password: (\S+)", result.stdout)
    assert password is not None, result.stdout
    return Service(home, load_config(home), password.group(1))


@dataclass
class Stack:
    """A whole running service: ``service`` (home, store, web, workers), the vendor ``kit`` its trust root,
    keyring and license came from, and an admin API ``token``; what a client of its API and pages needs."""

    root: Path
    kit: bundle_kit.Kit
    service: Service
    token: str

    @property
    def home(self) -> Path:
        return self.service.home

    @property
    def config(self) -> ServiceConfig:
        return self.service.config

    @property
    def password(self) -> str:
        return self.service.password

    @property
    def base(self) -> str:
        return self.service.base

    @property
    def ca(self) -> str:
        return str(self.config.cert_path)

    @property
    def web(self) -> ServiceProcess:
        assert self.service.web is not None
        return self.service.web

    @property
    def worker(self) -> Worker | None:
        return self.service.workers[-1] if self.service.workers else None

    def start_worker(self) -> Worker:
        """A worker, unless one was started already."""
        return self.worker or self.service.start_worker()

    def logs(self) -> str:
        parts = [f"--- {p.log.name}\n{p.output()[-4000:]}" for p in [self.web, *self.service.workers]]
        return "\n".join(parts)

    def get(self, path: str) -> requests.Response:
        return requests.get(
            f"{self.base}{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
            verify=self.ca,
        )

    def upload(self, bundle: Path, name: str | None = None) -> requests.Response:
        """``POST /api/v1/releases`` with ``bundle`` (as ``name``)."""
        with bundle.open("rb") as data:
            return requests.post(
                f"{self.base}/api/v1/releases",
                files={"bundle": (name or bundle.name, data, "application/octet-stream")},
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=60,
                verify=self.ca,
            )

    def finished(self, status_url: str, timeout: float = 90) -> dict[str, Any]:
        """The import status at ``status_url`` once it is done."""

        def status() -> dict[str, Any] | None:
            answer: dict[str, Any] = self.get(status_url).json()
            return answer if answer["done"] else None

        done: dict[str, Any] = wait_for(status, timeout, "the worker finishes the import", self.worker)
        return done

    def releases(self) -> dict[str, tuple[bool, list[tuple[str, bool]]]]:
        """Every release in the store: whether it is staged, and its checks."""
        with self.service.db() as db:
            return {
                r.version: (r.staged_path is not None, [(c.name, c.passed) for c in r.checks])
                for r in queries.list_releases(db)
            }

    def leftovers(self) -> list[str]:
        """What imports left in the home's imports directory (their status files aside)."""
        imports_dir = self.home / "imports"
        if not imports_dir.exists():
            return []
        return sorted(p.name for p in imports_dir.glob("*") if p.suffix != ".json")


@contextmanager
def running_stack(
    root: Path,
    *,
    redis_url: str,
    inventory: Path,
    kit: bundle_kit.Kit,
    license: bundle_kit.IssuedLicense,
    database_url: str | None = None,
) -> Iterator[Stack]:
    """The service under ``root``, its home made by init with ``kit``'s trust root and keyring and
    ``license``, its web listening (no worker yet: ``Stack.start_worker``); every process stopped at the
    end."""
    service = init_service(
        root,
        redis_url=redis_url,
        inventory=inventory,
        trust={
            "trust_root": kit.vendor.trust_root,
            "keyring": kit.vendor.keyring,
            "license": license.license_path,
            "entitlement_key": license.key_path,
        },
        database_url=database_url,
    )
    try:
        service.start_web()
        yield Stack(root, kit, service, service.create_token("tests"))
    finally:
        service.close()
