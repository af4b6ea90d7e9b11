"""What the Rollout/Updates pages and the API share: calling :mod:`updater.services.rollouts.control` from a
request.

HTTP only: the service decides, writes its own audit entry for what it did, and raises for a refusal; here a
refusal becomes 404/409/422 and is audited in a transaction of its own (the service's was rolled back).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from flask import Response, current_app, g, request
from werkzeug.exceptions import (
    BadRequest,
    Conflict,
    HTTPException,
    NotFound,
    ServiceUnavailable,
    UnprocessableEntity,
)

from updater.services.accounts import audit
from updater.services.jobs import TASK_ROLLOUT, QueueUnavailable
from updater.services.rollouts import control as rollouts
from updater.store import queries
from updater.store.db import transaction
from updater.store.models import Outcome
from updater.web.context import web_context
from updater.web.events import HeldStream, StreamSettings, StreamSlots, rollout_events
from updater.web.params import DB_INT_MAX

T = TypeVar("T")
SLOTS = "corral_sse_slots"


def refuse(action: str, target: str, error: HTTPException) -> HTTPException:
    audit.record_separately(
        web_context().sessions,
        actor=g.user.username,
        action=action,
        target=target[:255],
        outcome=Outcome.REFUSED,
        source_ip=request.remote_addr,
        detail=str(error.description),
    )
    return error


def enqueue_rollout(rollout_id: str) -> None:
    """The service's ``Enqueue``: start the Celery task ``corral.rollout`` for ``rollout_id``."""
    web_context().queue.send(TASK_ROLLOUT, [rollout_id])


def mutate(
    action: str,
    target: str,
    work: Callable[[Any], T],
    guard: AbstractContextManager[None] | None = None,
) -> T:
    """Run ``work(db)`` in one transaction (inside ``guard``, held until it has committed); map the service's
    refusals to HTTP errors and audit them."""
    try:
        with guard or contextlib.nullcontext(), transaction(web_context().sessions) as db:
            return work(db)
    except rollouts.RolloutConflict as error:
        raise refuse(action, target, Conflict(str(error))) from None
    except rollouts.RolloutRefused as error:
        raise refuse(action, target, UnprocessableEntity(str(error))) from None
    except QueueUnavailable as error:
        raise refuse(action, target, ServiceUnavailable(str(error))) from None


def require_rollout(rollout_id: str) -> None:
    with transaction(web_context().sessions) as db:
        try:
            queries.get_rollout(db, rollout_id)
        except queries.NotFound as error:
            raise NotFound(str(error)) from None


def require_release(version: str) -> None:
    with transaction(web_context().sessions) as db:
        if queries.find_release(db, version) is None:
            raise NotFound(f"no release {version!r} is known: import its bundle first")


def start(version: str) -> str:
    config, actor = web_context().config, g.user.username
    return mutate(
        "rollout.start",
        version,
        lambda db: rollouts.start(config, db, version, actor, enqueue_rollout),
        guard=rollouts.starting(config, actor, version),
    )


def control(rollout_id: str, action: str) -> None:
    """Pause, resume or abort ``rollout_id`` (404 if there is no such rollout)."""
    try:
        require_rollout(rollout_id)
    except NotFound as error:
        raise refuse(f"rollout.{action}", rollout_id, error) from None
    config, actor = web_context().config, g.user.username
    calls: dict[str, Callable[[Any], None]] = {
        "pause": lambda db: rollouts.pause(config, db, rollout_id, actor),
        "resume": lambda db: rollouts.resume(config, db, rollout_id, actor, enqueue_rollout),
        "abort": lambda db: rollouts.abort(config, db, rollout_id, actor),
    }
    mutate(f"rollout.{action}", rollout_id, calls[action])


def parse_token(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise BadRequest("token must be the lock's fencing token (a whole number)")
    try:
        token = int(raw)
    except ValueError:
        raise BadRequest("token must be the lock's fencing token (a whole number)") from None
    if not 0 <= token <= DB_INT_MAX:
        raise BadRequest("token must be the lock's fencing token (a whole number)")
    return token


def break_lock(token: int) -> None:
    config = web_context().config
    mutate(
        "rollout.break_lock",
        f"token {token}",
        lambda db: rollouts.break_lock(config, db, token, g.user.username),
    )


def lock_state() -> dict[str, Any]:
    """The cluster update lock's holder (``lock``, None when free) or why it cannot be read (``problem``)."""
    try:
        return {"lock": rollouts.lock_status(web_context().config), "problem": None}
    except rollouts.RolloutRefused as error:
        return {"lock": None, "problem": str(error)}


def preview(version: str) -> rollouts.PlanPreview:
    require_release(version)
    config = web_context().config
    with transaction(web_context().sessions) as db:
        try:
            return rollouts.preview(config, db, version)
        except rollouts.RolloutRefused as error:
            raise UnprocessableEntity(str(error)) from None


def _last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID") or request.args.get("after")
    if raw is None or raw == "":
        return -1
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("Last-Event-ID (or after) must be a log sequence number") from None
    if not -1 <= value <= DB_INT_MAX:
        raise BadRequest("Last-Event-ID (or after) must be a log sequence number")
    return value


_slots_lock = threading.Lock()


def _stream_slots(settings: StreamSettings) -> StreamSlots:
    with _slots_lock:
        slots: StreamSlots = current_app.extensions.setdefault(SLOTS, StreamSlots(settings.max_streams))
    return slots


def event_stream(rollout_id: str) -> Response:
    """``text/event-stream`` of a rollout's log and state, resuming after ``Last-Event-ID``.

    At most ``max_streams`` are held open; past that a viewer gets one pass and reconnects (polling).
    """
    require_rollout(rollout_id)
    after = _last_event_id()
    settings = current_app.config.get("CORRAL_SSE", StreamSettings())
    slots = _stream_slots(settings)
    held = slots.take()
    events = rollout_events(
        web_context().sessions, rollout_id, after_seq=after, settings=settings, once=not held
    )
    stream: Iterable[str] = HeldStream(events, slots) if held else events
    response = Response(stream, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response
