"""gunicorn's threaded worker with a deadline on each request's TLS handshake and headers.

gunicorn's ``gthread`` worker hands a connection to a thread as soon as it has a byte to read; the thread
then does the TLS handshake and reads the request headers in blocking calls with no time limit. Sixteen
clients that start a request and never finish its headers (slowloris) held all sixteen threads of the update
service, for as long as they liked (issue 17: eleven minutes in one run). gunicorn has no setting for it.

:class:`GuardedThreadWorker` keeps the worker as it is (its poller, keep-alive, thread pool) and adds a
watch: from the moment a thread takes a connection until that request's headers are parsed, the connection
has ``header_timeout`` seconds (plus the worker's own wait for a first byte on a new connection); the
worker's main loop, which wakes at least once a second, shuts down a connection past its deadline, so the
blocked read returns and the thread is free. Bodies are not under this deadline (a bundle upload may take
minutes); the request's own handling is under gunicorn's ``timeout``.

Why not another worker model: gevent's worker would make every connection cheap, but it patches the
standard library after the app (its database pool, its locks) was built in the parent, where a lock taken
across a yield can block the whole worker; a buffering front (HAProxy, nginx) is one more service to deploy,
configure and keep up for every installation. This is forty lines over a pinned gunicorn.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any

from gunicorn.workers import gthread  # type: ignore[import-untyped]

DEFAULT_HEADER_TIMEOUT = 10.0


class GuardedThreadWorker(gthread.ThreadWorker):  # type: ignore[misc]
    """``gthread`` with a deadline on each request's handshake and headers (``header_timeout`` seconds)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # id(conn) -> (deadline, a duplicate of its socket's descriptor). The duplicate is ours: whoever takes
        # the entry out (the thread, its headers in; or the main loop, too late) closes it, so a descriptor
        # number reused meanwhile by another connection is never shut down by mistake.
        self._watched: dict[int, tuple[float, int]] = {}
        self._watch_lock = threading.Lock()

    def handle(self, conn: Any) -> Any:
        """Runs in a worker thread: the whole of one request on ``conn``, headers under a deadline."""
        allowance = self.header_timeout
        if not conn.initialized and not conn.data_ready:  # gthread first waits this long for a byte
            allowance += gthread.DEFAULT_WORKER_DATA_TIMEOUT
        with self._watch_lock:
            self._watched[id(conn)] = (time.monotonic() + allowance, os.dup(conn.sock.fileno()))
        try:
            return super().handle(conn)
        finally:
            self._unwatch(conn)

    def handle_request(self, req: Any, conn: Any) -> Any:
        self._unwatch(conn)  # the headers are in: the rest is the app's time
        return super().handle_request(req, conn)

    def _unwatch(self, conn: Any) -> None:
        with self._watch_lock:
            entry = self._watched.pop(id(conn), None)
        if entry is not None:
            os.close(entry[1])

    def murder_keepalived(self, force: bool = False) -> None:
        """The main loop's housekeeping (at least once a second): idle keep-alive connections, then the
        connections whose handshake or headers are late."""
        super().murder_keepalived(force)
        now = time.monotonic()
        with self._watch_lock:
            late = [(key, fd) for key, (deadline, fd) in self._watched.items() if deadline <= now]
            for key, _ in late:
                del self._watched[key]
        for _, fd in late:
            _shut_down(fd)
            self.log.info("closed a connection that sent no complete request headers in time")


def _shut_down(duplicate: int) -> None:
    """Shut the connection behind our ``duplicate`` descriptor down for both directions (shutdown acts on
    the connection, not the descriptor), so the thread blocked reading it wakes up; then close it. The
    thread closes its own descriptor as it unwinds."""
    with socket.socket(fileno=duplicate) as sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def guarded_worker(header_timeout: float) -> type[GuardedThreadWorker]:
    """The worker class for gunicorn's ``worker_class`` with this ``header_timeout``."""
    return type("GuardedThreadWorker", (GuardedThreadWorker,), {"header_timeout": header_timeout})
