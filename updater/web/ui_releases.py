"""Pages for releases: Import (upload with progress, then each verification check) and Updates (with the
Download button for a release the channel offers and its progress).

Nested in the ``ui`` blueprint, so its sign-in and CSRF checks apply. Views only translate HTTP to service
calls and templates.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, NotFound, UnprocessableEntity

from updater.domain.errors import VerificationError
from updater.domain.semver import parse_version
from updater.services.bundles import imports
from updater.services.rollouts import control as rollouts
from updater.store import queries
from updater.store.db import transaction
from updater.store.models import ReleaseSource, Role
from updater.web import downloading
from updater.web import rollout_actions as actions
from updater.web.context import web_context
from updater.web.importing import FIELD, start_import
from updater.web.progress import format_seconds
from updater.web.security import requires

releases_ui = Blueprint("releases", __name__)


def _wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"


@releases_ui.get("/import")
@requires(Role.VIEWER)
def import_form() -> str:
    context = web_context()
    holder = imports.lock_holder(context.config)
    with transaction(context.sessions) as db:
        failed = queries.list_failed_imports(db)
    return render_template(
        "import.html",
        holder=imports.describe_holder(holder) if holder else None,
        max_bytes=context.config.max_upload_bytes,
        field=FIELD,
        failed=failed,
    )


@releases_ui.post("/import")
@requires(Role.OPERATOR)
def import_upload() -> Any:
    """The upload form's target; the page's script sends it by XHR (for the progress bar) and wants JSON."""
    try:
        status = start_import()
    except HTTPException as error:
        if not _wants_json():
            raise
        response = jsonify({"error": {"code": error.code, "message": error.description}})
        response.status_code = error.code or 400
        return response
    url = url_for("ui.releases.import_result", import_id=status.import_id)
    if _wants_json():
        return jsonify({**status.as_json(), "result_url": url}), 202
    return redirect(url)


def _status(import_id: str) -> imports.ImportStatus:
    try:
        return imports.read_status(web_context().config, import_id)
    except imports.ImportRefused as error:
        raise NotFound(str(error)) from None


@releases_ui.get("/imports/<import_id>")
@requires(Role.VIEWER)
def import_result(import_id: str) -> str:
    return render_template("import_result.html", status=_status(import_id))


@releases_ui.get("/imports/<import_id>/status")
@requires(Role.VIEWER)
def import_progress(import_id: str) -> Any:
    return jsonify(_status(import_id).as_json())


def _newer_than(version: str, installed: str | None) -> bool:
    try:
        return installed is None or parse_version(version) > parse_version(installed)
    except VerificationError:
        return False


@releases_ui.get("/updates")
@requires(Role.VIEWER)
def updates() -> str:
    with transaction(web_context().sessions) as db:
        installed = queries.installed_release(db)
        known = queries.list_releases(db)
        active = rollouts.active_rollouts(db)
    installed_version = installed.version if installed else None
    newer = [r for r in known if _newer_than(r.version, installed_version)]
    offers = {r.version for r in newer if r.staged_path and all(c.passed for c in r.checks)}
    downloadable = {r.version for r in newer if not r.staged_path and r.source == ReleaseSource.PULLED}
    return render_template(
        "updates.html",
        installed=installed_version,
        releases=known,
        offers=offers,
        downloadable=downloadable,
        downloads={v: p for v in sorted(downloadable) if (p := downloading.progress(v)) is not None},
        active=active[0].id if active else None,
        queued=request.args.get("queued", ""),
        queued_at=request.args.get("at", ""),
    )


@releases_ui.post("/updates/<version>/download")
@requires(Role.OPERATOR)
def download(version: str) -> ResponseReturnValue:
    """The Download button: queue the download; the Updates page then shows its progress."""
    wanted = downloading.start(version)
    flash(f"Downloading release {wanted}: it is verified and staged when the download ends.", "info")
    at = datetime.now(UTC).isoformat()
    return redirect(url_for("ui.releases.updates", queued=wanted, at=at))


@releases_ui.get("/updates/<version>/download")
@requires(Role.VIEWER)
def download_progress(version: str) -> ResponseReturnValue:
    """What the Updates page's script polls while a download runs."""
    found = downloading.progress(version)
    if found is None:
        raise NotFound(f"release {version!r} was never downloaded")
    return jsonify(found)


@releases_ui.get("/updates/<version>")
@requires(Role.VIEWER)
def confirm(version: str) -> str:
    """The confirm step of "Update to X": the plan, the estimate and every preflight result."""
    refused = None
    plan = None
    try:
        plan = actions.preview(version)
    except UnprocessableEntity as error:
        refused = error.description
    return render_template("confirm.html", version=version, plan=plan, refused=refused, fmt=format_seconds)
