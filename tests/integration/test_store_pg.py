"""The store's tests (tests/unit/test_store.py) on a real PostgreSQL server.

The unit module's tests are imported here and pick up this module's ``engine`` fixture, a database on
the tier's PostgreSQL server, so one specification covers both backends: the unit tier runs it on SQLite,
this tier on PostgreSQL (test ids ``...[postgresql]``). The SQLite run is not repeated here: it would count
the same tests twice towards the tier minimums.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.postgres_server import PostgresServer
from tests.unit.test_store import *  # noqa: F403 - the same specification, run on PostgreSQL
from updater.cli.updater import main
from updater.config import load_config
from updater.store.db import make_engine, migrate
from updater.web import create_app


@pytest.fixture(params=["postgresql"])
def engine(postgres: PostgresServer) -> Iterator[sa.Engine]:
    engine = make_engine(postgres.create_database())
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


def test_the_service_runs_on_postgresql_from_init_to_an_audited_api_call(
    postgres: PostgresServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres.create_database()
    home = tmp_path / "home"
    assert main(["--home", str(home), "init", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert not (home / "updater.db").exists()
    # A second init against the same database would silently take over its admin: refused without --force.
    again = main(["--home", str(tmp_path / "other"), "init", "--database-url", url])
    assert again == 2
    assert "already has a user 'admin'" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
    assert main(["--home", str(home), "token", "create", "admin", "--name", "pg"]) == 0
    token = capsys.readouterr().out.strip()
    app = create_app(load_config(home))
    client = app.test_client()
    created = client.post(
        "/api/v1/users",
        json={"username": "vera", "role": "viewer"},
        headers={"Authorization": f"Bearer {token}"},
        base_url="https://localhost",
    )
    assert created.status_code == 201
    entries = client.get(
        "/api/v1/audit", headers={"Authorization": f"Bearer {token}"}, base_url="https://localhost"
    ).get_json()["entries"]
    assert [(e["actor"], e["action"], e["target"]) for e in entries][:2] == [
        ("admin", "user.add", "vera"),
        (entries[1]["actor"], "token.create", "admin"),
    ]
    assert "password:" in out
    app.extensions["corral"].engine.dispose()
