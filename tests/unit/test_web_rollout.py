"""The Updates and Rollout pages, their API and the rollout's Server-Sent Events, on a real SQLite store.

What needs ZooKeeper or the worker (a plan over a real cluster, pause, resume, abort, break lock, a started
rollout) is in tests/integration/test_web_rollout.py; the unit tier has no cluster (its inventory is not one
the rollout service can use), so those answers are the service's clear refusals.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_web import Site, bearer, csrf_from, login, make_site
from updater.config import ServiceConfig
from updater.domain.states import NodeState, RolloutState
from updater.services.rollouts import control as rollouts
from updater.store import queries as q
from updater.store.db import transaction
from updater.store.models import Outcome, ReleaseSource
from updater.web.events import StreamSettings
from updater.web.progress import format_seconds, rollout_progress

START = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


class StreamTime:
    """The event stream's clock and sleep: a sleep moves the clock on at once, then runs the rollout's next
    scripted step, so what a stream sends and when it ends follow from its settings, not from the load.
    """

    def __init__(self, *steps: Callable[[], None]) -> None:
        self.now = 0.0
        self.sleeps = 0
        self._steps = list(steps)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self._steps:
            self._steps.pop(0)()

    def settings(self, *, lifetime_seconds: float = 4.0, max_streams: int = 8) -> StreamSettings:
        # Powers of two, so the clock adds up exactly: a heartbeat every 4 polls, the lifetime at the 16th.
        return StreamSettings(
            poll_seconds=0.25,
            heartbeat_seconds=1.0,
            lifetime_seconds=lifetime_seconds,
            max_streams=max_streams,
            clock=self.clock,
            sleep=self.sleep,
        )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = make_site(tmp_path)
    made.app.config["CORRAL_SSE"] = StreamTime().settings()
    yield made
    made.app.extensions["corral"].engine.dispose()


def _release(site: Site, version: str, *, staged: bool = True, passed: bool = True, notes: str = "") -> None:
    staged_dir = site.home / "staging" / version
    if staged:
        staged_dir.mkdir(parents=True)
        (staged_dir / "manifest.json").write_text("{}")
    with transaction(site.sessions) as db:
        q.add_release(
            db,
            version=version,
            channel="stable",
            release_date=date(2026, 11, 1),
            source=ReleaseSource.IMPORTED,
            notes=notes,
            staged_path=str(staged_dir) if staged else None,
            checks=[q.CheckResult("signature-threshold", True), q.CheckResult("payload", passed)],
        )


def _rollout(
    site: Site, rollout_id: str, state: RolloutState, *, lines: int = 0, version: str = "1.3.0"
) -> None:
    with transaction(site.sessions) as db:
        release = q.find_release(db, version)
        assert release is not None
        rollout = q.add_rollout(
            db, rollout_id=rollout_id, release=release, created_by="olga", plan={}, nodes=["node1", "node2"]
        )
        rollout.state = state
        rollout.started_at = START
        first = rollout.steps[0]
        first.started_at, first.finished_at = START, START + timedelta(seconds=100)
        first.phase_seconds = {"drain": 10.0, "total": 100.0}
        if state in (RolloutState.SUCCEEDED, RolloutState.ABORTED):
            rollout.finished_at = START + timedelta(seconds=250)
            rollout.probe_report = {"failures": 0, "requests": 1200}
        if lines:
            q.append_log(db, rollout_id, [("node1", "stdout", f"line {i}") for i in range(lines)])


def _events(response: Any) -> list[dict[str, Any]]:
    """Read an event stream to its end: one dict per event (``comment`` for heartbeats)."""
    text = ""
    for chunk in response.response:
        text += chunk if isinstance(chunk, str) else chunk.decode()
    events = []
    for block in text.split("\n\n"):
        if not block:
            continue
        event: dict[str, Any] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name == "":
                event["comment"] = value
            else:
                event[name] = value
        events.append(event)
    return events


def _logs(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["id"]) for e in events if e.get("event") == "log"]


# --- Server-Sent Events -------------------------------------------------------------------------------------


def test_events_arrive_in_order_and_the_stream_ends_when_the_rollout_ends(site: Site) -> None:
    _release(site, "1.3.0")
    _rollout(site, "r-live", RolloutState.RUNNING, lines=3)

    def node2_drains() -> None:
        with transaction(site.sessions) as db:
            q.append_log(db, "r-live", [("node2", "stdout", "TASK [drain]"), ("node2", "stdout", "ok")])
            step = q.get_rollout(db, "r-live").steps[1]
            step.state, step.started_at = NodeState.DRAINING, START + timedelta(seconds=120)

    def the_rollout_succeeds() -> None:
        with transaction(site.sessions) as db:
            q.append_log(db, "r-live", [(None, "event", "rollout succeeded")])
            rollout = q.get_rollout(db, "r-live")
            rollout.steps[1].state, rollout.steps[1].finished_at = (
                NodeState.ACTIVE,
                START + timedelta(seconds=200),
            )
            rollout.state, rollout.finished_at = RolloutState.SUCCEEDED, START + timedelta(seconds=210)
            rollout.probe_report = {"failures": 0}

    stream_time = StreamTime(node2_drains, the_rollout_succeeds)
    site.app.config["CORRAL_SSE"] = stream_time.settings()
    client = site.client()
    login(client, "vera")
    response = client.get("/rollouts/r-live/events")
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    events = _events(response)
    # One poll per step of the rollout, then its end: ended by the rollout, long before the stream's lifetime.
    assert stream_time.sleeps == 2
    assert stream_time.now < site.app.config["CORRAL_SSE"].lifetime_seconds
    assert events[0] == {"retry": "2000"}
    assert _logs(events) == [0, 1, 2, 3, 4, 5]
    states = [e for e in events if e.get("event") == "state"]
    assert len(states) == 3  # as it was, node2 draining, succeeded
    assert '"state":"draining"' in states[1]["data"]
    assert '"state":"succeeded"' in states[-1]["data"]
    assert '"done":2,"total":2' in states[-1]["data"]
    assert events[-1]["event"] == "end"
    assert '"probe_report":{"failures":0}' in events[-1]["data"]


def test_a_reconnect_with_last_event_id_resumes_after_the_last_line_seen(site: Site) -> None:
    _release(site, "1.3.0")
    _rollout(site, "r-done", RolloutState.SUCCEEDED, lines=6)
    client = site.client()
    login(client, "vera")
    assert _logs(_events(client.get("/rollouts/r-done/events"))) == [0, 1, 2, 3, 4, 5]
    resumed = _events(client.get("/rollouts/r-done/events", headers={"Last-Event-ID": "3"}))
    assert _logs(resumed) == [4, 5]
    assert resumed[-1]["event"] == "end"
    # The page's first connection says where its rendered log ends; a reconnect's header wins over it.
    assert _logs(_events(client.get("/rollouts/r-done/events?after=1"))) == [2, 3, 4, 5]
    both = client.get("/rollouts/r-done/events?after=1", headers={"Last-Event-ID": "4"})
    assert _logs(_events(both)) == [5]


def test_an_idle_stream_sends_heartbeats_and_ends_at_its_lifetime(site: Site) -> None:
    _release(site, "1.3.0")
    _rollout(site, "r-idle", RolloutState.RUNNING, lines=1)
    stream_time = StreamTime()
    site.app.config["CORRAL_SSE"] = stream_time.settings(lifetime_seconds=4.0)
    client = site.client()
    login(client, "vera")
    events = _events(client.get("/rollouts/r-idle/events"))
    assert stream_time.now == 4.0  # the first poll at its lifetime was its last
    assert len([e for e in events if e.get("comment") == "heartbeat"]) == 4  # one per idle second
    assert not [e for e in events if e.get("event") == "end"]  # the browser reconnects and goes on
    assert _logs(events) == [0]


def test_the_event_stream_is_also_served_to_api_tokens_and_refuses_bad_input(site: Site) -> None:
    _release(site, "1.3.0")
    _rollout(site, "r-done", RolloutState.SUCCEEDED, lines=2)
    api = site.client()
    stream = api.get("/api/v1/rollouts/r-done/events", headers=bearer(site.viewer_token))
    assert _logs(_events(stream)) == [0, 1]
    assert api.get("/api/v1/rollouts/r-done/events").status_code == 401
    assert api.get("/api/v1/rollouts/r-nope/events", headers=bearer(site.viewer_token)).status_code == 404
    bad = api.get(
        "/api/v1/rollouts/r-done/events", headers={**bearer(site.viewer_token), "Last-Event-ID": "seven"}
    )
    assert bad.status_code == 400
    assert "Last-Event-ID" in bad.get_json()["error"]["message"]
    too_big = api.get(f"/api/v1/rollouts/r-done/events?after={2**63}", headers=bearer(site.viewer_token))
    assert too_big.status_code == 400


# --- the Rollout page ---------------------------------------------------------------------------------------


def test_the_rollout_page_shows_live_progress_and_the_controls_to_operators(site: Site) -> None:
    _release(site, "1.3.0")
    _rollout(site, "r-live", RolloutState.RUNNING, lines=2)
    operator = site.client()
    login(operator, "olga")
    page = operator.get("/rollouts/r-live").get_data(as_text=True)
    assert 'data-events="/rollouts/r-live/events"' in page
    assert 'data-after="1"' in page
    assert "1 of 2 nodes" in page
    assert 'value="50"' in page
    for control in ("pause", "resume", "abort"):
        assert f'action="/rollouts/r-live/{control}"' in page
    assert "rollout.js" in page
    # The unit tier has no cluster to read the lock from: the reason is shown, nothing invented.
    assert "Cannot read the lock" in page
    viewer = site.client()
    login(viewer, "vera")
    seen = viewer.get("/rollouts/r-live").get_data(as_text=True)
    assert 'action="/rollouts/r-live/pause"' not in seen
    assert "1 of 2 nodes" in seen


def test_an_ended_rollout_shows_its_probe_report_and_no_controls(site: Site) -> None:
    _release(site, "1.3.0")
    _rollout(site, "r-done", RolloutState.SUCCEEDED, lines=2)
    client = site.client()
    login(client, "olga")
    for path in ("/rollouts/r-done", "/history/r-done"):
        page = client.get(path).get_data(as_text=True)
        assert '"requests": 1200' in page
        assert "data-events" not in page
        assert "/rollouts/r-done/pause" not in page
        assert "Cluster update lock" not in page
    assert client.get("/rollouts/r-nope").status_code == 404


def test_progress_counts_finished_nodes_and_estimates_the_rest_from_their_pace(site: Site) -> None:
    _release(site, "1.3.0")
    _rollout(site, "r-live", RolloutState.RUNNING)
    with transaction(site.sessions) as db:
        progress = rollout_progress(q.get_rollout(db, "r-live"), now=START + timedelta(seconds=130))
    assert (progress.done, progress.total, progress.percent) == (1, 2, 50)
    assert progress.elapsed_seconds == 130
    assert progress.eta_seconds == 100  # one node left at 100 s per node
    assert format_seconds(3725) == "1:02:05"
    assert format_seconds(65) == "1:05"
    assert format_seconds(None) == "\u2013"


# --- Updates, the confirm step and starting -----------------------------------------------------------------


def test_updates_offers_one_button_per_newer_verified_staged_release(site: Site) -> None:
    _release(site, "1.2.0")
    _release(site, "1.1.0")
    _release(site, "1.3.0", notes="# Corral 1.3.0\nFaster drains.")
    _release(site, "1.4.0", passed=False)
    _release(site, "1.5.0", staged=False)
    with transaction(site.sessions) as db:
        installed = q.find_release(db, "1.2.0")
        assert installed is not None
        q.mark_installed(db, installed)
    client = site.client()
    login(client, "vera")
    page = client.get("/updates").get_data(as_text=True)
    assert 'Installed release: <strong id="installed">1.2.0</strong>' in page
    assert page.count(">Update to ") == 1
    assert 'href="/updates/1.3.0">Update to 1.3.0</a>' in page
    assert "failed: payload" in page
    assert "Faster drains." in page


def test_the_confirm_step_disables_the_button_with_the_reason_when_the_plan_is_refused(site: Site) -> None:
    _release(site, "1.3.0")
    client = site.client()
    login(client, "olga")
    page = client.get("/updates/1.3.0").get_data(as_text=True)
    assert "The plan cannot be made: the inventory" in page
    assert '<button type="submit" id="confirm" disabled>' in page
    assert "Cannot start:" in page
    assert client.get("/updates/9.9.9").status_code == 404
    api = site.client()
    plan = api.get("/api/v1/releases/1.3.0/plan", headers=bearer(site.viewer_token))
    assert plan.status_code == 422
    assert "the inventory" in plan.get_json()["error"]["message"]
    assert api.get("/api/v1/releases/9.9.9/plan", headers=bearer(site.viewer_token)).status_code == 404


def test_a_second_apply_while_a_rollout_runs_gets_409_naming_it(site: Site) -> None:
    _release(site, "1.3.0")
    _rollout(site, "r-live", RolloutState.RUNNING)
    api = site.client()
    response = api.post("/api/v1/rollouts", json={"version": "1.3.0"}, headers=bearer(site.operator_token))
    assert response.status_code == 409
    message = response.get_json()["error"]["message"]
    assert "r-live" in message
    assert "olga" in message
    client = site.client()
    login(client, "olga")
    page = client.post("/rollouts", data={"version": "1.3.0", "csrf_token": csrf_from(client, "/updates")})
    assert page.status_code == 409
    assert "r-live" in page.get_data(as_text=True)
    refusals = [(e.action, e.outcome) for e in site.audit() if e.action != "login"]
    assert refusals == [("rollout.start", Outcome.REFUSED)] * 2
    with transaction(site.sessions) as db:
        assert [r.id for r in q.list_rollouts(db)] == ["r-live"]


def _config(site: Site) -> ServiceConfig:
    config: ServiceConfig = site.app.extensions["corral"].config
    return config


def test_an_apply_while_another_is_being_started_gets_409_naming_who_and_records_nothing(site: Site) -> None:
    """Two applies side by side: the second arrives while the first runs its preflight (the guard is held
    until the first's transaction has committed), and is refused naming the first, not run beside it."""
    _release(site, "1.3.0")
    with rollouts.starting(_config(site), "alice", "1.3.0"):
        api = site.client()
        response = api.post(
            "/api/v1/rollouts", json={"version": "1.3.0"}, headers=bearer(site.operator_token)
        )
        assert response.status_code == 409
        message = response.get_json()["error"]["message"]
        assert "another rollout is being started: alice is starting a rollout to 1.3.0 since" in message
        # The same guard holds in-process too (another gunicorn thread, or the CLI in this process).
        with (
            pytest.raises(rollouts.RolloutConflict, match="alice is starting"),
            rollouts.starting(_config(site), "bob", "1.3.0"),
        ):
            pass
    with transaction(site.sessions) as db:
        assert q.list_rollouts(db) == []
    refusals = [(e.action, e.outcome, e.detail) for e in site.audit()]
    assert refusals == [("rollout.start", Outcome.REFUSED, message)]
    # Let go: the next apply gets past the guard to the service's own answer (this tier has no cluster).
    after = site.client().post(
        "/api/v1/rollouts", json={"version": "1.3.0"}, headers=bearer(site.operator_token)
    )
    assert after.status_code == 422, after.get_json()


def test_a_start_guard_whose_process_was_killed_is_free_again(site: Site) -> None:
    """The guard is an flock: a CLI ``apply`` killed with SIGKILL mid-preflight leaves nothing to break."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from updater.config import ServiceConfig\n"
            "from updater.services.rollouts import control as rollouts\n"
            "with rollouts.starting(ServiceConfig(home=Path(sys.argv[1])), 'carol', '1.3.0'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
            str(site.home),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(rollouts.RolloutConflict, match=r"carol is starting a rollout to 1\.3\.0"),
            rollouts.starting(_config(site), "dave", "1.3.0"),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with rollouts.starting(_config(site), "dave", "1.3.0"):
        pass


def test_starting_an_unknown_release_is_refused_with_the_reason(site: Site) -> None:
    api = site.client()
    unknown = api.post("/api/v1/rollouts", json={"version": "9.9.9"}, headers=bearer(site.operator_token))
    assert unknown.status_code == 422
    assert "release 9.9.9 is unknown" in unknown.get_json()["error"]["message"]
    for body in ({}, {"version": ""}, {"version": 3}):
        bad = api.post("/api/v1/rollouts", json=body, headers=bearer(site.operator_token))
        assert bad.status_code == 400
    client = site.client()
    login(client, "olga")
    page = client.post("/rollouts", data={"version": "9.9.9", "csrf_token": csrf_from(client, "/updates")})
    assert page.status_code == 404
    with transaction(site.sessions) as db:
        assert q.list_rollouts(db) == []


# --- pause, resume, abort, the lock -------------------------------------------------------------------------


def test_controls_on_an_ended_or_unknown_rollout_are_refused_and_audited(site: Site) -> None:
    _release(site, "1.3.0")
    _rollout(site, "r-done", RolloutState.SUCCEEDED)
    api = site.client()
    for action in ("pause", "resume", "abort"):
        ended = api.post(f"/api/v1/rollouts/r-done/{action}", headers=bearer(site.operator_token))
        assert ended.status_code == 422, action
        assert "succeeded" in ended.get_json()["error"]["message"]
        unknown = api.post(f"/api/v1/rollouts/r-nope/{action}", headers=bearer(site.operator_token))
        assert unknown.status_code == 404
    assert [(e.action, e.outcome) for e in site.audit()] == [
        (f"rollout.{action}", Outcome.REFUSED)
        for action in ("pause", "pause", "resume", "resume", "abort", "abort")
    ]
    with transaction(site.sessions) as db:
        assert q.get_rollout(db, "r-done").state is RolloutState.SUCCEEDED


def test_the_lock_reports_why_it_cannot_be_read_and_breaking_it_needs_a_token(site: Site) -> None:
    api = site.client()
    state = api.get("/api/v1/lock", headers=bearer(site.viewer_token))
    assert state.status_code == 200
    assert state.get_json()["lock"] is None
    assert "the inventory" in state.get_json()["problem"]
    for token in ("seven", -1, True, None):
        bad = api.post("/api/v1/lock/break", json={"token": token}, headers=bearer(site.operator_token))
        assert bad.status_code == 400, token
    refused = api.post("/api/v1/lock/break", json={"token": 7}, headers=bearer(site.operator_token))
    assert refused.status_code == 422
    assert site.audit()[-1].action == "rollout.break_lock"
    assert site.audit()[-1].outcome is Outcome.REFUSED


def test_past_the_stream_limit_a_viewer_gets_one_pass_and_polls_so_threads_stay_free(site: Site) -> None:
    _release(site, "1.3.0")
    _rollout(site, "r-live", RolloutState.RUNNING, lines=2)
    stream_time = StreamTime()
    site.app.config["CORRAL_SSE"] = stream_time.settings(max_streams=1)
    client = site.client()
    login(client, "vera")
    held = client.get("/rollouts/r-live/events")  # takes the only slot until the server closes it
    polling = _events(client.get("/rollouts/r-live/events"))
    assert stream_time.sleeps == 0  # not held: one pass, then closed, without waiting for more
    assert polling[0] == {"retry": "1000"}
    assert _logs(polling) == [0, 1]
    assert _events(held)[0] == {"retry": "2000"}
    held.close()  # what the server does when the stream ends: the slot is free again
    assert _events(client.get("/rollouts/r-live/events"))[0] == {"retry": "2000"}
