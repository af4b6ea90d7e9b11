"""Rollout page actions: start (the confirm step's button), live events, Pause / Resume / Abort, Break lock.

Nested in the ``ui`` blueprint, so its sign-in and CSRF checks apply. The page itself is ``ui.rollout``.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, NotFound

from updater.store.models import Role
from updater.web import rollout_actions as actions
from updater.web.security import requires

rollouts_ui = Blueprint("rollouts", __name__)

CONTROLS = {"pause": "Pause requested", "resume": "Resumed", "abort": "Abort requested"}


@rollouts_ui.post("/rollouts")
@requires(Role.OPERATOR)
def start() -> ResponseReturnValue:
    version = request.form.get("version", "").strip()
    if not version:
        raise BadRequest("choose the release to update to")
    try:
        actions.require_release(version)
    except NotFound as error:
        raise actions.refuse("rollout.start", version, error) from None
    rollout_id = actions.start(version)
    flash(f"Rollout {rollout_id} to {version} started.", "info")
    return redirect(url_for("ui.rollout", rollout_id=rollout_id))


@rollouts_ui.get("/rollouts/<rollout_id>/events")
@requires(Role.VIEWER)
def events(rollout_id: str) -> ResponseReturnValue:
    return actions.event_stream(rollout_id)


def _control(rollout_id: str, action: str) -> ResponseReturnValue:
    actions.control(rollout_id, action)
    flash(f"{CONTROLS[action]} for rollout {rollout_id}.", "info")
    return redirect(url_for("ui.rollout", rollout_id=rollout_id))


@rollouts_ui.post("/rollouts/<rollout_id>/pause")
@requires(Role.OPERATOR)
def pause(rollout_id: str) -> ResponseReturnValue:
    return _control(rollout_id, "pause")


@rollouts_ui.post("/rollouts/<rollout_id>/resume")
@requires(Role.OPERATOR)
def resume(rollout_id: str) -> ResponseReturnValue:
    return _control(rollout_id, "resume")


@rollouts_ui.post("/rollouts/<rollout_id>/abort")
@requires(Role.OPERATOR)
def abort(rollout_id: str) -> ResponseReturnValue:
    return _control(rollout_id, "abort")


@rollouts_ui.post("/lock/break")
@requires(Role.OPERATOR)
def break_lock() -> ResponseReturnValue:
    token = actions.parse_token(request.form.get("token", ""))
    actions.break_lock(token)
    flash(f"The cluster update lock (token {token}) was broken.", "info")
    back = request.form.get("rollout_id", "")
    return redirect(url_for("ui.rollout", rollout_id=back) if back else url_for("ui.releases.updates"))
