"""The HTTPS launcher both services share (updater.https.server), on a real served update server over
loopback: what TLS it offers, and that each service has its own gunicorn control socket."""

from __future__ import annotations

import socket
import ssl
import stat
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import Tls

CBC_SUITES = (
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:"
    "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:AES128-SHA256:AES256-SHA256"
)


def _handshake(url: str, tls: Tls, configure: Callable[[ssl.SSLContext], None]) -> tuple[str, str]:
    """TLS version and cipher the server agrees to with a client configured by ``configure``."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    configure(context)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as connection,
    ):
        version, cipher = connection.version(), connection.cipher()
        assert version is not None
        assert cipher is not None
        return version, cipher[0]


def _tls12(context: ssl.SSLContext) -> None:
    context.maximum_version = ssl.TLSVersion.TLSv1_2


def _tls12_cbc_only(context: ssl.SSLContext) -> None:
    _tls12(context)
    context.set_ciphers(CBC_SUITES)


def test_tls_1_2_offers_aead_suites_only_and_a_cbc_only_client_is_refused(make_server: Any, tls: Tls) -> None:
    server = make_server()
    with pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|NO_SHARED_CIPHER|handshake failure"):
        _handshake(server.url, tls, _tls12_cbc_only)
    version, cipher = _handshake(server.url, tls, _tls12)
    assert version == "TLSv1.2"
    assert cipher.startswith("ECDHE-"), cipher
    assert "GCM" in cipher or "CHACHA20" in cipher, cipher
    assert _handshake(server.url, tls, lambda context: None)[0] == "TLSv1.3"


def test_each_server_has_its_own_control_socket_in_its_home(make_server: Any) -> None:
    first, second = make_server(), make_server()
    sockets = [server.home / "run" / "gunicorn.ctl" for server in (first, second)]
    for path in sockets:
        # gunicorn opens it from a thread once its worker runs, which may be just after the first answer
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert path.exists(), f"no control socket at {path}"
        assert stat.S_ISSOCK(path.stat().st_mode), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, path.parent
    assert sockets[0] != sockets[1]
