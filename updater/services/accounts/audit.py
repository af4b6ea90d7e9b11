"""The audit log: every mutation, by whom, from where, and how it ended.

A successful mutation writes its entry in the same transaction as the change (both or neither). A refusal
rolls its transaction back, so :func:`record_separately` writes the refusal in a transaction of its own.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from updater.store import queries
from updater.store.db import transaction
from updater.store.models import AuditEntry, Outcome

MAX_DETAIL = 2000


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str = "",
    outcome: Outcome = Outcome.OK,
    source_ip: str | None = None,
    detail: str = "",
) -> AuditEntry:
    return queries.add_audit(
        session,
        actor=actor[:64],
        action=action[:64],
        target=target[:255],
        outcome=outcome,
        source_ip=source_ip,
        detail=detail[:MAX_DETAIL],
    )


def record_separately(
    factory: sessionmaker[Session],
    *,
    actor: str,
    action: str,
    target: str = "",
    outcome: Outcome,
    source_ip: str | None = None,
    detail: str = "",
) -> None:
    with transaction(factory) as session:
        record(
            session,
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            source_ip=source_ip,
            detail=detail,
        )
