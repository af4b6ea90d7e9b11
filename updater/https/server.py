"""Run a Flask app under gunicorn, HTTPS only, in worker processes with threads.

The one launcher for both of Corral's HTTPS services: the update service's web app
(:mod:`updater.web.wsgi`, ``web_workers`` processes: its login throttle is in Redis) and the reference
update server (:mod:`updater.server.wsgi`, one process: it keeps its replay cache in memory). Both serve
TLS 1.2+ only (gunicorn's default context) with AEAD suites only on TLS 1.2 (:data:`TLS12_CIPHERS`; TLS 1.3
has no other kind), and both keep their access logs free of secrets: the request line and status, never
headers (tokens, signatures) or bodies (passwords).

Each service has its own gunicorn control socket, ``<home>/run/gunicorn.ctl``: gunicorn's default is one
path per user (``$XDG_RUNTIME_DIR`` or ``~/.gunicorn``), so a second service started by the same user took
over the first one's socket, and stopping either removed it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

from updater.https.worker import DEFAULT_HEADER_TIMEOUT, guarded_worker

ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(L)ss'
# TLS 1.2 suites offered: forward secret (ECDHE) and authenticated encryption (AES-GCM, ChaCha20-Poly1305)
# only; the CBC suites (HMAC-SHA1/SHA256/SHA384, MAC-then-encrypt) are left out. TLS 1.3 is not affected.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
CONTROL_SOCKET = Path("run") / "gunicorn.ctl"


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


def control_socket(home: Path) -> Path:
    """The service's own gunicorn control socket, under its home: ``<home>/run/gunicorn.ctl``."""
    return home / CONTROL_SOCKET


def tls_options(
    *,
    bind: str,
    cert: str,
    key: str,
    threads: int,
    home: Path,
    graceful_timeout: int = 10,
    workers: int = 1,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
) -> dict[str, Any]:
    """gunicorn settings: ``workers`` gthread workers whose requests' TLS handshake and headers must arrive
    within ``header_timeout`` seconds (:mod:`updater.https.worker`), the certificate and key, AEAD-only TLS
    1.2 suites, the control socket under ``home``, access and error logs on stdout."""
    if not cert or not key:
        raise ValueError("an HTTPS service needs both a certificate and a key")
    return {
        "bind": bind,
        "workers": workers,
        "worker_class": guarded_worker(header_timeout),
        "threads": threads,
        "certfile": cert,
        "keyfile": key,
        "ciphers": TLS12_CIPHERS,
        "control_socket": str(control_socket(home)),
        "control_socket_mode": 0o600,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": "info",
        "timeout": 120,
        "graceful_timeout": graceful_timeout,
        "access_log_format": ACCESS_LOG_FORMAT,
    }


def serve(app: Flask, options: dict[str, Any]) -> None:
    """Serve ``app`` with ``options`` (from :func:`tls_options`) until SIGTERM/SIGINT."""
    run_dir = Path(options["control_socket"]).parent
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    run_dir.chmod(0o700)
    _Gunicorn(app, options).run()
