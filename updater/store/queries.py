"""Reads and writes of the store, one function per question, used by the services (never by templates).

Functions take a session inside a transaction and never commit: the caller's unit of work decides, so a
mutation and its audit entry land together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from updater.domain.states import NodeState, RolloutState
from updater.store.models import (
    ApiToken,
    AuditEntry,
    FailedImport,
    Outcome,
    Release,
    ReleaseCheck,
    ReleaseSource,
    Role,
    Rollout,
    RolloutLogLine,
    RolloutStep,
    User,
    WebSession,
    utcnow,
)


class NotFound(LookupError):
    """The named object does not exist."""


class AlreadyExists(ValueError):
    """An object with this unique name already exists."""


# --- users and tokens -------------------------------------------------------------------------------------


def add_user(session: Session, username: str, password_hash: str, role: Role) -> User:
    if find_user(session, username) is not None:
        raise AlreadyExists(f"user {username!r} already exists")
    user = User(username=username, password_hash=password_hash, role=role)
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, username: str) -> User | None:
    return session.scalars(sa.select(User).where(User.username == username)).one_or_none()


def get_user(session: Session, username: str) -> User:
    user = find_user(session, username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def list_users(session: Session) -> Sequence[User]:
    return session.scalars(sa.select(User).order_by(User.username)).all()


def add_token(session: Session, user: User, *, token_id: str, secret_hash: str, name: str) -> ApiToken:
    token = ApiToken(user=user, token_id=token_id, secret_hash=secret_hash, name=name)
    session.add(token)
    session.flush()
    return token


def find_token(session: Session, token_id: str) -> ApiToken | None:
    return session.scalars(
        sa.select(ApiToken).options(selectinload(ApiToken.user)).where(ApiToken.token_id == token_id)
    ).one_or_none()


def list_tokens(session: Session, user: User | None = None) -> Sequence[ApiToken]:
    """Every API token (or ``user``'s), by user then creation, revoked ones included."""
    query = sa.select(ApiToken).options(selectinload(ApiToken.user)).join(ApiToken.user)
    if user is not None:
        query = query.where(ApiToken.user_id == user.id)
    return session.scalars(query.order_by(User.username, ApiToken.created_at, ApiToken.id)).all()


# --- web sessions ------------------------------------------------------------------------------------------


def add_web_session(session: Session, user: User, *, id_hash: str, expires_at: datetime) -> WebSession:
    record = WebSession(user=user, id_hash=id_hash, expires_at=expires_at)
    session.add(record)
    session.flush()
    return record


def find_web_session(session: Session, id_hash: str) -> WebSession | None:
    return session.scalars(
        sa.select(WebSession).options(selectinload(WebSession.user)).where(WebSession.id_hash == id_hash)
    ).one_or_none()


def delete_web_sessions(
    session: Session,
    *,
    id_hash: str | None = None,
    user: User | None = None,
    expired_at: datetime | None = None,
) -> int:
    """Delete the session ``id_hash``, every session of ``user``, or every one expired at ``expired_at``."""
    query = sa.delete(WebSession)
    if id_hash is not None:
        query = query.where(WebSession.id_hash == id_hash)
    if user is not None:
        query = query.where(WebSession.user_id == user.id)
    if expired_at is not None:
        query = query.where(WebSession.expires_at <= expired_at)
    if id_hash is None and user is None and expired_at is None:
        raise ValueError("delete_web_sessions needs a condition")
    return session.execute(query).rowcount  # type: ignore[attr-defined,no-any-return]


# --- audit -------------------------------------------------------------------------------------------------


def add_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str = "",
    outcome: Outcome,
    source_ip: str | None = None,
    detail: str = "",
    at: datetime | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        source_ip=source_ip,
        detail=detail,
        at=at or utcnow(),
    )
    session.add(entry)
    session.flush()
    return entry


def list_audit(session: Session, *, limit: int = 100, before_id: int | None = None) -> Sequence[AuditEntry]:
    query = sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return session.scalars(query).all()


# --- releases ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str = ""


def add_release(
    session: Session,
    *,
    version: str,
    channel: str,
    release_date: date,
    source: ReleaseSource,
    notes: str = "",
    staged_path: str | None = None,
    checks: Iterable[CheckResult] = (),
) -> Release:
    if find_release(session, version) is not None:
        raise AlreadyExists(f"release {version} is already known")
    release = Release(
        version=version,
        channel=channel,
        release_date=release_date,
        source=source,
        notes=notes,
        staged_path=staged_path,
        checks=[ReleaseCheck(name=c.name, passed=c.passed, detail=c.detail) for c in checks],
    )
    session.add(release)
    session.flush()
    return release


def find_release(session: Session, version: str) -> Release | None:
    return session.scalars(
        sa.select(Release).options(selectinload(Release.checks)).where(Release.version == version)
    ).one_or_none()


def list_releases(session: Session) -> Sequence[Release]:
    return session.scalars(
        sa.select(Release).options(selectinload(Release.checks)).order_by(Release.release_date.desc())
    ).all()


