"""Sign-in state, CSRF and roles for the web app: the one place that decides who may call a view.

- The UI authenticates with a signed session cookie (Secure, HttpOnly, SameSite=Strict, limited lifetime)
  naming a server-side session (``services.accounts.sessions``) that sign-out, a password change or
  disabling the user ends; every form POST carries the session's CSRF token.
- The API authenticates only with ``Authorization: Bearer <token>`` and ignores cookies, so a browser
  cannot be tricked into calling it and it needs no CSRF token.
- Every view is wrapped by :func:`requires` (or explicitly marked :func:`public`); ``create_app`` refuses
  to start if a view is neither, so a new route cannot silently skip the role check.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar, cast

from flask import Flask, abort, g, redirect, request, session, url_for
from sqlalchemy.orm import Session
from werkzeug.exceptions import Forbidden as HTTPForbidden
from werkzeug.exceptions import Unauthorized

from updater.services.accounts import audit, auth, sessions
from updater.store.db import transaction
from updater.store.models import Outcome, Role, User
from updater.web.context import web_context

View = TypeVar("View", bound=Callable[..., Any])
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_FIELD = "csrf_token"
ROLE_ATTRIBUTE = "corral_required_role"
PUBLIC_ATTRIBUTE = "corral_public"


class SessionExpired(Unauthorized):
    description = "your session has expired; sign in again"


def public(view: View) -> View:
    """Mark a view that anyone may call (the login form, the OpenAPI document)."""
    setattr(view, PUBLIC_ATTRIBUTE, True)
    return view


def requires(role: Role) -> Callable[[View], View]:
    """Allow the view to a signed-in user with at least ``role``; refusals of mutations are audited."""

    def decorate(view: View) -> View:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            user: User | None = g.get("user")
            if user is None:
                raise Unauthorized("sign in first" if not g.get("api") else "a valid API token is required")
            if not auth.has_role(user.role, role):
                refuse_for_role(user, role)
            return view(*args, **kwargs)

        setattr(guarded, ROLE_ATTRIBUTE, role)
        return cast(View, guarded)

    return decorate


def refuse_for_role(user: User, needed: Role) -> NoReturn:
    """403 for ``user``, who lacks ``needed``; a refused mutation is audited under the endpoint's name.

    :func:`requires` calls it, and so does a view whose needed role depends on its object (a viewer may
    revoke their own API token, only an operator another's)."""
    if request.method in MUTATING_METHODS:
        audit.record_separately(
            web_context().sessions,
            actor=user.username,
            action=request.endpoint or request.path,
            target=request.path,
            outcome=Outcome.REFUSED,
            source_ip=request.remote_addr,
            detail=f"needs role {needed}",
        )
    raise HTTPForbidden(str(auth.Forbidden(user.role, needed)))


def unguarded_views(app: Flask) -> list[str]:
    """Endpoints whose view is neither :func:`public` nor wrapped by :func:`requires` (static files aside)."""
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        view = app.view_functions[rule.endpoint]
        if not getattr(view, PUBLIC_ATTRIBUTE, False) and getattr(view, ROLE_ATTRIBUTE, None) is None:
            missing.append(f"{rule.rule} ({rule.endpoint})")
    return missing


# --- UI sessions -------------------------------------------------------------------------------------------


def csrf_token() -> str:
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def check_csrf() -> None:
    """Refuse a mutating UI request whose form does not carry this session's CSRF token (400)."""
    if request.method not in MUTATING_METHODS:
        return
    expected = session.get(CSRF_FIELD)
    given = request.form.get(CSRF_FIELD, "")
    if (
        not isinstance(expected, str)
        or not given
        or not hmac.compare_digest(expected.encode(), given.encode())
    ):
        abort(400, description="missing or invalid CSRF token: reload the page and try again")


SESSION_ID = "sid"


def start_session(db: Session, user: User) -> None:
    """Sign ``user`` in: a new server-side session (in ``db``'s transaction) named by the cookie."""
    session.clear()
    session.permanent = True
    session["uid"] = user.id
    session["login_at"] = time.time()
    session[SESSION_ID] = sessions.begin(
        db, user, lifetime_seconds=web_context().config.session_lifetime_seconds
    )
    session[CSRF_FIELD] = secrets.token_urlsafe(32)  # a new token per sign-in (no fixation)


def end_session(db: Session) -> None:
    """Sign out: the server-side session ends (in ``db``'s transaction), so no copy of the cookie works."""
    session_id = session.get(SESSION_ID)
    if isinstance(session_id, str):
        sessions.end(db, session_id)
    session.clear()


def load_session_user() -> None:
    """Set ``g.user`` from the session cookie; an expired session is cleared and reported as such.

    The cookie signs in only while its server-side session lives: one ended by sign-out, a password change
    or disabling the user (or made before sessions were kept on the server) signs nobody in."""
    g.user = None
    uid, login_at, session_id = session.get("uid"), session.get("login_at"), session.get(SESSION_ID)
    if uid is None:
        return
    lifetime = web_context().config.session_lifetime_seconds
    if not isinstance(login_at, int | float) or time.time() - login_at > lifetime:
        session.clear()
        raise SessionExpired()
    user = None
    if isinstance(session_id, str):
        with transaction(web_context().sessions) as db:
            user = sessions.user_for(db, session_id)
    if user is None or user.id != uid:
        session.clear()
        return
    g.user = user


def load_token_user() -> None:
    """Set ``g.user`` from ``Authorization: Bearer``; a present but bad token is a 401 at once."""
    g.user = None
    g.api = True
    header = request.headers.get("Authorization", "")
    if not header:
        return
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("use 'Authorization: Bearer <token>'")
    try:
        with transaction(web_context().sessions) as db:
            g.user = auth.user_for_token(db, token.strip())
    except auth.InvalidToken as error:
        raise Unauthorized(str(error)) from None


def login_redirect() -> Any:
    return redirect(url_for("ui.login", next=request.path))
