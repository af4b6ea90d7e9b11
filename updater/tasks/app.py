"""Celery wiring: the app built from the same :class:`ServiceConfig` as the web app, and thin tasks.

Each task only calls a service function. Recovery after a worker crash must come from persisted state
(ZooKeeper for the cluster, the store for history), never from Celery redelivery: with Redis, a late-acked
task is redelivered only after the visibility timeout and may then run twice. So tasks are acknowledged
when they start (``task_acks_late`` off), and the rollout task (to come) resumes an interrupted rollout
by its id from persisted state when a worker or beat starts.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger
from sqlalchemy.orm import Session, sessionmaker

from updater.config import ServiceConfig, known_secrets
from updater.services.accounts import audit, auth
from updater.services.channel import check as channel_check
from updater.services.jobs import QUEUE, TASK_CHECK_CHANNEL, TASK_RECORD_AUDIT, celery_app
from updater.store.db import make_engine, session_factory
from updater.store.models import Outcome
from updater.tasks import channel, release, rollout

CHANNEL_CHECK_ENTRY = "check-channel"

_redactor = auth.RedactSecrets()


class _Database:
    """The worker's engine, made on first use: prefork children must not share a parent's connections."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._engine: sa.Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    def sessions_factory(self) -> sessionmaker[Session]:
        return self.sessions

    @property
    def sessions(self) -> sessionmaker[Session]:
        if self._sessions is None:
            self._engine = make_engine(self._url)
            self._sessions = session_factory(self._engine)
        return self._sessions


def beat_schedule(config: ServiceConfig) -> dict[str, dict[str, Any]]:
    return {
        CHANNEL_CHECK_ENTRY: {
            "task": TASK_CHECK_CHANNEL,
            "schedule": timedelta(seconds=config.channel_check_interval_seconds),
            "kwargs": {"actor": "beat"},
            # A check that could not run before the next one is due is dropped, not piled up.
            "options": {"expires": float(config.channel_check_interval_seconds)},
        }
    }


def make_celery(config: ServiceConfig) -> Celery:
    """The worker's app: the shared settings (:func:`updater.services.jobs.celery_settings`), the beat
    schedule and every task."""
    app = celery_app(config)
    app.conf.beat_schedule = beat_schedule(config)
    for value in known_secrets(config):
        _redactor.add(value)
    _register_tasks(app, config)
    return app


def _register_tasks(app: Celery, config: ServiceConfig) -> None:
    database = _Database(config.effective_database_url)

    def record_audit(actor: str, action: str, target: str = "", outcome: str = "ok", detail: str = "") -> str:
        audit.record_separately(
            database.sessions,
            actor=actor,
            action=action,
            target=target,
            outcome=Outcome(outcome),
            detail=detail,
        )
        return "recorded"

    def check_channel(actor: str = "beat") -> dict[str, Any]:
        result = channel_check.check_channel(config, database.sessions, actor=actor)
        return {"checked": result.checked, "message": result.message}

    app.task(name=TASK_RECORD_AUDIT)(record_audit)
    app.task(name=TASK_CHECK_CHANNEL)(check_channel)
    channel.register(app, config, database.sessions_factory)
    release.register(app, config, database.sessions_factory)
    rollout.register(app, config, database.sessions_factory)


def _redact_celery_logs(logger: logging.Logger, *_args: Any, **_kwargs: Any) -> None:
    auth.install_redaction(_redactor, logger)


after_setup_logger.connect(_redact_celery_logs, weak=False)
after_setup_task_logger.connect(_redact_celery_logs, weak=False)


def run_worker(config: ServiceConfig, *, concurrency: int = 2, loglevel: str = "INFO") -> None:
    make_celery(config).worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            f"--concurrency={concurrency}",
            "-Q",
            QUEUE,
            "--hostname=corral@%h",
        ]
    )


def run_beat(config: ServiceConfig, *, loglevel: str = "INFO") -> None:
    make_celery(config).start(["beat", f"--loglevel={loglevel}"])
