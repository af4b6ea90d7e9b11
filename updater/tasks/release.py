"""Release tasks: verify and stage an uploaded (imported) bundle.

Thin adapters: each task only calls service functions (:mod:`updater.tasks.app` has the app and its rules).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from updater.config import ServiceConfig
from updater.services.bundles import imports
from updater.services.jobs import TASK_STAGE_UPLOAD


def register(app: Celery, config: ServiceConfig, sessions: Callable[[], sessionmaker[Session]]) -> None:
    """Register this module's tasks on ``app``; ``sessions()`` gives the worker's session factory."""

    def stage_upload(import_id: str) -> dict[str, Any]:
        return imports.stage(config, sessions(), import_id).as_json()

    app.task(name=TASK_STAGE_UPLOAD)(stage_upload)
