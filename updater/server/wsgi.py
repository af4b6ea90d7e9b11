"""Run the update server's WSGI app under gunicorn, HTTPS only, in one process.

One worker process with threads: the replay cache lives in that process's memory, so a second worker would
accept a request the first one has already seen. Scale out behind a load balancer with a shared cache first.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]


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


def serve(app: Flask, *, host: str, port: int, cert: str, key: str, threads: int = 8) -> None:
    """Serve until SIGTERM/SIGINT; TLS 1.2+ only (gunicorn's default context)."""
    options: dict[str, Any] = {
        "bind": f"{host}:{port}" if ":" not in host else f"[{host}]:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "certfile": cert,
        "keyfile": key,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": "info",
        "timeout": 120,
        "graceful_timeout": 5,
        # The access log never carries the auth headers: only the request line and status.
        "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(L)ss',
    }
    _Gunicorn(app, options).run()
