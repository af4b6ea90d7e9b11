"""Slow or idle clients cannot starve the update service (issue 17 item 1): while an attacker keeps twice as
many connections open as the web tier has threads, each stuck in its TLS handshake or in request headers it
never finishes (reopened as soon as the server closes one), an authenticated request still answers.

The real ``corral-updater web`` (gunicorn over HTTPS) with one worker process of 4 threads and a 2 s header
timeout (``web_header_timeout_seconds``). Before the fix the held connections kept every thread for as long as
the attacker liked, and the request below timed out.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.web_service import WebService, running_web

THREADS = 4
SLOW_CONNECTIONS = 2 * THREADS
HEADER_TIMEOUT = 2


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebService]:
    inventory = {"nodes": {"hosts": ["n1", "n2", "n3"]}, "_meta": {"hostvars": {}}}
    settings = {"web_workers": 1, "web_threads": THREADS, "web_header_timeout_seconds": HEADER_TIMEOUT}
    with running_web(tmp_path_factory.mktemp("slow-clients"), inventory, settings=settings) as web:
        yield web


def _address(service: WebService) -> tuple[str, int]:
    host, port = service.base.removeprefix("https://").rsplit(":", 1)
    return host, int(port)


def _stuck_in_handshake(service: WebService) -> socket.socket:
    """A TCP connection that sent the first bytes of a TLS record and nothing more."""
    sock = socket.create_connection(_address(service), timeout=30)
    sock.sendall(b"\x16\x03\x01\x02\x00\x01")  # a handshake record header and the start of a ClientHello
    return sock


def _stuck_in_headers(service: WebService) -> socket.socket:
    """A TLS connection that sent a request line and one header, never the blank line that ends them."""
    context = ssl.create_default_context(cafile=service.ca)
    raw = socket.create_connection(_address(service), timeout=30)
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    sock.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server ended the connection (a read gives end of file or a reset), as opposed to this
    client giving up (a timeout) or closing it itself."""
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except (OSError, ssl.SSLError):
        return sock.fileno() != -1  # not closed from this side


class Attacker:
    """Keeps ``count`` slow connections open, half of each kind, opening a new one for each the server
    closes; counts the closes."""

    def __init__(self, service: WebService, count: int) -> None:
        self.service = service
        self.count = count
        self.stop = threading.Event()
        self.closed_by_server = 0
        self.errors: list[str] = []
        self.held: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._hold, args=(n,), daemon=True) for n in range(count)]

    def _hold(self, n: int) -> None:
        opener = _stuck_in_handshake if n % 2 == 0 else _stuck_in_headers
        while not self.stop.is_set():
            try:
                sock = opener(self.service)
            except OSError as error:  # the TLS handshake of the header kind may be cut too
                self.errors.append(f"{type(error).__name__}: {error}")
                continue
            sock.settimeout(None)  # held until the server ends it (or the test does)
            with self.lock:
                self.held.add(sock)
            try:
                if _closed_by_server(sock) and not self.stop.is_set():
                    self.closed_by_server += 1
            finally:
                with self.lock:
                    self.held.discard(sock)
                sock.close()

    def __enter__(self) -> Attacker:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        with self.lock:
            for sock in self.held:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def test_an_authenticated_request_answers_while_slow_clients_hold_more_connections_than_threads(
    service: WebService,
) -> None:
    with Attacker(service, SLOW_CONNECTIONS) as attacker:
        answer = requests.get(
            f"{service.base}/api/v1/whoami",
            headers={"Authorization": f"Bearer {service.token}"},
            timeout=60,
            verify=service.ca,
        )
        assert answer.status_code == 200
        assert answer.json()["username"] == "admin"
        status = requests.get(
            f"{service.base}/api/v1/status",
            headers={"Authorization": f"Bearer {service.token}"},
            timeout=60,
            verify=service.ca,
        )
        assert status.status_code == 200
    assert attacker.closed_by_server >= 1, "the server closed no slow connection"


def test_a_slow_connection_is_closed_by_the_server(service: WebService) -> None:
    """Each kind on its own: the server ends it (the client never gives up first)."""
    held = [_stuck_in_handshake(service), _stuck_in_headers(service)]
    for sock in held:
        with sock:
            sock.settimeout(HEADER_TIMEOUT + 30)
            assert _closed_by_server(sock)


def test_the_header_timeout_is_a_setting(tmp_path: Path) -> None:
    from updater.config import ServiceConfig
    from updater.web.wsgi import gunicorn_options

    options = gunicorn_options(ServiceConfig(home=tmp_path, web_header_timeout_seconds=7))
    assert options["worker_class"].header_timeout == 7
