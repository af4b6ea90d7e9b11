"""Run the update server's WSGI app under gunicorn, HTTPS only, in one process.

One worker process with threads: the replay cache lives in that process's memory, so a second worker would
accept a request the first one has already seen. Scale out behind a load balancer with a shared cache first.
The launcher itself is shared with the update service's web app (:mod:`updater.https.server`).
"""

from __future__ import annotations

from flask import Flask

from updater.https import server as tlsserve


def serve(app: Flask, *, host: str, port: int, cert: str, key: str, threads: int = 8) -> None:
    """Serve until SIGTERM/SIGINT; TLS 1.2+ only (gunicorn's default context)."""
    options = tlsserve.tls_options(
        bind=tlsserve.bind_address(host, port), cert=cert, key=key, threads=threads, graceful_timeout=5
    )
    tlsserve.serve(app, options)
