"""Serve the web app under gunicorn, HTTPS only.

One worker process with threads: the login throttle lives in that process's memory (and Server-Sent
Events, later, hold a thread each), so every request must reach the same process.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

from updater.config import ServiceConfig


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for name, value in self._options.items():
            self.cfg.set(name, value)

    def load(self) -> Flask:
        return self._app


def gunicorn_options(config: ServiceConfig, *, bind: str | None = None, threads: int = 16) -> dict[str, Any]:
    return {
        "bind": bind or config.bind,
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "certfile": str(config.cert_path),
        "keyfile": str(config.key_path),
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": "info",
        "timeout": 120,
        "graceful_timeout": 10,
        # Request line and status only: no headers (tokens), no bodies (passwords).
        "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(L)ss',
        # Uploads are bounded by the app (MAX_CONTENT_LENGTH); gunicorn's own limits stay at defaults.
    }


def serve(app: Flask, config: ServiceConfig, *, bind: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    _Gunicorn(app, gunicorn_options(config, bind=bind)).run()
