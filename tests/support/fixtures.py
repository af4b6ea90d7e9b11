"""Fixtures several tiers share, registered for all of them by ``pytest_plugins`` in tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """A real ``redis-server`` on loopback, one per test module (nothing on disk; removed at the end)."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on loopback, one per test module; ``create_database()`` gives each test its
    own database."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
