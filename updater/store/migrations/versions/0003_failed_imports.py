"""failed imports: kept apart from releases, so a failed import never reserves a version

An import that failed verification used to record a ``releases`` row for the version its (unverified)
manifest claimed; the channel check skips versions it already knows, so the genuine release of that version
was never offered. Such rows move to ``failed_imports``: imported, never staged, never installed, never the
target of a rollout, and with a failed check.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 18:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    failed_imports = op.create_table(
        "failed_imports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("import_id", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("claimed_version", sa.String(length=64), nullable=True),
        sa.Column("failed_check", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_failed_imports")),
        sa.UniqueConstraint("import_id", name=op.f("uq_failed_imports_import_id")),
    )
    with op.batch_alter_table("failed_imports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_failed_imports_at"), ["at"], unique=False)
    _move_failed_imports_out_of_releases(failed_imports)


def _move_failed_imports_out_of_releases(failed_imports: sa.Table) -> None:
    bind = op.get_bind()
    releases = sa.table(
        "releases",
        sa.column("id", sa.Integer),
        sa.column("version", sa.String),
        sa.column("source", sa.String),
        sa.column("staged_path", sa.String),
        sa.column("installed_at", sa.DateTime(timezone=True)),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    checks = sa.table(
        "release_checks",
        sa.column("release_id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("passed", sa.Boolean),
        sa.column("detail", sa.Text),
    )
    rollouts = sa.table("rollouts", sa.column("target_release_id", sa.Integer))
    downloads = sa.table("release_downloads", sa.column("release_id", sa.Integer))
    failed_check = (
        sa.select(checks.c.release_id, checks.c.name, checks.c.detail)
        .where(checks.c.passed.is_(False))
        .subquery()
    )
    rows = bind.execute(
        sa.select(
            releases.c.id,
            releases.c.version,
            releases.c.created_at,
            failed_check.c.name,
            failed_check.c.detail,
        )
        .join(failed_check, failed_check.c.release_id == releases.c.id)
        .where(
            releases.c.source == "imported",
            releases.c.staged_path.is_(None),
            releases.c.installed_at.is_(None),
            ~sa.exists().where(rollouts.c.target_release_id == releases.c.id),
        )
        .order_by(releases.c.id)
    ).all()
    moved: list[int] = []
    for release_id, version, created_at, check, detail in rows:
        if release_id in moved:
            continue  # one row per release, its first failed check
        moved.append(release_id)
        bind.execute(
            failed_imports.insert().values(
                import_id=f"release-row-{release_id}",
                filename="(recorded before 0003)",
                actor="-",
                claimed_version=version,
                failed_check=check,
                message=f"{check}: {detail}",
                at=created_at,
            )
        )
    if moved:
        bind.execute(sa.delete(checks).where(checks.c.release_id.in_(moved)))
        bind.execute(sa.delete(downloads).where(downloads.c.release_id.in_(moved)))
        bind.execute(sa.delete(releases).where(releases.c.id.in_(moved)))


def downgrade() -> None:
    # Failed imports are dropped with the table; none goes back to releases (that would reserve its version).
    with op.batch_alter_table("failed_imports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_failed_imports_at"))
    op.drop_table("failed_imports")
