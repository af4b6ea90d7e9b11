"""The update service's web app: ``create_app(config)`` builds it from a :class:`ServiceConfig`, no globals.

Blueprints: ``ui`` (server-rendered pages, small vanilla JS) and ``api`` (``/api/v1``, JSON, bearer tokens).
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from flask import Flask, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge
from werkzeug.wrappers import Response

from updater.config import ServiceConfig, known_secrets
from updater.services.accounts.auth import RedactSecrets, install_redaction
from updater.services.accounts.throttle import login_throttle
from updater.services.jobs import JobQueue
from updater.store.db import make_engine, require_current_schema, session_factory
from updater.web.api import api
from updater.web.context import EXTENSION, WebContext
from updater.web.security import csrf_token, unguarded_views
from updater.web.ui import ui
from updater.web.uploads import SpoolingRequest, body_too_large, remove_unclaimed_uploads

log = logging.getLogger(__name__)

# No inline script or style anywhere, so the policy can forbid them; frames are never needed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

# A form's non-file fields are held in memory: one field at most this size, a form at most this many parts.
MAX_FORM_FIELD_BYTES = 1024 * 1024
MAX_FORM_PARTS = 1000


class AppSetupError(Exception):
    """The app cannot be built as configured (e.g. a view without a role check)."""


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def _handle_http_error(error: HTTPException) -> ResponseReturnValue:
    code = error.code or 500
    message = error.description or error.name
    # The headers the exception carries (a 405's Allow, a 429's Retry-After, a 416's Content-Range) belong
    # to the answer whatever body it gets; only its own Content-Type is replaced.
    headers = [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]
    if _is_api(request.path):
        response = jsonify({"error": {"code": code, "message": message}})
        response.status_code = code
        response.headers.extend(headers)
        if code == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="corral"'
        return response
    return render_template("error.html", code=code, name=error.name, message=message), code, headers


def _handle_too_large(error: RequestEntityTooLarge) -> ResponseReturnValue:
    # A bare 413 is the body's limit found mid-body (a chunked upload has no Content-Length): same words as
    # the refusal before the body. The form's own limits (a field's size, the number of parts) name
    # themselves (updater.web.uploads).
    limit = request.max_content_length
    if limit is not None and error.description == RequestEntityTooLarge.description:
        error = body_too_large(limit)
    return _handle_http_error(error)


def _handle_unexpected(error: Exception) -> ResponseReturnValue:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return _handle_http_error(InternalServerError("internal error; the service log has the details"))


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype in ("text/html", "application/json"):
        response.headers.setdefault("Cache-Control", "no-store")
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


def _refuse_oversized_bodies() -> None:
    # Werkzeug enforces MAX_CONTENT_LENGTH only when the body is read; refuse before any view runs.
    limit = request.max_content_length
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise body_too_large(limit)


def create_app(config: ServiceConfig, *, engine: sa.Engine | None = None, check_schema: bool = True) -> Flask:
    """The web app for ``config``; ``engine`` lets a caller share one (tests, the CLI)."""
    if len(config.secret_key) < 32:
        raise AppSetupError(
            "the session secret key must be at least 32 bytes (corral-updater init writes one)"
        )
    engine = engine or make_engine(config.effective_database_url)
    if check_schema:
        require_current_schema(engine)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=config.secret_key,
        SESSION_COOKIE_NAME="corral_session",
        SESSION_COOKIE_SECURE=config.secure_cookies,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=config.session_lifetime,
        SESSION_REFRESH_EACH_REQUEST=False,  # the lifetime runs from sign-in, not from the last click
        MAX_CONTENT_LENGTH=config.max_upload_bytes,
        MAX_FORM_MEMORY_SIZE=MAX_FORM_FIELD_BYTES,
        MAX_FORM_PARTS=MAX_FORM_PARTS,
        JSON_SORT_KEYS=False,
    )
    redactor = RedactSecrets(known_secrets(config))
    install_redaction(redactor)
    app.extensions[EXTENSION] = WebContext(
        config=config,
        engine=engine,
        sessions=session_factory(engine),
        throttle=login_throttle(config),
        redactor=redactor,
        queue=JobQueue(config),
    )
    app.request_class = SpoolingRequest
    app.teardown_request(remove_unclaimed_uploads)
    app.before_request(_refuse_oversized_bodies)
    app.register_blueprint(ui)
    app.register_blueprint(api)
    app.register_error_handler(RequestEntityTooLarge, _handle_too_large)
    app.register_error_handler(HTTPException, _handle_http_error)
    app.register_error_handler(Exception, _handle_unexpected)
    app.after_request(_security_headers)

    @app.context_processor
    def _template_globals() -> dict[str, Any]:
        return {"csrf_token": csrf_token}

    missing = unguarded_views(app)
    if missing:
        raise AppSetupError(f"views without a role check (use @requires or @public): {', '.join(missing)}")
    return app
