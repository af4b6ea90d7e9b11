"""The store's tests (tests/unit/test_store.py) on both backends: SQLite and a real PostgreSQL server.

The unit module's tests are imported here and pick up this module's ``engine`` fixture, which is
parametrised over the two backends, so one specification covers both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.postgres import PostgresServer
from tests.unit.test_store import *  # noqa: F403 - the same specification, run against each backend
from updater.store.db import make_engine, migrate


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'updater.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database()
    engine = make_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


def test_the_postgresql_backend_really_is_postgresql(postgres: PostgresServer) -> None:
    engine = make_engine(postgres.create_database())
    try:
        migrate(engine)
        with engine.connect() as connection:
            assert connection.dialect.name == "postgresql"
            tables = set(sa.inspect(connection).get_table_names())
        assert {
            "users",
            "api_tokens",
            "releases",
            "rollouts",
            "rollout_steps",
            "rollout_log",
            "audit_log",
        } <= tables
    finally:
        engine.dispose()
