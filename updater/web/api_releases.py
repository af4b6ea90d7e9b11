"""``/api/v1`` routes for releases, their downloads and imports (nested in the ``api`` blueprint: its token
auth applies)."""

from __future__ import annotations

from flask import Blueprint, jsonify, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound

from updater.services.bundles import imports
from updater.store import queries
from updater.store.db import transaction
from updater.store.models import Role
from updater.views.json_views import release_json
from updater.web import downloading
from updater.web.context import web_context
from updater.web.importing import start_import
from updater.web.security import requires

releases_api = Blueprint("releases", __name__)


@releases_api.post("/releases")
@requires(Role.OPERATOR)
def import_release() -> ResponseReturnValue:
    status = start_import()
    url = url_for("api.releases.import_status", import_id=status.import_id)
    response = jsonify({**status.as_json(), "status_url": url})
    response.status_code = 202
    response.headers["Location"] = url
    return response


@releases_api.get("/imports/<import_id>")
@requires(Role.VIEWER)
def import_status(import_id: str) -> ResponseReturnValue:
    try:
        return jsonify(imports.read_status(web_context().config, import_id).as_json())
    except imports.ImportRefused as error:
        raise NotFound(str(error)) from None


@releases_api.get("/releases/<version>")
@requires(Role.VIEWER)
def release(version: str) -> ResponseReturnValue:
    with transaction(web_context().sessions) as db:
        found = queries.find_release(db, version)
        if found is None:
            raise NotFound(f"no release {version!r} is known")
        answer = release_json(found)
    return jsonify({**answer, "download": downloading.progress(answer["version"])})


@releases_api.post("/releases/<version>/download")
@requires(Role.OPERATOR)
def download_release(version: str) -> ResponseReturnValue:
    """Queue the download of a release the channel offers; its progress is in ``GET /releases/<version>``."""
    wanted = downloading.start(version)
    url = url_for("api.releases.release", version=wanted)
    response = jsonify({"version": wanted, "state": "queued", "status_url": url})
    response.status_code = 202
    response.headers["Location"] = url
    return response
