"""Run the update server's WSGI app under gunicorn, HTTPS only, in one process.

One worker process with threads: the replay cache lives in that process's memory, so a second worker would
accept a request the first one has already seen. Scale out behind a load balancer with a shared cache first.
The launcher itself is shared with the update service's web app (:mod:`updater.https.server`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from updater.https import server as tlsserve


def gunicorn_options(
    home: Path, *, host: str, port: int, cert: str, key: str, threads: int = 8
) -> dict[str, Any]:
    return tlsserve.tls_options(
        bind=tlsserve.bind_address(host, port),
        cert=cert,
        key=key,
        threads=threads,
        home=home,
        graceful_timeout=5,
    )


def serve(app: Flask, home: Path, *, host: str, port: int, cert: str, key: str, threads: int = 8) -> None:
    """Serve until SIGTERM/SIGINT; TLS 1.2+ (AEAD suites only on 1.2); the control socket under ``home``."""
    tlsserve.serve(app, gunicorn_options(home, host=host, port=port, cert=cert, key=key, threads=threads))
