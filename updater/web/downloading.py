"""The Download button and its API mirror: hand ``corral.download`` to the worker and read its progress.

HTTP only: :mod:`updater.services.channel.downloads` does the download (and audits its outcome); here a
request is
checked (a known release, not staged yet, not being downloaded) and queued, and a refusal becomes 404/409/503,
audited like every other refused mutation.
"""

from __future__ import annotations

from typing import Any

from flask import g, request
from werkzeug.exceptions import Conflict, HTTPException, NotFound, ServiceUnavailable

from updater.config import ServiceConfig
from updater.domain.errors import VerificationError
from updater.domain.semver import parse_version
from updater.services.accounts import audit
from updater.services.channel import downloads
from updater.services.jobs import TASK_DOWNLOAD, QueueUnavailable
from updater.store import queries
from updater.store.db import transaction
from updater.store.models import DownloadState, Outcome
from updater.web.context import web_context
from updater.web.rollout_actions import refuse

ACTION = "release.download.request"


def _holder(config: ServiceConfig, version: str) -> str:
    """Who holds ``downloads/<version>.lock`` (the pid the downloading process wrote into it)."""
    try:
        pid = (config.downloads_dir / f"{version}.lock").read_text("ascii", "replace").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid else "another process"


def progress(version: str) -> dict[str, Any] | None:
    """The latest download of ``version`` (None when it was never downloaded) with whether one runs now."""
    context = web_context()
    with transaction(context.sessions) as db:
        record = downloads.download_progress(db, version)
        if record is None:
            return None
        total = record.bytes_total
        answer: dict[str, Any] = {
            "state": str(record.state),
            "active": downloads.download_active(context.config, version),
            "bytes_done": record.bytes_done,
            "bytes_total": total,
            "resumed_from": record.resumed_from,
            "percent": round(100 * record.bytes_done / total, 1) if total else 0.0,
            "started_by": record.started_by,
            "started_at": record.started_at.isoformat(),
            "finished_at": record.finished_at.isoformat() if record.finished_at else None,
            "failed_check": record.failed_check,
            "message": record.message,
        }
    if answer["state"] == DownloadState.RUNNING and not answer["active"]:
        answer["message"] = "stopped (its worker died): download again to resume from where it stopped"
    return answer


def _refusal(config: ServiceConfig, version: str) -> HTTPException | None:
    """Why ``version`` cannot be downloaded now, or None."""
    with transaction(web_context().sessions) as db:
        row = queries.find_release(db, version)
        if row is None:
            return NotFound(f"no release {version} is known: run a channel check first")
        if row.staged_path:
            return Conflict(f"release {version} is already downloaded and staged")
    if downloads.download_active(config, version):
        return Conflict(f"release {version} is already being downloaded (by {_holder(config, version)})")
    return None


def start(version: str) -> str:
    """Queue ``corral.download`` of ``version`` for the signed-in operator; returns the release's version."""
    context = web_context()
    try:
        wanted = str(parse_version(version))
    except VerificationError:
        raise refuse(ACTION, version, NotFound(f"no release {version!r} is known")) from None
    error = _refusal(context.config, wanted)
    if error is not None:
        raise refuse(ACTION, wanted, error)
    actor = g.user.username
    try:
        task_id = context.queue.send(TASK_DOWNLOAD, [wanted, actor])
    except QueueUnavailable as unavailable:
        raise refuse(ACTION, wanted, ServiceUnavailable(str(unavailable))) from None
    audit.record_separately(
        context.sessions,
        actor=actor,
        action=ACTION,
        target=wanted,
        outcome=Outcome.OK,
        source_ip=request.remote_addr,
        detail=f"queued for the worker (task {task_id})",
    )
    return wanted
