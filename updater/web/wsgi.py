"""Serve the web app under gunicorn, HTTPS only (the launcher shared with the update server,
:mod:`updater.https.server`).

``web_workers`` processes of ``web_threads`` threads each (``updater.json``; docs/security.md). Nothing a
request needs is kept in one process only: the login throttle is in Redis
(:mod:`updater.services.accounts.throttle`), sessions and everything else in the store; what each process
keeps for itself (the Overview's inventory and license, its share of event streams) is a cache or a
per-process bound. The app is built once, before gunicorn forks its workers, so each worker drops the
database connections it inherited and opens its own. Uploads are bounded by the app (``MAX_CONTENT_LENGTH``).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from updater.config import ServiceConfig
from updater.https import server as tlsserve
from updater.web.context import EXTENSION, WebContext


def web_context_of(app: Flask) -> WebContext:
    context: WebContext = app.extensions[EXTENSION]
    return context


def gunicorn_options(config: ServiceConfig, *, bind: str | None = None) -> dict[str, Any]:
    return tlsserve.tls_options(
        bind=bind or config.bind,
        cert=str(config.cert_path),
        key=str(config.key_path),
        threads=config.web_threads,
        workers=config.web_workers,
        header_timeout=config.web_header_timeout_seconds,
        home=config.home,
        graceful_timeout=10,
    )


def serve(app: Flask, config: ServiceConfig, *, bind: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    engine = web_context_of(app).engine

    def post_fork(_server: object, _worker: object) -> None:
        # A pooled connection inherited from the parent is shared with it and every sibling: never use one.
        engine.dispose(close=False)

    tlsserve.serve(app, {**gunicorn_options(config, bind=bind), "post_fork": post_fork})
