"""``/api/v1`` routes that plan, start, follow and steer rollouts, and the cluster update lock (nested in
the ``api`` blueprint: its token auth applies)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest

from updater.store import queries
from updater.store.db import transaction
from updater.store.models import Role
from updater.views.json_views import rollout_json
from updater.web import rollout_actions as actions
from updater.web.context import web_context
from updater.web.security import requires

rollouts_api = Blueprint("rollouts", __name__)


def _json_object() -> dict[str, object]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object (Content-Type: application/json)")
    return data


def _rollout(rollout_id: str) -> ResponseReturnValue:
    with transaction(web_context().sessions) as db:
        return jsonify(rollout_json(queries.get_rollout(db, rollout_id)))


@rollouts_api.get("/releases/<version>/plan")
@requires(Role.VIEWER)
def plan(version: str) -> ResponseReturnValue:
    return jsonify(actions.preview(version).as_json())


@rollouts_api.post("/rollouts")
@requires(Role.OPERATOR)
def start() -> ResponseReturnValue:
    version = _json_object().get("version")
    if not isinstance(version, str) or not version:
        raise BadRequest("field 'version' must name a known release")
    rollout_id = actions.start(version)
    url = url_for("api.rollout", rollout_id=rollout_id)
    response = jsonify({"id": rollout_id, "url": url, "events_url": f"{url}/events"})
    response.status_code = 202
    response.headers["Location"] = url
    return response


@rollouts_api.get("/rollouts/<rollout_id>/events")
@requires(Role.VIEWER)
def events(rollout_id: str) -> ResponseReturnValue:
    return actions.event_stream(rollout_id)


@rollouts_api.post("/rollouts/<rollout_id>/pause")
@requires(Role.OPERATOR)
def pause(rollout_id: str) -> ResponseReturnValue:
    actions.control(rollout_id, "pause")
    return _rollout(rollout_id)


@rollouts_api.post("/rollouts/<rollout_id>/resume")
@requires(Role.OPERATOR)
def resume(rollout_id: str) -> ResponseReturnValue:
    actions.control(rollout_id, "resume")
    return _rollout(rollout_id)


@rollouts_api.post("/rollouts/<rollout_id>/abort")
@requires(Role.OPERATOR)
def abort(rollout_id: str) -> ResponseReturnValue:
    actions.control(rollout_id, "abort")
    return _rollout(rollout_id)


@rollouts_api.get("/lock")
@requires(Role.VIEWER)
def lock() -> ResponseReturnValue:
    return jsonify(actions.lock_state())


@rollouts_api.post("/lock/break")
@requires(Role.OPERATOR)
def break_lock() -> ResponseReturnValue:
    token = actions.parse_token(_json_object().get("token"))
    actions.break_lock(token)
    return jsonify({"broken": True, "token": token, **actions.lock_state()})
