"""The reference update server's WSGI app: TUF metadata and bundle files, each request license-authenticated.

Routes (``<channel>`` is one of the server's channels):

* ``GET /v1/channels/<channel>/metadata/<file>`` - TUF metadata (``N.root.json``, ``timestamp.json``, ...)
* ``GET /v1/channels/<channel>/targets/<sha256>.<name>`` - a bundle file; HTTP Range is honoured (resume)
* ``GET /v1/health`` - unauthenticated liveness, says nothing about licenses or releases

Refusals are JSON ``{"error": <message>, "reason": <stable short name>}``: 401 for a missing, malformed or
wrong signature, a stale timestamp or a replayed request; 403 for an unknown, revoked or expired license, a
channel the license does not cover and a release dated after its updates-until date; 404 for anything else.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

from flask import Flask, Response, jsonify, request, send_file
from tuf.api.metadata import Metadata, Snapshot, Targets, Timestamp  # type: ignore[attr-defined]
from werkzeug.exceptions import HTTPException

from updater.domain import request_auth
from updater.domain.keyring import Keyring
from updater.server.config import ServerHome
from updater.server.licenses import LicenseRecord, LicenseRefused, check_access

_METADATA_FILE = re.compile(r"(?:[0-9]{1,10}\.(?:root|targets|snapshot)|timestamp)\.json")
_TARGET_FILE = re.compile(r"[0-9a-f]{64}\.[A-Za-z0-9][A-Za-z0-9._+-]{0,200}")

_AUTH_REASONS: dict[type[request_auth.RequestAuthError], str] = {
    request_auth.MissingAuthError: "missing-auth",
    request_auth.MalformedAuthError: "malformed-auth",
    request_auth.BadSignatureError: "bad-signature",
    request_auth.StaleRequestError: "stale-request",
    request_auth.ReplayedRequestError: "replayed-request",
}


class _Refusal(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class _ReleaseDates:
    """Served target file name -> release date, re-read whenever the channel's timestamp changes."""

    def __init__(self, channel_dir: Path) -> None:
        self._dir = channel_dir / "metadata"
        self._stamp: int | None = None
        self._dates: dict[str, date] = {}
        self._lock = threading.Lock()

    def get(self, served_name: str) -> date | None:
        with self._lock:
            stamp = (self._dir / "timestamp.json").stat().st_mtime_ns
            if stamp != self._stamp:
                self._dates = self._load()
                self._stamp = stamp
            return self._dates.get(served_name)

    def _load(self) -> dict[str, date]:
        timestamp: Metadata[Timestamp] = Metadata.from_file(str(self._dir / "timestamp.json"))
        snapshot: Metadata[Snapshot] = Metadata.from_file(
            str(self._dir / f"{timestamp.signed.snapshot_meta.version}.snapshot.json")
        )
        version = snapshot.signed.meta["targets.json"].version
        targets: Metadata[Targets] = Metadata.from_file(str(self._dir / f"{version}.targets.json"))
        dates: dict[str, date] = {}
        for name, target in targets.signed.targets.items():
            release_date = target.custom.get("release_date") if isinstance(target.custom, dict) else None
            if isinstance(release_date, str):
                dates[f"{target.hashes['sha256']}.{name}"] = date.fromisoformat(release_date)
        return dates


class _TrustedKeyring:
    """The vendor keyring, re-verified whenever its file changes (``corral-update-server keyring update``)."""

    def __init__(self, home: ServerHome) -> None:
        self._home = home
        self._stamp: int | None = None
        self._keyring: Keyring | None = None
        self._lock = threading.Lock()

    def get(self, now: datetime) -> Keyring:
        with self._lock:
            stamp = self._home.keyring_path.stat().st_mtime_ns
            if self._keyring is None or stamp != self._stamp:
                self._keyring = self._home.trust(now=now).keyring
                self._stamp = stamp
            return self._keyring


def _signed_path() -> str:
    """The path as the client signed it: the URL path, plus the query string when there is one."""
    query = request.query_string.decode("ascii", "replace")
    return f"{request.path}?{query}" if query else request.path


