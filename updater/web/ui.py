"""The server-rendered UI: sign-in, Overview, History, Audit log, Users. Views only translate HTTP to
service calls and templates; the services are the ones the API and the CLI use too."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from updater.domain.states import FINAL_ROLLOUT_STATES
from updater.services.accounts import audit, auth, tokens
from updater.services.accounts import users as accounts
from updater.services.installation.overview import build_overview
from updater.store import queries
from updater.store.db import transaction
from updater.store.models import Outcome, Role
from updater.web import rollout_actions
from updater.web.context import web_context
from updater.web.params import int_arg
from updater.web.progress import format_seconds, rollout_progress
from updater.web.security import (
    SessionExpired,
    check_csrf,
    end_session,
    load_session_user,
    public,
    requires,
    start_session,
)
from updater.web.ui_releases import releases_ui
from updater.web.ui_rollouts import rollouts_ui
from updater.web.ui_tokens import tokens_ui

ui = Blueprint("ui", __name__)
ui.register_blueprint(releases_ui)
ui.register_blueprint(rollouts_ui)
ui.register_blueprint(tokens_ui)


@ui.before_request
def _authenticate() -> Any:
    try:
        load_session_user()
    except SessionExpired:
        flash("Your session has expired; sign in again.", "warning")
        return redirect(url_for("ui.login", next=request.path))
    check_csrf()
    return None


@ui.errorhandler(401)
def _sign_in_first(_error: Exception) -> Response:
    return redirect(url_for("ui.login", next=request.path))


def _safe_next(target: str | None) -> str:
    # Only a local path: never redirect a fresh login to another site.
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("ui.overview")


@ui.route("/login", methods=["GET", "POST"])
@public
def login() -> Any:
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""))
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    context = web_context()
    try:
        with transaction(context.sessions) as db:
            user = auth.authenticate(db, context.throttle, username, password, request.remote_addr)
            audit.record(db, actor=user.username, action="login", source_ip=request.remote_addr)
            start_session(db, user)
    except auth.AuthError as error:
        audit.record_separately(
            context.sessions,
            actor=username[:64] or "-",
            action="login",
            outcome=Outcome.REFUSED,
            source_ip=request.remote_addr,
            detail=str(error),
        )
        page = render_template("login.html", error=str(error), next=request.form.get("next", ""))
        if isinstance(error, auth.Throttled):
            return page, 429, {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
        return page, 401
    return redirect(_safe_next(request.form.get("next")))


@ui.route("/logout", methods=["POST"])
@requires(Role.VIEWER)
def logout() -> Response:
    with transaction(web_context().sessions) as db:
        audit.record(db, actor=g.user.username, action="logout", source_ip=request.remote_addr)
        end_session(db)
    flash("Signed out.", "info")
    return redirect(url_for("ui.login"))


@ui.route("/")
@requires(Role.VIEWER)
def overview() -> str:
    context = web_context()
    with transaction(context.sessions) as db:
        data = build_overview(db, context.config)
    return render_template("overview.html", overview=data)


@ui.route("/history")
@requires(Role.VIEWER)
def history() -> str:
    with transaction(web_context().sessions) as db:
        rollouts = queries.list_rollouts(db, limit=200)
    return render_template("history.html", rollouts=rollouts)


@ui.route("/history/<rollout_id>")  # the old address still answers
@ui.route("/rollouts/<rollout_id>")  # registered first: url_for builds this one
@requires(Role.VIEWER)
def rollout(rollout_id: str) -> str:
    with transaction(web_context().sessions) as db:
        try:
            item = queries.get_rollout(db, rollout_id)
        except queries.NotFound:
            abort(404, description=f"no rollout {rollout_id!r}")
        lines = queries.log_lines(db, rollout_id, limit=5000)
        progress = rollout_progress(item)
    ended = item.state in FINAL_ROLLOUT_STATES
    # The lock lives in ZooKeeper: read only while the rollout may still hold it.
    lock = None if ended else rollout_actions.lock_state()
    return render_template(
        "rollout.html",
        rollout=item,
        lines=lines,
        progress=progress,
        ended=ended,
        lock=lock,
        last_seq=lines[-1].seq if lines else -1,
        fmt=format_seconds,
    )


@ui.route("/audit")
@requires(Role.VIEWER)
def audit_log() -> str:
    before = int_arg("before")
    with transaction(web_context().sessions) as db:
        entries = queries.list_audit(db, limit=100, before_id=before)
    return render_template("audit.html", entries=entries)


@ui.route("/users")
@requires(Role.VIEWER)
def users() -> str:
    with transaction(web_context().sessions) as db:
        items = queries.list_users(db)
        api_tokens = [(t, str(tokens.state(t))) for t in tokens.list_tokens(db)]
    return render_template("users.html", users=items, roles=[r.value for r in Role], tokens=api_tokens)


def _refuse(action: str, target: str, message: str) -> Response:
    audit.record_separately(
        web_context().sessions,
        actor=g.user.username,
        action=action,
        target=target,
        outcome=Outcome.REFUSED,
        source_ip=request.remote_addr,
        detail=message,
    )
    flash(message, "error")
    return redirect(url_for("ui.users"))


@ui.route("/users", methods=["POST"])
@requires(Role.OPERATOR)
def add_user() -> Any:
    username = request.form.get("username", "").strip()
    try:
        with transaction(web_context().sessions) as db:
            added = accounts.add_user(db, _actor(), username, request.form.get("role", ""))
    except (auth.BadInput, queries.AlreadyExists) as error:
        return _refuse("user.add", username, str(error))
    return render_template(
        "secret_once.html", title=f"User {username} created", label="Password", secret=added.password
    )


@ui.route("/users/<username>/disable", methods=["POST"])
@requires(Role.OPERATOR)
def disable_user(username: str) -> Response:
    return _set_disabled(username, disabled=True)


@ui.route("/users/<username>/enable", methods=["POST"])
@requires(Role.OPERATOR)
def enable_user(username: str) -> Response:
    return _set_disabled(username, disabled=False)


def _set_disabled(username: str, *, disabled: bool) -> Response:
    try:
        with transaction(web_context().sessions) as db:
            accounts.set_disabled(db, _actor(), username, disabled=disabled)
    except (auth.BadInput, queries.NotFound) as error:
        return _refuse(accounts.disabled_action(disabled), username, str(error))
    flash(f"User {username} {'disabled' if disabled else 'enabled'}.", "info")
    return redirect(url_for("ui.users"))


@ui.route("/users/<username>/tokens", methods=["POST"])
@requires(Role.OPERATOR)
def create_token(username: str) -> Any:
    name = request.form.get("name", "").strip()
    try:
        with transaction(web_context().sessions) as db:
            token = accounts.issue_token(db, _actor(), username, name)
    except (auth.BadInput, queries.NotFound) as error:
        return _refuse("token.create", username, str(error))
    return render_template("secret_once.html", title=f"API token for {username}", label="Token", secret=token)


def _actor() -> accounts.Actor:
    return accounts.Actor(g.user.username, request.remote_addr)
