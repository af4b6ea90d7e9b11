"""The Rollout page's controls and the lock over a real ZooKeeper (the authority for the update lock and a
rollout's pause/abort request) and a real Redis (where resume queues ``corral.rollout``).

No worker runs here: a queued rollout task must not start a real rollout; the lab tier does that. The cluster
is the local host (``ansible_connection=local``), so the preview's observe play really runs and really fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client
from kazoo.client import KazooClient

from tests.support.redis_server import RedisServer
from tests.support.zookeeper_server import ZooKeeperServer
from tests.unit.test_web import Site, bearer, csrf_from, login, make_site
from updater.domain.states import RolloutState
from updater.services.cluster.lock import ClusterLock
from updater.services.jobs import QUEUE
from updater.services.rollouts.records import read_control
from updater.store import queries as q
from updater.store.db import transaction
from updater.store.models import Outcome, ReleaseSource


@dataclass
class Cluster:
    site: Site
    zookeeper: ZooKeeperServer
    redis: RedisServer

    @contextmanager
    def lock(self) -> Iterator[ClusterLock]:
        client = KazooClient(hosts=self.zookeeper.hosts, timeout=10)
        client.start(timeout=10)
        try:
            yield ClusterLock(client)
        finally:
            client.stop()
            client.close()

    def queued(self) -> list[tuple[str, str]]:
        """(task name, argsrepr) of every message waiting in the worker's queue in Redis."""
        connection = redis_client.Redis.from_url(self.redis.url)
        try:
            messages = [json.loads(raw) for raw in connection.lrange(QUEUE, 0, -1)]
        finally:
            connection.close()
        return [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages]

    def state(self, rollout_id: str) -> RolloutState:
        with transaction(self.site.sessions) as db:
            return q.get_rollout(db, rollout_id).state

    def set_state(self, rollout_id: str, state: RolloutState) -> None:
        with transaction(self.site.sessions) as db:
            q.get_rollout(db, rollout_id).state = state


def _inventory(path: Path, zookeeper: str) -> Path:
    hosts = {
        f"node{i}": {
            "ansible_connection": "local",
            "corral_address": "127.0.0.1",
            "corral_rolling_zookeeper_hosts": zookeeper,
        }
        for i in (1, 2, 3)
    }
    path.write_text(json.dumps({"all": {"children": {"nodes": {"hosts": hosts}}}}))
    return path.rename(path.with_suffix(".yml"))  # YAML is a superset of JSON; ansible-inventory reads it


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    server = RedisServer()
    server.start()
    try:
        with ZooKeeperServer(tmp_path / "zookeeper") as zookeeper:
            site = make_site(
                tmp_path,
                redis_url=server.url,
                inventory_path=str(_inventory(tmp_path / "cluster.json", zookeeper.hosts)),
            )
            made = Cluster(site, zookeeper, server)
            _release(made)
            yield made
            site.app.extensions["corral"].engine.dispose()
    finally:
        server.stop()


def _release(cluster: Cluster) -> None:
    staged = cluster.site.home / "staging" / "1.3.0"
    staged.mkdir(parents=True)
    (staged / "manifest.json").write_text("{}")
    with transaction(cluster.site.sessions) as db:
        q.add_release(
            db,
            version="1.3.0",
            channel="stable",
            release_date=date(2026, 11, 1),
            source=ReleaseSource.IMPORTED,
            staged_path=str(staged),
            checks=[q.CheckResult("payload", True)],
        )


def _rollout(cluster: Cluster, rollout_id: str, state: RolloutState) -> None:
    with transaction(cluster.site.sessions) as db:
        release = q.find_release(db, "1.3.0")
        assert release is not None
        rollout = q.add_rollout(
            db, rollout_id=rollout_id, release=release, created_by="olga", plan={}, nodes=["node1", "node2"]
        )
        rollout.state = state


def _actions(site: Site) -> list[tuple[str, str, Outcome]]:
    return [(e.action, e.target, e.outcome) for e in site.audit() if e.action.startswith("rollout.")]


def test_the_lock_holder_is_shown_and_a_stale_lock_is_broken_by_its_token(cluster: Cluster) -> None:
    api = cluster.site.client()
    assert api.get("/api/v1/lock", headers=bearer(cluster.site.viewer_token)).get_json() == {
        "lock": None,
        "problem": None,
    }
    _rollout(cluster, "r-dead", RolloutState.RUNNING)
    with cluster.lock() as lock:
        holder = lock.acquire("r-dead", "worker@gone")
        _break_it(cluster, lock, holder.token)


