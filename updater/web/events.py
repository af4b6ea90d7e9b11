"""Server-Sent Events for a rollout: its log lines (``id:`` = the line's sequence number), its state as it
changes, and an ``end`` event when it has ended.

A reconnecting ``EventSource`` sends ``Last-Event-ID``; the stream goes on after that line, so nothing is lost
or repeated. Every stream has a bounded lifetime (the browser reconnects by itself) and sends a heartbeat
comment when idle, so a gunicorn thread is never held for ever and proxies do not drop a quiet stream.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from updater.domain.states import FINAL_ROLLOUT_STATES
from updater.store import queries
from updater.store.db import transaction
from updater.views.json_views import rollout_json
from updater.web.progress import rollout_progress

BATCH = 500
RECONNECT_MILLISECONDS = 2000


@dataclass(frozen=True)
class StreamSettings:
    poll_seconds: float = 1.0
    heartbeat_seconds: float = 15.0
    lifetime_seconds: float = 300.0
    # Streams held open at once; each holds a gunicorn thread. Past this, a viewer gets what is there now and
    # reconnects after POLLING_RECONNECT_MILLISECONDS (polling), so the pages and the API keep their threads.
    max_streams: int = 8
    # The stream's time source: the real one, or a test's, so the stream's lifetime and heartbeats can be
    # checked without racing the wall clock.
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)


POLLING_RECONNECT_MILLISECONDS = 1000


class StreamSlots:
    """A count of the streams held open in this process (one per web app)."""

    def __init__(self, limit: int) -> None:
        self._slots = threading.BoundedSemaphore(limit)

    def take(self) -> bool:
        return self._slots.acquire(blocking=False)

    def give_back(self) -> None:
        self._slots.release()


class HeldStream:
    """An event stream that gives its slot back when the server closes it (even if it never started)."""

    def __init__(self, events: Iterator[str], slots: StreamSlots) -> None:
        self._events = events
        self._slots: StreamSlots | None = slots

    def __iter__(self) -> Iterator[str]:
        return self._events

    def close(self) -> None:
        close = getattr(self._events, "close", None)
        if close is not None:
            close()
        if self._slots is not None:
            self._slots.give_back()
            self._slots = None


def event(kind: str, data: dict[str, Any], *, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def state_json(sessions_db: Session, rollout_id: str) -> tuple[dict[str, Any], bool]:
    rollout = queries.get_rollout(sessions_db, rollout_id)
    data = rollout_json(rollout)
    data["progress"] = rollout_progress(rollout).as_json()
    return data, rollout.state in FINAL_ROLLOUT_STATES


def rollout_events(
    sessions: sessionmaker[Session],
    rollout_id: str,
    *,
    after_seq: int,
    settings: StreamSettings,
    once: bool = False,
) -> Iterator[str]:
    """The event stream of one (existing) rollout, starting after log line ``after_seq``.

    ``once``: send what there is now and close (the client reconnects soon: polling when streams run out).
    """
    retry = POLLING_RECONNECT_MILLISECONDS if once else RECONNECT_MILLISECONDS
    yield f"retry: {retry}\n\n"
    clock, sleep = settings.clock, settings.sleep
    started = last_sent = clock()
    last_state: dict[str, Any] | None = None
    while True:
        with transaction(sessions) as db:
            try:
                state, ended = state_json(db, rollout_id)
            except queries.NotFound:
                yield event("end", {"state": "gone"})
                return
            lines = queries.log_lines(db, rollout_id, after_seq=after_seq, limit=BATCH)
            batch = [
                event(
                    "log",
                    {"seq": x.seq, "node": x.node, "stream": x.stream, "text": x.text},
                    event_id=x.seq,
                )
                for x in lines
            ]
        if lines:
            after_seq = lines[-1].seq
        if last_state is None or _changed(state, last_state):
            batch.append(event("state", state))
            last_state = state
        if ended and len(lines) < BATCH:  # the state was read first: every line it wrote is in
            batch.append(event("end", {"state": state["state"], "probe_report": state["probe_report"]}))
            yield "".join(batch)
            return
        now = clock()
        if batch:
            yield "".join(batch)
            last_sent = now
        elif now - last_sent >= settings.heartbeat_seconds:
            yield ": heartbeat\n\n"
            last_sent = now
        if once or now - started >= settings.lifetime_seconds:
            return  # the browser reconnects with Last-Event-ID
        if len(lines) < BATCH:
            sleep(settings.poll_seconds)


def _changed(state: dict[str, Any], last: dict[str, Any]) -> bool:
    # Elapsed time moves every poll; the page counts it itself, so only real changes are sent.
    def stable(data: dict[str, Any]) -> dict[str, Any]:
        progress = {k: v for k, v in data["progress"].items() if k not in ("elapsed_seconds", "eta_seconds")}
        return {**data, "progress": progress}

    return stable(state) != stable(last)
