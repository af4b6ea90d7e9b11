"""Alembic environment: migrations run programmatically (``updater.store.db.migrate``) on a given engine."""

from __future__ import annotations

from alembic import context

from updater.store.models import Base

engine = context.config.attributes.get("engine")
if engine is None:
    raise RuntimeError("run migrations through updater.store.db.migrate (corral-updater migrate)")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
