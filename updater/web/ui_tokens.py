"""The Users page's API-token action: revoke a token (the list is on the page itself, ``ui.users``).

Nested in the ``ui`` blueprint, so its sign-in and CSRF checks apply. A viewer may revoke their own tokens,
only an operator anyone's (``tokens.revoke`` decides; a refusal is a 403 audited like every role refusal).
"""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, request, url_for
from werkzeug.wrappers import Response

from updater.services.accounts import auth, tokens
from updater.services.accounts.users import Actor
from updater.store import queries
from updater.store.db import transaction
from updater.store.models import Role
from updater.web.api_tokens import audit_refused_revoke
from updater.web.context import web_context
from updater.web.security import refuse_for_role, requires

tokens_ui = Blueprint("tokens", __name__)


@tokens_ui.post("/users/<username>/tokens/<token_id>/revoke")
@requires(Role.VIEWER)  # and an operator for another user's token (tokens.revoke checks)
def revoke(username: str, token_id: str) -> Response:
    actor = Actor(g.user.username, request.remote_addr)
    try:
        with transaction(web_context().sessions) as db:
            name = tokens.revoke(db, actor, username, token_id, role=g.user.role).name
    except auth.Forbidden:
        refuse_for_role(g.user, Role.OPERATOR)
    except queries.NotFound as error:
        audit_refused_revoke(actor, username, error)
        flash(str(error), "error")
        return redirect(url_for("ui.users"))
    flash(f"API token {name} of {username} revoked: it is refused from now on.", "info")
    return redirect(url_for("ui.users"))