def _register_error_handlers(app: Flask) -> None:
    """Every refusal, including Flask's own 404/405, is JSON with a message and a stable reason."""

    @app.errorhandler(_Refusal)
    def refused(error: _Refusal) -> tuple[Response, int]:
        return jsonify(error=error.message, reason=error.reason), error.status

    @app.errorhandler(404)
    def not_found(_error: Exception) -> tuple[Response, int]:
        return jsonify(error="not found", reason="not-found"), 404

    @app.errorhandler(405)
    def not_allowed(error: HTTPException) -> tuple[Response, int, list[tuple[str, str]]]:
        allow = [(name, value) for name, value in error.get_headers() if name.lower() == "allow"]
        return jsonify(error="method not allowed", reason="method-not-allowed"), 405, allow


def create_app(
    home: ServerHome,
    *,
    clock: Callable[[], float] = time.time,
    replay_window_seconds: int = request_auth.DEFAULT_WINDOW_SECONDS,
    replay_cache_size: int = request_auth.DEFAULT_REPLAY_CACHE_SIZE,
) -> Flask:
    """The app for one server home. Serve it with one process (the replay cache lives in its memory)."""
    app = Flask("corral-update-server")
    app.config["MAX_CONTENT_LENGTH"] = 0  # the server accepts no request bodies
    replay_cache = request_auth.ReplayCache(
        window_seconds=replay_window_seconds, max_entries=replay_cache_size
    )
    replay_lock = threading.Lock()
    release_dates = {channel: _ReleaseDates(home.channel_dir(channel)) for channel in home.channels}
    licenses = home.licenses()
    keyring = _TrustedKeyring(home)

    def authenticate(channel: str) -> tuple[LicenseRecord, datetime]:
        """Who is asking: signed headers, known license, good signature, fresh, not replayed."""
        if channel not in home.channels:
            raise _Refusal(404, "unknown-channel", f"no channel {channel!r} on this server")
        try:
            headers = {name: request.headers.get(name, "") for name in request_auth.AUTH_HEADERS}
            signed = request_auth.parse_auth_headers({k: v for k, v in headers.items() if v})
        except request_auth.RequestAuthError as error:
            raise _Refusal(401, _AUTH_REASONS[type(error)], str(error)) from None
        record = licenses.get(signed.license_id)
        if record is None:
            raise _Refusal(403, "unknown-license", f"license {signed.license_id} is not known to this server")
        now = clock()
        try:
            with replay_lock:
                request_auth.verify_request(
                    signed,
                    record.request_key,
                    method=request.method,
                    path=_signed_path(),
                    range_header=request.headers.get("Range"),
                    replay_cache=replay_cache,
                    now=now,
                )
        except request_auth.RequestAuthError as error:
            raise _Refusal(401, _AUTH_REASONS[type(error)], str(error)) from None
        return record, datetime.fromtimestamp(now, UTC)

    def entitle(record: LicenseRecord, channel: str, now: datetime, release_date: date | None = None) -> None:
        """What they may have: not revoked, license valid, channel covered, release within updates-until."""
        try:
            check_access(record, keyring.get(now), channel=channel, now=now, release_date=release_date)
        except LicenseRefused as refused:
            raise _Refusal(403, refused.reason, refused.message) from None

    _register_error_handlers(app)

    @app.get("/v1/health")
    def health() -> Response:
        return jsonify(status="ok")

    @app.get("/v1/channels/<channel>/metadata/<filename>")
    def metadata(channel: str, filename: str) -> Response:
        record, now = authenticate(channel)
        entitle(record, channel, now)
        path = home.channel_dir(channel) / "metadata" / filename
        if not _METADATA_FILE.fullmatch(filename) or not path.is_file():
            raise _Refusal(404, "not-found", f"no metadata {filename} in channel {channel}")
        response = send_file(path, mimetype="application/json", conditional=False, max_age=0)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/v1/channels/<channel>/targets/<filename>")
    def target(channel: str, filename: str) -> Response:
        record, now = authenticate(channel)
        entitle(record, channel, now)  # who may see the channel at all, before saying whether a file exists
        path = home.channel_dir(channel) / "targets" / filename
        release_date = release_dates[channel].get(filename) if _TARGET_FILE.fullmatch(filename) else None
        if release_date is None or not path.is_file():
            raise _Refusal(404, "not-found", f"no release file {filename} in channel {channel}")
        entitle(record, channel, now, release_date)
        return send_file(path, mimetype="application/octet-stream", conditional=True, etag=False, max_age=0)

    return app
