"""The update service's tables (SQLAlchemy 2 typed ORM).

The database is history and what the UI shows. ZooKeeper stays the authority for the cluster update lock and
per-node progress (DESIGN.md §7): nothing here is a lock, and a rollout row's state is a copy for display.
Every change to these models needs an Alembic migration (``updater/store/migrations``); a test checks that
models and migrations agree.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from updater.domain.states import NodeState, RolloutState


class Role(StrEnum):
    VIEWER = "viewer"  # reads everything the UI and API show
    OPERATOR = "operator"  # also imports, applies, pauses, aborts, breaks locks, manages users


class ReleaseSource(StrEnum):
    PULLED = "pulled"
    IMPORTED = "imported"


class Outcome(StrEnum):
    OK = "ok"
    REFUSED = "refused"  # bad input or missing permission: nothing changed
    FAILED = "failed"  # attempted and failed


class DownloadState(StrEnum):
    RUNNING = "running"  # or its worker died: the next download of the release resumes the partial file
    INTERRUPTED = "interrupted"  # the connection broke; the partial file is kept to resume
    FAILED = "failed"  # refused by the channel or by a check (a failed check removes the downloaded bytes)
    STAGED = "staged"  # verified and staged


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the backend keeps (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _enum(enum: type[StrEnum], name: str) -> sa.Enum:
    return sa.Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: sa.JSON(),
        list[Any]: sa.JSON(),
    }


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(default=False)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")


class ApiToken(Base):
    """Only a hash of the token's secret is kept; the token itself is shown once, at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[str] = mapped_column(sa.String(32), unique=True)  # public part, finds the row
    secret_hash: Mapped[str] = mapped_column(sa.String(64))  # SHA-256 hex of the secret part
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(default=False)

    user: Mapped[User] = relationship(back_populates="tokens")


class WebSession(Base):
    """A signed-in browser, so that a sign-in can be ended on the server (sign-out, password change, user
    disabled): the session cookie carries a random session id and only its SHA-256 is kept here. Without its
    row a cookie, or any copy of it, signs nobody in, whatever its signature and age."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    id_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)

    user: Mapped[User] = relationship()


class Release(Base):
    __tablename__ = "releases"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(sa.String(64), unique=True)
    channel: Mapped[str] = mapped_column(sa.String(32))
    release_date: Mapped[date]
    notes: Mapped[str] = mapped_column(sa.Text, default="")
    source: Mapped[ReleaseSource] = mapped_column(_enum(ReleaseSource, "release_source"))
    staged_path: Mapped[str | None] = mapped_column(sa.String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    installed_at: Mapped[datetime | None]  # set when a rollout to it succeeded on every node

    checks: Mapped[list[ReleaseCheck]] = relationship(
        back_populates="release", cascade="all, delete-orphan", order_by="ReleaseCheck.id"
    )


class ReleaseCheck(Base):
    """The result of one verification check of a release's bundle (signature, license, hashes, …)."""

    __tablename__ = "release_checks"
    __table_args__ = (sa.UniqueConstraint("release_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    release_id: Mapped[int] = mapped_column(sa.ForeignKey("releases.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(64))
    passed: Mapped[bool]
    detail: Mapped[str] = mapped_column(sa.Text, default="")
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)

    release: Mapped[Release] = relationship(back_populates="checks")


class FailedImport(Base):
    """An uploaded bundle that failed an import: never a release, so it reserves no version.

    ``claimed_version`` is what the bundle's unverified manifest says (``None`` when it has none): shown to
    the operator, never trusted. A ``releases`` row exists only for a bundle that verified and was staged,
    or that the signed channel metadata offers.
    """

    __tablename__ = "failed_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    import_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    filename: Mapped[str] = mapped_column(sa.String(255))  # the display name: no control characters
    actor: Mapped[str] = mapped_column(sa.String(64))
    claimed_version: Mapped[str | None] = mapped_column(sa.String(64))
    failed_check: Mapped[str | None] = mapped_column(sa.String(64))  # None: refused before any check ran
    message: Mapped[str] = mapped_column(sa.Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ReleaseDownload(Base):
    """Progress of the latest download of a release from the channel, for the UI (one row per release)."""

    __tablename__ = "release_downloads"

    id: Mapped[int] = mapped_column(primary_key=True)
    release_id: Mapped[int] = mapped_column(sa.ForeignKey("releases.id", ondelete="CASCADE"), unique=True)
    state: Mapped[DownloadState] = mapped_column(_enum(DownloadState, "download_state"))
    bytes_done: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    resumed_from: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # bytes already there at the start
    started_by: Mapped[str] = mapped_column(sa.String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    failed_check: Mapped[str | None] = mapped_column(sa.String(64))
    message: Mapped[str] = mapped_column(sa.Text, default="")


class Rollout(Base):
    """History of one rollout. ``id`` is the rollout id that holds the cluster lock in ZooKeeper."""

    __tablename__ = "rollouts"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    target_release_id: Mapped[int] = mapped_column(sa.ForeignKey("releases.id"), index=True)
    state: Mapped[RolloutState] = mapped_column(_enum(RolloutState, "rollout_state"))
    created_by: Mapped[str] = mapped_column(sa.String(64))  # a username, kept even if the user goes
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    plan: Mapped[dict[str, Any]] = mapped_column(default=dict)
    executed_order: Mapped[list[Any]] = mapped_column(default=list)
    probe_report: Mapped[dict[str, Any] | None]

    target_release: Mapped[Release] = relationship()
    steps: Mapped[list[RolloutStep]] = relationship(
        back_populates="rollout", cascade="all, delete-orphan", order_by="RolloutStep.position"
    )


class RolloutStep(Base):
    """One node's part of a rollout, as shown in the UI; durations per phase in seconds."""

    __tablename__ = "rollout_steps"
    __table_args__ = (sa.UniqueConstraint("rollout_id", "node"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[str] = mapped_column(sa.ForeignKey("rollouts.id", ondelete="CASCADE"))
    node: Mapped[str] = mapped_column(sa.String(255))
    position: Mapped[int]
    state: Mapped[NodeState] = mapped_column(_enum(NodeState, "node_state"))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    phase_seconds: Mapped[dict[str, Any]] = mapped_column(default=dict)
    message: Mapped[str] = mapped_column(sa.Text, default="")

    rollout: Mapped[Rollout] = relationship(back_populates="steps")

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class RolloutLogLine(Base):
    __tablename__ = "rollout_log"
    __table_args__ = (sa.UniqueConstraint("rollout_id", "seq"),)

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True)
    rollout_id: Mapped[str] = mapped_column(sa.ForeignKey("rollouts.id", ondelete="CASCADE"))
    seq: Mapped[int]
    node: Mapped[str | None] = mapped_column(sa.String(255))
    stream: Mapped[str] = mapped_column(sa.String(16))  # stdout | stderr | event
    text: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Every mutation, whoever made it and however it ended (refusals included)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(sa.String(64))
    action: Mapped[str] = mapped_column(sa.String(64))
    target: Mapped[str] = mapped_column(sa.String(255), default="")
    outcome: Mapped[Outcome] = mapped_column(_enum(Outcome, "outcome"))
    source_ip: Mapped[str | None] = mapped_column(sa.String(45))
    detail: Mapped[str] = mapped_column(sa.Text, default="")
