"""Self-update on a real PostgreSQL server: the new code migrates it, a failed migration is rolled back by
PostgreSQL's transactional DDL (no copy needed), and rollback is refused past what the old code knows."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.postgres_server import PostgresServer
from tests.unit import bundle_kit as kit_
from tests.unit.test_self_update import BROKEN_MIGRATION, NEW_REVISION, history, make_home, package, revision
from updater.services.installation import self_update as su
from updater.store.db import head_revision, make_engine


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_self_update_on_postgresql_migrates_rolls_back_a_failed_migration_and_refuses_rollback(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    url = postgres.create_database()
    config = make_home(tmp_path / "home", database_url=url)
    before = history(config)
    su.install(config, package(kit_.build_service_wheel(wheels, "0.2.0"), "0.2.0"))

    broken = kit_.build_service_wheel(
        wheels, "0.2.5", migration="9002_broken", migration_body=BROKEN_MIGRATION
    )
    with pytest.raises(su.SelfUpdateError, match="this migration has a bug") as failed:
        su.install(config, package(broken, "0.2.5"))
    assert (
        f"the database is still at revision {head_revision()} (the migration's transaction was rolled back)"
        in str(failed.value)
    )
    assert "half_9002_broken" not in tables(url)  # PostgreSQL rolled the DDL back with the transaction
    assert (su.current_version(config.home), revision(config), history(config)) == (
        "0.2.0",
        head_revision(),
        before,
    )

    new = kit_.build_service_wheel(wheels, "0.3.0", migration=NEW_REVISION)
    result = su.install(config, package(new, "0.3.0"))
    assert (result.database_revision_before, result.database_revision_after) == (
        head_revision(),
        NEW_REVISION,
    )
    assert f"selftest_{NEW_REVISION}" in tables(url)
    assert history(config) == before
    assert not (config.home / "venvs" / "0.3.0" / su.DATABASE_BACKUP).exists()  # SQLite only
    with pytest.raises(su.RollbackRefused, match=rf"revision {NEW_REVISION}, which service release 0.2.0"):
        su.rollback(config)
    assert su.current_version(config.home) == "0.3.0"