def add_failed_import(
    session: Session,
    *,
    import_id: str,
    filename: str,
    actor: str,
    claimed_version: str | None,
    failed_check: str | None,
    message: str,
    at: datetime | None = None,
) -> FailedImport:
    """Keep an import that failed (a repeated task for the same import keeps the first record)."""
    query = sa.select(FailedImport).where(FailedImport.import_id == import_id)
    existing = session.scalars(query).one_or_none()
    if existing is not None:
        return existing
    failed = FailedImport(
        import_id=import_id,
        filename=filename[:255],
        actor=actor[:64],
        claimed_version=claimed_version[:64] if claimed_version else None,
        failed_check=failed_check,
        message=message,
        at=at or utcnow(),
    )
    session.add(failed)
    session.flush()
    return failed


def list_failed_imports(session: Session, *, limit: int = 20) -> Sequence[FailedImport]:
    return session.scalars(sa.select(FailedImport).order_by(FailedImport.id.desc()).limit(limit)).all()


def installed_release(session: Session) -> Release | None:
    """The release most recently rolled out to every node (``installed_at`` set by a succeeded rollout)."""
    return session.scalars(
        sa.select(Release)
        .where(Release.installed_at.is_not(None))
        .order_by(Release.installed_at.desc())
        .limit(1)
    ).first()


def mark_installed(session: Session, release: Release, at: datetime | None = None) -> None:
    release.installed_at = at or utcnow()
    session.flush()


# --- rollouts ----------------------------------------------------------------------------------------------


def add_rollout(
    session: Session,
    *,
    rollout_id: str,
    release: Release,
    created_by: str,
    plan: dict[str, Any],
    nodes: Sequence[str],
) -> Rollout:
    """A planned rollout with one step per node, in plan order."""
    if session.get(Rollout, rollout_id) is not None:
        raise AlreadyExists(f"rollout {rollout_id} already exists")
    if len(set(nodes)) != len(nodes):
        raise ValueError("a rollout names each node once")
    rollout = Rollout(
        id=rollout_id,
        target_release=release,
        state=RolloutState.PLANNED,
        created_by=created_by,
        plan=plan,
        executed_order=[],
        steps=[RolloutStep(node=node, position=i, state=NodeState.ACTIVE) for i, node in enumerate(nodes)],
    )
    session.add(rollout)
    session.flush()
    return rollout


def get_rollout(session: Session, rollout_id: str) -> Rollout:
    rollout = session.scalars(
        sa.select(Rollout)
        .options(selectinload(Rollout.steps), selectinload(Rollout.target_release))
        .where(Rollout.id == rollout_id)
    ).one_or_none()
    if rollout is None:
        raise NotFound(f"no rollout {rollout_id!r}")
    return rollout


def list_rollouts(session: Session, *, limit: int = 50) -> Sequence[Rollout]:
    return session.scalars(
        sa.select(Rollout)
        .options(selectinload(Rollout.steps), selectinload(Rollout.target_release))
        .order_by(Rollout.created_at.desc(), Rollout.id)
        .limit(limit)
    ).all()


def latest_steps_by_node(session: Session) -> dict[str, RolloutStep]:
    """Each node's step in the most recent rollout that touched it (what the Overview shows as its state)."""
    steps = session.scalars(
        sa.select(RolloutStep).join(Rollout).order_by(Rollout.created_at.desc(), RolloutStep.id.desc())
    ).all()
    latest: dict[str, RolloutStep] = {}
    for step in steps:
        latest.setdefault(step.node, step)
    return latest


def append_log(
    session: Session, rollout_id: str, lines: Iterable[tuple[str | None, str, str]]
) -> list[RolloutLogLine]:
    """Append ``(node, stream, text)`` lines with consecutive sequence numbers after the last one.

    A rollout's log has two kinds of writers at once: the worker running it, and an operator's pause or abort.
    Each first writes the rollout's row (a no-op write that takes its row lock on PostgreSQL, the database's
    write lock on SQLite), so the second one reads the last number only after the first has committed: two
    readers of the same last number collided on the unique (rollout, seq) constraint, and the worker's
    rollout failed (seen on PostgreSQL when a pause arrived while the worker logged a task).
    """
    session.execute(
        sa.update(Rollout).where(Rollout.id == rollout_id).values(state=Rollout.state),
        execution_options={"synchronize_session": False},
    )
    last = session.scalar(
        sa.select(sa.func.max(RolloutLogLine.seq)).where(RolloutLogLine.rollout_id == rollout_id)
    )
    seq = 0 if last is None else last + 1
    added = []
    for node, stream, text in lines:
        line = RolloutLogLine(rollout_id=rollout_id, seq=seq, node=node, stream=stream, text=text)
        session.add(line)
        added.append(line)
        seq += 1
    session.flush()
    return added


def log_lines(
    session: Session, rollout_id: str, *, after_seq: int = -1, limit: int = 1000
) -> Sequence[RolloutLogLine]:
    return session.scalars(
        sa.select(RolloutLogLine)
        .where(RolloutLogLine.rollout_id == rollout_id, RolloutLogLine.seq > after_seq)
        .order_by(RolloutLogLine.seq)
        .limit(limit)
    ).all()
