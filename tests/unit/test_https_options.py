"""The gunicorn settings of both HTTPS services: each its own control socket, AEAD-only TLS 1.2 suites.

The served behaviour (a CBC-only client refused, the sockets in place) is in
tests/integration/test_https_tls.py; this checks the update service's own settings without serving."""

from __future__ import annotations

import ssl
from pathlib import Path

from updater.config import ServiceConfig
from updater.https import server as tlsserve
from updater.server import wsgi as server_wsgi
from updater.web import wsgi as web_wsgi


def test_each_service_has_its_own_control_socket_under_its_home(tmp_path: Path) -> None:
    service = web_wsgi.gunicorn_options(ServiceConfig(home=tmp_path / "service", secret_key=b"k" * 32))
    server = server_wsgi.gunicorn_options(
        tmp_path / "server", host="127.0.0.1", port=8443, cert="c.pem", key="k.pem"
    )
    assert service["control_socket"] == str(tmp_path / "service" / "run" / "gunicorn.ctl")
    assert server["control_socket"] == str(tmp_path / "server" / "run" / "gunicorn.ctl")
    assert service["control_socket_mode"] == server["control_socket_mode"] == 0o600


def test_tls_1_2_suites_are_ecdhe_with_aes_gcm_or_chacha20_poly1305_only(tmp_path: Path) -> None:
    options = web_wsgi.gunicorn_options(ServiceConfig(home=tmp_path, secret_key=b"k" * 32))
    assert options["ciphers"] == tlsserve.TLS12_CIPHERS
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers(options["ciphers"])
    tls12 = [c for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    for cipher in tls12:
        assert cipher["kea"] == "kx-ecdhe", cipher["name"]
        assert cipher["aead"], cipher["name"]
