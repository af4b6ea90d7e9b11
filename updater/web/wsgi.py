"""Serve the web app under gunicorn, HTTPS only (the launcher shared with the update server,
:mod:`updater.https.server`).

One worker process with threads: the login throttle lives in that process's memory (and Server-Sent
Events hold a thread each), so every request must reach the same process. Uploads are bounded by the app
(``MAX_CONTENT_LENGTH``); gunicorn's own limits stay at their defaults.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from updater.config import ServiceConfig
from updater.https import server as tlsserve


def gunicorn_options(config: ServiceConfig, *, bind: str | None = None, threads: int = 16) -> dict[str, Any]:
    return tlsserve.tls_options(
        bind=bind or config.bind,
        cert=str(config.cert_path),
        key=str(config.key_path),
        threads=threads,
        home=config.home,
        graceful_timeout=10,
    )


def serve(app: Flask, config: ServiceConfig, *, bind: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    tlsserve.serve(app, gunicorn_options(config, bind=bind))
