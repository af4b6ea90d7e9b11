"""The JSON API under ``/api/v1``: bearer-token auth, the same service functions as the UI and the CLI.

Every route is described in :mod:`updater.web.openapi` (a test checks that none is missing).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, Conflict, NotFound

from updater.services.accounts import audit, auth
from updater.services.accounts import users as accounts
from updater.services.installation.overview import build_overview
from updater.store import queries
from updater.store.db import transaction
from updater.store.models import Outcome, Role
from updater.views.json_views import audit_json, release_json, rollout_json, user_json
from updater.web.api_releases import releases_api
from updater.web.api_rollouts import rollouts_api
from updater.web.api_tokens import tokens_api
from updater.web.context import web_context
from updater.web.openapi import openapi_document
from updater.web.params import int_arg
from updater.web.security import load_token_user, public, requires

api = Blueprint("api", __name__, url_prefix="/api/v1")
api.register_blueprint(releases_api)
api.register_blueprint(rollouts_api)
api.register_blueprint(tokens_api)

__all__ = ["api"]


@api.before_request
def _authenticate() -> None:
    load_token_user()


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object (Content-Type: application/json)")
    return data


def _text_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"field {name!r} must be a string")
    return value


def _refused(action: str, target: str, error: Exception) -> None:
    audit.record_separately(
        web_context().sessions,
        actor=g.user.username,
        action=action,
        target=target,
        outcome=Outcome.REFUSED,
        source_ip=request.remote_addr,
        detail=str(error),
    )


@api.get("/openapi.json")
@public
def openapi() -> ResponseReturnValue:
    return jsonify(openapi_document())


@api.get("/whoami")
@requires(Role.VIEWER)
def whoami() -> ResponseReturnValue:
    return jsonify(user_json(g.user))


@api.get("/status")
@requires(Role.VIEWER)
def status() -> ResponseReturnValue:
    context = web_context()
    with transaction(context.sessions) as db:
        return jsonify(build_overview(db, context.config).as_json())


@api.get("/releases")
@requires(Role.VIEWER)
def releases() -> ResponseReturnValue:
    with transaction(web_context().sessions) as db:
        return jsonify({"releases": [release_json(r) for r in queries.list_releases(db)]})


@api.get("/rollouts")
@requires(Role.VIEWER)
def rollouts() -> ResponseReturnValue:
    limit = int_arg("limit", default=50, minimum=1, maximum=500) or 50
    with transaction(web_context().sessions) as db:
        return jsonify({"rollouts": [rollout_json(r) for r in queries.list_rollouts(db, limit=limit)]})


@api.get("/rollouts/<rollout_id>")
@requires(Role.VIEWER)
def rollout(rollout_id: str) -> ResponseReturnValue:
    with transaction(web_context().sessions) as db:
        try:
            return jsonify(rollout_json(queries.get_rollout(db, rollout_id)))
        except queries.NotFound as error:
            raise NotFound(str(error)) from None


@api.get("/rollouts/<rollout_id>/log")
@requires(Role.VIEWER)
def rollout_log(rollout_id: str) -> ResponseReturnValue:
    after = int_arg("after")
    with transaction(web_context().sessions) as db:
        try:
            queries.get_rollout(db, rollout_id)
        except queries.NotFound as error:
            raise NotFound(str(error)) from None
        lines = queries.log_lines(db, rollout_id, after_seq=-1 if after is None else after)
        return jsonify(
            {"lines": [{"seq": x.seq, "node": x.node, "stream": x.stream, "text": x.text} for x in lines]}
        )


@api.get("/audit")
@requires(Role.VIEWER)
def audit_log() -> ResponseReturnValue:
    limit = int_arg("limit", default=100, minimum=1, maximum=1000) or 100
    before = int_arg("before")
    with transaction(web_context().sessions) as db:
        return jsonify(
            {"entries": [audit_json(e) for e in queries.list_audit(db, limit=limit, before_id=before)]}
        )


@api.get("/users")
@requires(Role.VIEWER)
def users() -> ResponseReturnValue:
    with transaction(web_context().sessions) as db:
        return jsonify({"users": [user_json(u) for u in queries.list_users(db)]})


@api.post("/users")
@requires(Role.OPERATOR)
def add_user() -> ResponseReturnValue:
    data = _body()
    username, role = _text_field(data, "username"), _text_field(data, "role")
    try:
        with transaction(web_context().sessions) as db:
            added = accounts.add_user(db, _actor(), username, role)
            body = user_json(added.user)
    except auth.BadInput as error:
        _refused("user.add", username, error)
        raise BadRequest(str(error)) from None
    except queries.AlreadyExists as error:
        _refused("user.add", username, error)
        raise Conflict(str(error)) from None
    # The generated password is in this answer only; it is stored as an argon2id hash.
    return jsonify({**body, "password": added.password}), 201


def _set_disabled(username: str, *, disabled: bool) -> ResponseReturnValue:
    try:
        with transaction(web_context().sessions) as db:
            return jsonify(user_json(accounts.set_disabled(db, _actor(), username, disabled=disabled)))
    except auth.BadInput as error:
        _refused(accounts.disabled_action(disabled), username, error)
        raise BadRequest(str(error)) from None
    except queries.NotFound as error:
        _refused(accounts.disabled_action(disabled), username, error)
        raise NotFound(str(error)) from None


@api.post("/users/<username>/disable")
@requires(Role.OPERATOR)
def disable_user(username: str) -> ResponseReturnValue:
    return _set_disabled(username, disabled=True)


@api.post("/users/<username>/enable")
@requires(Role.OPERATOR)
def enable_user(username: str) -> ResponseReturnValue:
    return _set_disabled(username, disabled=False)


@api.post("/users/<username>/tokens")
@requires(Role.OPERATOR)
def create_token(username: str) -> ResponseReturnValue:
    name = _text_field(_body(), "name")
    try:
        with transaction(web_context().sessions) as db:
            token = accounts.issue_token(db, _actor(), username, name)
    except auth.BadInput as error:
        _refused("token.create", username, error)
        raise BadRequest(str(error)) from None
    except queries.NotFound as error:
        _refused("token.create", username, error)
        raise NotFound(str(error)) from None
    return jsonify({"username": username, "name": name, "token": token}), 201


def _actor() -> accounts.Actor:
    return accounts.Actor(g.user.username, request.remote_addr)
