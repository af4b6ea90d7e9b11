"""Accounts as the operator manages them: add a user, issue an API token, disable or enable a user.

The web UI, the API and ``corral-updater`` call these same functions; each adapter only parses its input
and renders the result. A function validates, changes the store and writes its ``ok`` audit entry in the
caller's transaction (both land or neither). A refusal raises :class:`auth.BadInput`,
:class:`queries.AlreadyExists` or :class:`queries.NotFound` before anything is written; the adapter that
audits refusals records it in a transaction of its own (``audit.record_separately``).

Kept apart from :mod:`auth` (credentials, tokens, roles, redaction: what every request needs) because these
are the operator's mutations, each with its audit entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from updater.services.accounts import audit, auth, sessions
from updater.store import queries
from updater.store.models import Role, User


@dataclass(frozen=True)
class Actor:
    """Who asks (a username, or ``cli:<login>`` on the host) and from where (the client address, if any)."""

    name: str
    source_ip: str | None = None


@dataclass(frozen=True)
class NewUser:
    user: User
    password: str = field(repr=False)  # generated, shown once; only its argon2id hash is stored


def add_user(db: Session, actor: Actor, username: str, role: str) -> NewUser:
    """Create ``username`` with ``role`` (text, as typed) and a generated password."""
    parsed = auth.parse_role(role)
    password = auth.generate_password()
    user = auth.create_user(db, username, password, parsed)
    _record(db, actor, "user.add", username, detail=f"role {parsed}")
    return NewUser(user, password)


def issue_token(db: Session, actor: Actor, username: str, name: str, *, valid_days: int | None = None) -> str:
    """A new API token named ``name`` for ``username``; the returned text is its only clear copy."""
    user = queries.get_user(db, username)
    token = auth.create_token(db, user, name, valid_days=valid_days)
    _record(db, actor, "token.create", username, detail=f"token {name}")
    return token


def set_disabled(db: Session, actor: Actor, username: str, *, disabled: bool) -> User:
    """Disable (or enable) ``username``; nobody disables their own account (they would be locked out).

    Disabling ends the user's web sessions, so enabling the account again does not bring a copied session
    cookie back to life (its tokens are refused while it is disabled and work again once enabled).
    """
    if disabled and username == actor.name:
        raise auth.BadInput("you cannot disable your own account")
    user = auth.set_disabled(db, username, disabled)
    if disabled:
        sessions.end_all(db, user)
    _record(db, actor, disabled_action(disabled), username)
    return user


def reset_password(db: Session, actor: Actor, username: str) -> str:
    """Give ``username`` a new generated password (returned, shown once) and end every session of theirs:
    whoever signed in with the old password is signed out at their next request."""
    user = queries.get_user(db, username)
    password = auth.generate_password()
    user.password_hash = auth.hash_password(password)
    sessions.end_all(db, user)
    _record(db, actor, "user.password_reset", username)
    return password


def disabled_action(disabled: bool) -> str:
    """The audit action of :func:`set_disabled` (adapters name it in their refusal entries)."""
    return "user.disable" if disabled else "user.enable"


def set_up_admin(db: Session, actor: Actor, username: str, *, reset: bool) -> str:
    """Create the first operator, or with ``reset`` give an existing one a new password, the operator role
    and an enabled account; returns the new password. Without ``reset`` an existing user is refused."""
    password = auth.generate_password()
    user = queries.find_user(db, username)
    if user is None:
        auth.create_user(db, username, password, Role.OPERATOR)
    elif not reset:
        raise queries.AlreadyExists(f"the database already has a user {username!r}")
    else:
        user.password_hash, user.role, user.disabled = auth.hash_password(password), Role.OPERATOR, False
        sessions.end_all(db, user)  # a new password: whoever signed in with the old one is signed out
    _record(db, actor, "init", username, detail="admin account set up")
    return password


def _record(db: Session, actor: Actor, action: str, target: str, *, detail: str = "") -> None:
    audit.record(db, actor=actor.name, action=action, target=target, source_ip=actor.source_ip, detail=detail)
