"""What the web app's views share: the configuration, the database and the login throttle of this app."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session, sessionmaker

from updater.config import ServiceConfig
from updater.services.accounts.auth import RedactSecrets, Throttle
from updater.services.jobs import JobQueue

EXTENSION = "corral"


@dataclass(frozen=True)
class WebContext:
    config: ServiceConfig
    engine: sa.Engine
    sessions: sessionmaker[Session]
    throttle: Throttle  # shared by every worker process (Redis) unless the config keeps it in one
    redactor: RedactSecrets
    queue: JobQueue  # one Celery app per web app, made on first use


def web_context() -> WebContext:
    context: WebContext = current_app.extensions[EXTENSION]
    return context
