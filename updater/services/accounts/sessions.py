"""Web sign-ins that the server can end: sign-out, a password change and disabling a user end them at once.

The session cookie is signed but carries no authority of its own: it names a random session id, and a row
with that id's SHA-256 (``web_sessions``) must exist for the cookie to sign anyone in. Deleting the row ends
the session for every copy of the cookie, which a signature and a lifetime alone could not do (a cookie
copied before sign-out stayed valid for the rest of its 8 hours).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy.orm import Session

from updater.store import queries
from updater.store.models import User, utcnow


def _id_hash(session_id: str) -> str:
    # The id carries 256 random bits, so a fast hash is enough; the database never holds a usable id.
    return hashlib.sha256(session_id.encode()).hexdigest()


def begin(db: Session, user: User, *, lifetime_seconds: int) -> str:
    """A new session of ``user`` lasting ``lifetime_seconds``; returns its id, for the signed cookie only.

    Expired sessions of anyone are deleted on the way (they can never sign in again), so the table holds
    only live sessions and the ones ended since the last sign-in.
    """
    now = utcnow()
    queries.delete_web_sessions(db, expired_at=now)
    session_id = secrets.token_urlsafe(32)
    queries.add_web_session(
        db, user, id_hash=_id_hash(session_id), expires_at=now + timedelta(seconds=lifetime_seconds)
    )
    return session_id


def user_for(db: Session, session_id: str) -> User | None:
    """The user signed in by ``session_id``, or ``None`` if that session ended, expired or its user is
    disabled."""
    record = queries.find_web_session(db, _id_hash(session_id))
    if record is None or record.expires_at <= utcnow() or record.user.disabled:
        return None
    return record.user


def end(db: Session, session_id: str) -> None:
    """End one session (sign-out): every copy of its cookie stops working at its next request."""
    queries.delete_web_sessions(db, id_hash=_id_hash(session_id))


def end_all(db: Session, user: User) -> int:
    """End every session of ``user`` (password changed, user disabled); returns how many were live."""
    return queries.delete_web_sessions(db, user=user)
