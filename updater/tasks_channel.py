"""Channel tasks: download a release from the update channel (resumable, with progress) and stage it.

Thin adapters: each task only calls service functions (see :mod:`updater.tasks` for the app and its rules).
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from updater.config import ServiceConfig


def register(app: Celery, config: ServiceConfig, sessions: Callable[[], sessionmaker[Session]]) -> None:
    """Register this module's tasks on ``app``; ``sessions()`` gives the worker's session factory."""
