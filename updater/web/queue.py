"""The web app's way to hand work to the Celery worker: one Celery app per Flask app, made on first use."""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery

from updater.config import ServiceConfig
from updater.tasks import make_celery

# Publishing gives up after about two seconds when Redis is down, so a web thread is never held long.
RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


class QueueUnavailable(Exception):
    """The task could not be handed to the broker (Redis down or unreachable)."""


class TaskQueue:
    def __init__(self, config: ServiceConfig) -> None:
        self._config = config
        self._celery: Celery | None = None
        self._lock = threading.Lock()

    @property
    def celery(self) -> Celery:
        with self._lock:
            if self._celery is None:
                self._celery = make_celery(self._config)
            return self._celery

    def send(self, task: str, args: list[Any], *, expires: float | None = None) -> str:
        """Queue ``task(*args)``; returns the Celery task id."""
        try:
            result = self.celery.send_task(
                task, args=args, expires=expires, retry=True, retry_policy=RETRY_POLICY
            )
        except Exception as error:  # kombu/redis raise many kinds; all mean "not queued"
            raise QueueUnavailable(
                f"the task queue (Redis at {self._config.redis_url.split('@')[-1]}) is not reachable: "
                f"{type(error).__name__}"
            ) from None
        return str(result.id)
