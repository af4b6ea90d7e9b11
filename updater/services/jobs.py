"""The work the update service hands to its Celery worker: every task's name, and the one way to queue one.

The web app, the CLI and the worker's own tasks queue work through :class:`JobQueue` by the names below; the
worker (:mod:`updater.tasks`) registers its tasks under the same names. Neither side imports the other, and
queueing needs only the broker: a task is sent by name, so the sender never loads the worker's code.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery

from updater.config import ServiceConfig

QUEUE = "corral"

TASK_RECORD_AUDIT = "corral.record_audit"
TASK_CHECK_CHANNEL = "corral.check_channel"
TASK_DOWNLOAD = "corral.download"
TASK_STAGE_UPLOAD = "corral.stage_upload"
TASK_ROLLOUT = "corral.rollout"
TASK_RECOVER_ROLLOUTS = "corral.recover_rollouts"
TASK_OBSERVE_CLUSTER = "corral.observe_cluster"

# Publishing gives up after about two seconds when Redis is down, so a web thread is never held long.
RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


class QueueUnavailable(Exception):
    """The task could not be handed to the broker (Redis down or unreachable)."""


def celery_settings(config: ServiceConfig) -> dict[str, Any]:
    """The Celery settings every app of this installation shares (sender and worker alike)."""
    return {
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": QUEUE,
        "task_acks_late": False,
        "task_reject_on_worker_lost": False,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "result_expires": 24 * 3600,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule_filename": str(config.home / "celerybeat-schedule"),
        "worker_redirect_stdouts": False,
        # The result backend keeps its own retries (Celery's default: 20, about 19 s with Redis down), which
        # a web thread sending a job would sit through after the broker's RETRY_POLICY had given up.
        "result_backend_transport_options": {"retry_policy": RETRY_POLICY},
    }


def celery_app(config: ServiceConfig) -> Celery:
    """A Celery app on the installation's Redis with no tasks of its own (the worker adds them)."""
    app = Celery("corral_updater", broker=config.redis_url, backend=config.redis_url, set_as_current=False)
    app.conf.update(celery_settings(config))
    return app


class JobQueue:
    """Queues tasks by name on the installation's broker; the Celery client is made on first use."""

    def __init__(self, config: ServiceConfig, *, celery: Celery | None = None) -> None:
        """``celery``: an app to send through (the worker's own); by default one is made on first use."""
        self._config = config
        self._celery: Celery | None = celery
        self._lock = threading.Lock()

    @property
    def celery(self) -> Celery:
        with self._lock:
            if self._celery is None:
                self._celery = celery_app(self._config)
            return self._celery

    def send(self, task: str, args: list[Any] | None = None, *, expires: float | None = None) -> str:
        """Queue ``task(*args)``; returns the Celery task id. Raises :class:`QueueUnavailable`."""
        try:
            result = self.celery.send_task(
                task, args=args or [], expires=expires, retry=True, retry_policy=RETRY_POLICY
            )
        except Exception as error:  # kombu/redis raise many kinds; all mean "not queued"
            raise QueueUnavailable(
                f"the task queue (Redis at {self._config.redis_url.split('@')[-1]}) is not reachable: "
                f"{type(error).__name__}"
            ) from None
        return str(result.id)

    def close(self) -> None:
        with self._lock:
            if self._celery is not None:
                self._celery.close()
                self._celery = None
