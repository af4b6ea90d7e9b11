"""Channel tasks: download a release from the update channel (resumable, with progress) and stage it.

Thin adapters: each task only calls service functions (:mod:`updater.tasks.app` has the app and its rules).
A worker killed mid-download leaves the partial file and its progress record; the next ``corral.download``
of that release (sent again by whoever asked for it; never a Celery redelivery) resumes the file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from updater.config import ServiceConfig
from updater.services.channel import downloads
from updater.services.jobs import TASK_DOWNLOAD


def register(app: Celery, config: ServiceConfig, sessions: Callable[[], sessionmaker[Session]]) -> None:
    """Register this module's tasks on ``app``; ``sessions()`` gives the worker's session factory."""

    def download(version: str, actor: str = "worker") -> dict[str, Any]:
        result = downloads.download_release(config, sessions(), version=version, actor=actor)
        return {
            "version": result.version,
            "state": str(result.state),
            "message": result.message,
            "failed_check": result.failed_check,
            "staged_path": result.staged_path,
        }

    app.task(name=TASK_DOWNLOAD)(download)
