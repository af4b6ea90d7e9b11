"""Run a Flask app under gunicorn, HTTPS only, in one worker process with threads.

The one launcher for both of Corral's HTTPS services: the update service's web app
(:mod:`updater.web.wsgi`) and the reference update server (:mod:`updater.server.wsgi`). Both need a single
process (each keeps per-process state: the login throttle, the replay cache), both serve TLS 1.2+ only
(gunicorn's default context) and both keep their access logs free of secrets: the request line and status,
never headers (tokens, signatures) or bodies (passwords).
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(L)ss'


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


def bind_address(host: str, port: int) -> str:
    """``HOST:PORT`` as gunicorn takes it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tls_options(
    *, bind: str, cert: str, key: str, threads: int, graceful_timeout: int = 10
) -> dict[str, Any]:
    """gunicorn settings: one gthread worker, the certificate and key, access and error logs on stdout."""
    if not cert or not key:
        raise ValueError("an HTTPS service needs both a certificate and a key")
    return {
        "bind": bind,
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "certfile": cert,
        "keyfile": key,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": "info",
        "timeout": 120,
        "graceful_timeout": graceful_timeout,
        "access_log_format": ACCESS_LOG_FORMAT,
    }


def serve(app: Flask, options: dict[str, Any]) -> None:
    """Serve ``app`` with ``options`` (from :func:`tls_options`) until SIGTERM/SIGINT."""
    _Gunicorn(app, options).run()
