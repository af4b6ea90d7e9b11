"""What the Import page and ``POST /api/v1/releases`` share: hand a spooled upload to the import service.

HTTP only: the import itself (lock, checks, staging, records) is :mod:`updater.services.bundles.imports`.
"""

from __future__ import annotations

from flask import g, request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest, Conflict, HTTPException, ServiceUnavailable

from updater.domain.filenames import display_name, escaped_name
from updater.services.accounts import audit
from updater.services.bundles import imports
from updater.services.jobs import TASK_STAGE_UPLOAD, QueueUnavailable
from updater.store.models import Outcome
from updater.web.context import web_context
from updater.web.uploads import cut_short_bytes, spooled_path

FIELD = "bundle"


def _refuse(target: str, error: HTTPException, note: str = "") -> HTTPException:
    audit.record_separately(
        web_context().sessions,
        actor=g.user.username,
        action=imports.ACTION,
        target=target,
        outcome=Outcome.REFUSED,
        source_ip=request.remote_addr,
        detail=str(error.description) + note,
    )
    return error


def _as_sent(raw: str, shown: str) -> str:
    """The file name as the client sent it, escaped, when what is kept differs from it."""
    return "" if raw == shown else f" (file name as sent: {escaped_name(raw)})"


def start_import() -> imports.ImportStatus:
    """Take the upload in form field ``bundle``, lock, queue ``corral.stage_upload``; audited either way."""
    uploads = request.files.getlist(FIELD)
    if len(uploads) > 1:
        # Taking one and dropping the other would import a file the client may not have meant.
        names = ", ".join(display_name(u.filename) for u in uploads)
        raise _refuse(
            "-", BadRequest(f"more than one file in the form field {FIELD!r} ({names}): send one bundle")
        )
    upload = uploads[0] if uploads else None
    if not isinstance(upload, FileStorage) or not upload.filename:
        received = cut_short_bytes()
        if received is not None:
            announced = request.content_length
            raise _refuse(
                "-",
                BadRequest(
                    f"the upload was cut short: the body ended inside the file after {received} bytes"
                    + (f" (the request announced {announced})" if announced else "")
                    + "; nothing was kept, upload the bundle again"
                ),
            )
        raise _refuse("-", BadRequest(f"no bundle uploaded: send the file in the form field {FIELD!r}"))
    raw_name = upload.filename
    filename = display_name(raw_name)
    context = web_context()
    try:
        ticket = imports.begin(context.config, spooled_path(upload), actor=g.user.username, filename=raw_name)
    except imports.ImportRefused as error:
        raise _refuse(filename, BadRequest(str(error)), _as_sent(raw_name, filename)) from None
    except imports.ImportConflict as error:
        raise _refuse(filename, Conflict(str(error)), _as_sent(raw_name, filename)) from None
    ticket.hand_over()
    try:
        context.queue.send(TASK_STAGE_UPLOAD, [ticket.import_id], expires=float(imports.QUEUE_GRACE_SECONDS))
    except QueueUnavailable as error:
        ticket.cancel(str(error))
        raise _refuse(filename, ServiceUnavailable(str(error)), _as_sent(raw_name, filename)) from None
    audit.record_separately(
        context.sessions,
        actor=g.user.username,
        action=imports.ACTION,
        target=filename,
        outcome=Outcome.OK,
        source_ip=request.remote_addr,
        detail=f"{ticket.import_id}: {ticket.status.size} bytes queued for verification and staging"
        + _as_sent(raw_name, filename),
    )
    return ticket.status
