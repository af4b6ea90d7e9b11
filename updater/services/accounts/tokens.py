"""API tokens as the operator manages them after issuing one (``users.issue_token``): list and revoke.

A revoked token authenticates nothing from the next request on (``auth.user_for_token`` reads its row on
every request). Operators revoke anyone's tokens; a viewer only their own (a viewer who leaked a token can
stop it without waiting for an operator). Every revocation is audited, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from sqlalchemy.orm import Session

from updater.services.accounts import audit, auth
from updater.services.accounts.users import Actor
from updater.store import queries
from updater.store.models import ApiToken, Role, utcnow


class TokenState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


def state(token: ApiToken) -> TokenState:
    """Whether ``token`` still authenticates (its user's being disabled aside: that is the user's state)."""
    if token.revoked:
        return TokenState.REVOKED
    if token.expires_at is not None and token.expires_at <= utcnow():
        return TokenState.EXPIRED
    return TokenState.ACTIVE


def list_tokens(db: Session, username: str | None = None) -> Sequence[ApiToken]:
    """``username``'s tokens (every user's without one), revoked and expired ones included."""
    return queries.list_tokens(db, queries.get_user(db, username) if username is not None else None)


def revoke(db: Session, actor: Actor, username: str, token_id: str, *, role: Role | None) -> ApiToken:
    """Revoke ``username``'s token ``token_id`` (the 16 hex digits after ``crl_``).

    ``role`` is the acting user's role, ``None`` for the host's administrator (the CLI, who may do anything):
    below operator, only one's own tokens (else :class:`auth.Forbidden`). A token already revoked stays so;
    the request is audited all the same.
    """
    if role is not None and username != actor.name:
        auth.require_role(role, Role.OPERATOR)
    user = queries.get_user(db, username)
    record = queries.find_token(db, token_id)
    if record is None or record.user_id != user.id:
        raise queries.NotFound(f"user {username!r} has no API token {token_id!r}")
    detail = f"token {record.name} ({record.token_id})"
    if record.revoked:
        detail += ": was already revoked"
    record.revoked = True
    audit.record(
        db, actor=actor.name, action="token.revoke", target=username, source_ip=actor.source_ip, detail=detail
    )
    return record