def _break_it(cluster: Cluster, lock: ClusterLock, lock_token: int) -> None:
    api = cluster.site.client()
    state = api.get("/api/v1/lock", headers=bearer(cluster.site.viewer_token)).get_json()
    assert state["lock"]["holder"] == "r-dead"
    assert state["lock"]["token"] == lock_token

    client = cluster.site.client()
    login(client, "olga")
    page = client.get("/rollouts/r-dead").get_data(as_text=True)
    assert "Held by rollout r-dead (worker@gone)" in page
    assert f'name="token" value="{lock_token}"' in page
    assert 'data-confirm="Break the lock held by r-dead' in page

    wrong = api.post(
        "/api/v1/lock/break", json={"token": lock_token + 1}, headers=bearer(cluster.site.operator_token)
    )
    assert wrong.status_code == 422
    assert f"token {lock_token + 1} is not the lock's" in wrong.get_json()["error"]["message"]
    assert lock.holder() is not None

    token = csrf_from(client, "/rollouts/r-dead")
    broken = client.post(
        "/lock/break", data={"csrf_token": token, "token": str(lock_token), "rollout_id": "r-dead"}
    )
    assert broken.status_code == 302
    assert broken.headers["Location"] == "/rollouts/r-dead"
    assert lock.holder() is None
    assert cluster.state("r-dead") is RolloutState.FAILED
    assert "was broken by olga" in client.get("/rollouts/r-dead").get_data(as_text=True)
    assert _actions(cluster.site) == [
        ("rollout.break_lock", f"token {lock_token + 1}", Outcome.REFUSED),
        ("rollout.break_lock", "r-dead", Outcome.OK),
    ]


def test_pause_resume_and_abort_go_through_zookeeper_and_the_queue(cluster: Cluster) -> None:
    _rollout(cluster, "r-run", RolloutState.RUNNING)
    api = cluster.site.client()
    operator = bearer(cluster.site.operator_token)
    paused = api.post("/api/v1/rollouts/r-run/pause", headers=operator)
    assert paused.status_code == 200, paused.get_json()
    with cluster.lock() as lock:
        _steer(cluster, lock)


def _steer(cluster: Cluster, lock: ClusterLock) -> None:
    api = cluster.site.client()
    operator = bearer(cluster.site.operator_token)
    control = read_control(lock, "r-run")
    assert control is not None
    assert (control["action"], control["actor"]) == ("pause", "olga")
    log = api.get("/api/v1/rollouts/r-run/log", headers=operator).get_json()["lines"]
    assert "pause requested by olga" in log[-1]["text"]

    again = api.post("/api/v1/rollouts/r-run/resume", headers=operator)
    assert again.status_code == 422  # still running: the run has not paused yet
    cluster.set_state("r-run", RolloutState.PAUSED)  # what the run does once the node in progress is whole
    resumed = api.post("/api/v1/rollouts/r-run/resume", headers=operator)
    assert resumed.status_code == 200, resumed.get_json()
    assert read_control(lock, "r-run") is None
    assert cluster.queued() == [("corral.rollout", "['r-run']")]

    client = cluster.site.client()
    login(client, "olga")
    token = csrf_from(client, "/rollouts/r-run")
    aborted = client.post("/rollouts/r-run/abort", data={"csrf_token": token})
    assert aborted.status_code == 302
    assert cluster.state("r-run") is RolloutState.ABORTED  # nobody runs it: aborted at once
    page = client.get("/rollouts/r-run").get_data(as_text=True)
    assert "Abort requested for rollout r-run." in page
    assert "/rollouts/r-run/pause" not in page  # ended: no controls
    assert [a for a, _, o in _actions(cluster.site) if o is Outcome.OK] == [
        "rollout.pause",
        "rollout.resume",
        "rollout.abort",
    ]


def test_a_refused_preflight_disables_the_confirm_button_and_start_with_the_reason(cluster: Cluster) -> None:
    client = cluster.site.client()
    login(client, "olga")
    page = client.get("/updates/1.3.0").get_data(as_text=True)
    assert 'id="preflight"' in page
    assert re.search(r"<td>nodes answer</td><td class=\"outcome failed\">FAILED</td>", page), page
    assert '<td>update lock</td><td class="outcome ok">passed</td>' in page
    assert '<button type="submit" id="confirm" disabled>' in page
    assert "Cannot start: nodes answer:" in page
    plan = cluster.site.client().get("/api/v1/releases/1.3.0/plan", headers=bearer(cluster.site.viewer_token))
    assert plan.status_code == 200
    body: dict[str, Any] = plan.get_json()
    assert body["ready"] is False
    assert body["version"] == "1.3.0"
    started = cluster.site.client().post(
        "/api/v1/rollouts", json={"version": "1.3.0"}, headers=bearer(cluster.site.operator_token)
    )
    assert started.status_code == 422
    assert "preflight failed: nodes answer" in started.get_json()["error"]["message"]
    with transaction(cluster.site.sessions) as db:
        assert q.list_rollouts(db) == []
    assert cluster.queued() == []
