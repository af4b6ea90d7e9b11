"""API tokens under ``/api/v1/users/<username>/tokens``: list a user's tokens, revoke one (creating one is
in :mod:`updater.web.api`). A viewer may revoke their own tokens, only an operator anyone's; every revoke is
audited by the service, a refusal here."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound

from updater.services.accounts import audit, auth, tokens
from updater.services.accounts.users import Actor
from updater.store import queries
from updater.store.db import transaction
from updater.store.models import Outcome, Role
from updater.views.json_views import token_json
from updater.web.context import web_context
from updater.web.security import refuse_for_role, requires

tokens_api = Blueprint("tokens", __name__)


@tokens_api.get("/users/<username>/tokens")
@requires(Role.VIEWER)
def list_tokens(username: str) -> ResponseReturnValue:
    with transaction(web_context().sessions) as db:
        try:
            return jsonify({"tokens": [token_json(t) for t in tokens.list_tokens(db, username)]})
        except queries.NotFound as error:
            raise NotFound(str(error)) from None


@tokens_api.post("/users/<username>/tokens/<token_id>/revoke")
@requires(Role.VIEWER)  # and an operator for another user's token (tokens.revoke checks)
def revoke_token(username: str, token_id: str) -> ResponseReturnValue:
    actor = Actor(g.user.username, request.remote_addr)
    try:
        with transaction(web_context().sessions) as db:
            return jsonify(token_json(tokens.revoke(db, actor, username, token_id, role=g.user.role)))
    except auth.Forbidden:
        refuse_for_role(g.user, Role.OPERATOR)
    except queries.NotFound as error:
        audit_refused_revoke(actor, username, error)
        raise NotFound(str(error)) from None


def audit_refused_revoke(actor: Actor, username: str, error: Exception) -> None:
    """A revoke of a token the user does not have is audited as refused (the API and the Users page alike);
    the refused request's own transaction is rolled back, so the entry is written in its own."""
    audit.record_separately(
        web_context().sessions,
        actor=actor.name,
        action="token.revoke",
        target=username,
        outcome=Outcome.REFUSED,
        source_ip=actor.source_ip,
        detail=str(error),
    )
