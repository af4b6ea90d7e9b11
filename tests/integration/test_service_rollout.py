"""The rollout service against real components, without lab nodes: a real ZooKeeper (the lock, the control
and owner znodes), a real Redis and a real ``corral-updater worker`` process, a home made by
``corral-updater init``. The nodes of this inventory are loopback ports nobody listens on, so preflight sees
them not answer; what needs real nodes (a whole rollout, kill -9 mid-node, pause and abort after a node) is in
``tests/lab/test_service_rollout.py``.
"""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient

from tests.support.net import free_port
from tests.support.redis_server import RedisServer
from tests.support.service_stack import CLI, Service, init_service, service_env, write_inventory
from tests.support.zookeeper_server import ZooKeeperServer
from updater.domain.inventory import build_inventory
from updater.domain.placement import NodeLocation
from updater.domain.states import RolloutState
from updater.services.cluster.lock import ClusterLock, StaleToken
from updater.services.installation.overview import build_overview
from updater.services.jobs import TASK_OBSERVE_CLUSTER, TASK_ROLLOUT
from updater.services.rollouts import control as rollouts
from updater.services.rollouts.ownership import RunOwner, claim_run, process_start, run_owner
from updater.services.rollouts.records import apply_control, plan_and_begin, read_control, request_control
from updater.store import queries
from updater.store.models import ReleaseSource
from updater.tasks.rollout import OBSERVE_ENTRY

VERSION = "0.2.0"
NODES = ("node1", "node2", "node3")


@pytest.fixture(scope="module")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    with ZooKeeperServer(tmp_path_factory.mktemp("zookeeper")) as server:
        yield server


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, zookeeper: ZooKeeperServer) -> Iterator[Service]:
    work = tmp_path_factory.mktemp("service-rollout")
    environment = pytest.MonkeyPatch()  # preview runs ansible-runner in this process, as the web process does
    for name, value in service_env().items():
        environment.setenv(name, value)
    redis = RedisServer()
    redis.start()
    hosts = {
        node: {
            "ansible_host": "127.0.0.1",
            "ansible_port": free_port(),  # nothing listens: the node does not answer
            "corral_address": "127.0.0.1",
            "ansible_ssh_common_args": "-o ConnectTimeout=3 -o StrictHostKeyChecking=no",
        }
        for node in NODES
    }
    inventory = write_inventory(
        work / "inventory.yml",
        {"all": {"children": {"nodes": {"hosts": hosts}}}},
        {"corral_rolling_zookeeper_hosts": zookeeper.hosts, "rolling_node_roles": []},
    )
    built = init_service(work, redis_url=redis.url, inventory=inventory)
    staged = work / "staging" / VERSION
    staged.mkdir(parents=True)
    (staged / "manifest.json").write_text("{}")
    with built.db() as db:
        queries.add_release(
            db,
            version=VERSION,
            channel="stable",
            release_date=dt.date(2026, 11, 1),
            source=ReleaseSource.IMPORTED,
            staged_path=str(staged),
            checks=[queries.CheckResult("signature", True), queries.CheckResult("license", True)],
        )
    try:
        built.start_worker()
        yield built
    finally:
        built.close()
        redis.stop()
        environment.undo()


@pytest.fixture
def lock(zookeeper: ZooKeeperServer) -> Iterator[ClusterLock]:
    client = KazooClient(hosts=zookeeper.hosts, timeout=5.0)
    client.start(timeout=15)
    try:
        yield ClusterLock(client)
    finally:
        client.delete("/corral/update", recursive=True)
        client.stop()
        client.close()


def _record(service: Service, rollout_id: str, state: RolloutState, by: str = "alice") -> None:
    """A rollout row as start() writes it (and, for ``running``, as a killed worker leaves it)."""
    with service.db() as db:
        release = queries.find_release(db, VERSION)
        assert release is not None
        rollout = queries.add_rollout(
            db, rollout_id=rollout_id, release=release, created_by=by, plan={}, nodes=list(NODES)
        )
        rollout.state = state


def _end(service: Service, rollout_id: str) -> None:
    with service.db() as db:
        row = queries.get_rollout(db, rollout_id)
        if row.state not in (RolloutState.SUCCEEDED, RolloutState.ABORTED, RolloutState.FAILED):
            row.state = RolloutState.ABORTED


def _rollout_count(service: Service) -> int:
    with service.db() as db:
        return len(queries.list_rollouts(db, limit=1000))


def test_start_is_refused_with_a_conflict_naming_the_holder_of_the_zookeeper_lock(
    service: Service, lock: ClusterLock
) -> None:
    lock.acquire("update-by-hand", "ansible-playbook on ops1")
    before = _rollout_count(service)
    with service.db() as db, pytest.raises(rollouts.RolloutConflict) as refused:
        rollouts.start(service.config, db, VERSION, "bob", service.enqueue)
    assert "rollout update-by-hand held by ansible-playbook on ops1 since" in str(refused.value)
    assert refused.value.holder.startswith("rollout update-by-hand")
    assert _rollout_count(service) == before
    assert rollouts.lock_status(service.config) == {
        "holder": "update-by-hand",
        "owner": "ansible-playbook on ops1",
        "token": 1,
        "since": rollouts.lock_status(service.config)["since"],  # type: ignore[index]
    }


def test_start_is_refused_with_a_conflict_while_a_rollout_is_active_in_the_store(
    service: Service, lock: ClusterLock
) -> None:
    _record(service, "update-earlier", RolloutState.PAUSED, by="alice")
    try:
        with (
            service.db() as db,
            pytest.raises(rollouts.RolloutConflict, match="rollout update-earlier started by alice at"),
        ):
            rollouts.start(service.config, db, VERSION, "bob", service.enqueue)
    finally:
        _end(service, "update-earlier")


def test_preflight_names_each_node_that_does_not_answer_and_start_records_nothing(
    service: Service, lock: ClusterLock
) -> None:
    with service.db() as db:
        preview = rollouts.preview(service.config, db, VERSION)
    checks = {check.name: check for check in preview.preflight}
    assert checks["release staged"].passed
    assert checks["release verified"].passed
    assert checks["update lock"].passed
    assert not checks["nodes answer"].passed
    for node in NODES:
        assert node in checks["nodes answer"].detail
    assert not preview.ready
    assert preview.batches == [["node1"], ["node2"], ["node3"]]
    assert preview.estimated_seconds == 3 * rollouts.DEFAULT_SECONDS_PER_NODE
    before = _rollout_count(service)
    queued: list[str] = []
    with (
        service.db() as db,
        pytest.raises(rollouts.RolloutRefused, match="preflight failed: nodes answer: node1"),
    ):
        rollouts.start(service.config, db, VERSION, "bob", queued.append)
    assert queued == []
    assert _rollout_count(service) == before


def test_the_worker_observes_the_nodes_for_the_overview_on_its_beat_task(service: Service) -> None:
    """``corral.observe_cluster`` (beat, and after every rollout run) through the real worker: the same
    play as the preflight, saved with its time; the Overview then shows every node unreachable with the reason
    instead of "unknown"."""
    result = service.celery.send_task(TASK_OBSERVE_CLUSTER).get(timeout=180)
    assert result["observed"] is True, result
    with service.db() as db:
        overview = build_overview(db, service.config)
    assert overview.observed_at is not None
    # This observation or a later one (the worker also observes when it starts and after every rollout).
    assert overview.observed_at >= dt.datetime.fromisoformat(result["observed_at"])
    assert overview.cluster_health == (
        "3 of 3 nodes need attention: node1 unreachable, node2 unreachable, node3 unreachable"
    )
    for node in overview.nodes:
        assert node.health == "unreachable", node
        assert "Connection refused" in node.health_detail or "UNREACHABLE" in node.health_detail, node
        assert node.release is None
    schedule = service.celery.conf.beat_schedule[OBSERVE_ENTRY]
    assert schedule["task"] == TASK_OBSERVE_CLUSTER
    assert schedule["schedule"].total_seconds() == service.config.cluster_observe_interval_seconds


def test_an_unknown_release_is_refused(service: Service, lock: ClusterLock) -> None:
    with service.db() as db, pytest.raises(rollouts.RolloutRefused, match=r"release 9\.9\.9 is unknown"):
        rollouts.preview(service.config, db, "9.9.9")


def test_abort_of_a_rollout_no_process_runs_ends_it_at_once_and_its_queued_task_does_nothing(
    service: Service, lock: ClusterLock
) -> None:
    _record(service, "update-queued", RolloutState.PLANNED)
    with service.db() as db:
        rollouts.abort(service.config, db, "update-queued", "carol")
    view = service.view("update-queued")
    assert view.state == "aborted"
    assert "aborted by carol" in view.log
    assert ("carol", "rollout.abort", "update-queued", "ok") in service.audit()
    # The task it had queued reaches the real worker later: the store says aborted, nothing runs.
    result = service.celery.send_task(TASK_ROLLOUT, args=["update-queued"])
    assert result.get(timeout=60) == "aborted"
    with service.db() as db, pytest.raises(rollouts.RolloutRefused, match="update-queued is aborted"):
        rollouts.abort(service.config, db, "update-queued", "carol")


def test_pause_of_a_running_rollout_is_a_control_request_in_zookeeper(
    service: Service, lock: ClusterLock, zookeeper: ZooKeeperServer
) -> None:
    _record(service, "update-running", RolloutState.RUNNING)
    owner = KazooClient(hosts=zookeeper.hosts, timeout=5.0)
    owner.start(timeout=15)
    try:
        # A live process runs it (its ephemeral owner znode), so pause and abort only ask.
        claim_run(ClusterLock(owner), "update-running", RunOwner("elsewhere", 1, "1", 0.0))
        with service.db() as db:
            rollouts.pause(service.config, db, "update-running", "dave")
        control = read_control(lock, "update-running")
        assert control is not None
        assert (control["action"], control["actor"]) == ("pause", "dave")
        assert service.view("update-running").state == "running"
        with service.db() as db, pytest.raises(rollouts.RolloutRefused, match="only a paused rollout"):
            rollouts.resume(service.config, db, "update-running", "dave", service.enqueue)
        with service.db() as db:
            rollouts.abort(service.config, db, "update-running", "dave")
        control = read_control(lock, "update-running")
        assert control is not None
        assert control["action"] == "abort"
        assert service.view("update-running").state == "running"  # the run applies it after its node
        with service.db() as db, pytest.raises(rollouts.RolloutRefused, match="already being aborted"):
            rollouts.pause(service.config, db, "update-running", "dave")
    finally:
        owner.stop()
        owner.close()
        _end(service, "update-running")


def test_pause_resume_and_abort_are_refused_in_the_wrong_state(service: Service, lock: ClusterLock) -> None:
    _record(service, "update-done", RolloutState.SUCCEEDED)
    with (
        service.db() as db,
        pytest.raises(rollouts.RolloutRefused, match="only a running rollout can be paused"),
    ):
        rollouts.pause(service.config, db, "update-done", "erin")
    with (
        service.db() as db,
        pytest.raises(rollouts.RolloutRefused, match="only a paused rollout can be resumed"),
    ):
        rollouts.resume(service.config, db, "update-done", "erin", service.enqueue)
    with service.db() as db, pytest.raises(rollouts.RolloutRefused, match="has already ended"):
        rollouts.abort(service.config, db, "update-done", "erin")
    with service.db() as db, pytest.raises(rollouts.RolloutRefused, match="there is no rollout 'nope'"):
        rollouts.pause(service.config, db, "nope", "erin")


def test_break_lock_needs_the_holders_token_and_is_audited(service: Service, lock: ClusterLock) -> None:
    _record(service, "update-dead", RolloutState.RUNNING)
    holder = lock.acquire("update-dead", "corral-updater worker that died")
    with (
        service.db() as db,
        pytest.raises(rollouts.RolloutRefused, match=f"token {holder.token + 5} is not the lock's"),
    ):
        rollouts.break_lock(service.config, db, holder.token + 5, "frank")
    assert lock.holder() == holder
    with service.db() as db:
        rollouts.break_lock(service.config, db, holder.token, "frank")
    assert lock.holder() is None
    assert rollouts.lock_status(service.config) is None
    view = service.view("update-dead")
    assert view.state == "failed"
    assert f"the cluster update lock (token {holder.token}) was broken by frank" in view.log
    assert ("frank", "rollout.break_lock", "update-dead", "ok") in service.audit()
    with (
        service.db() as db,
        pytest.raises(rollouts.RolloutRefused, match="nobody holds the cluster update lock"),
    ):
        rollouts.break_lock(service.config, db, holder.token, "frank")


def test_break_lock_is_refused_while_a_live_process_runs_the_rollout(
    service: Service, lock: ClusterLock, zookeeper: ZooKeeperServer
) -> None:
    holder = lock.acquire("update-alive", "corral-updater worker 2")
    owner = KazooClient(hosts=zookeeper.hosts, timeout=5.0)
    owner.start(timeout=15)
    try:
        claim_run(ClusterLock(owner), "update-alive", RunOwner("elsewhere", 2, "2", 0.0))
        with (
            service.db() as db,
            pytest.raises(rollouts.RolloutConflict, match="is being run by pid 2 on elsewhere"),
        ):
            rollouts.break_lock(service.config, db, holder.token, "frank")
        assert lock.holder() == holder
    finally:
        owner.stop()
        owner.close()


def test_the_cli_refuses_apply_while_the_lock_is_held_and_breaks_it_by_token(
    service: Service, lock: ClusterLock
) -> None:
    holder = lock.acquire("update-by-hand", "ansible-playbook on ops1")
    home = ["--home", str(service.home)]
    apply = subprocess.run(
        [CLI, *home, "apply", VERSION, "--yes"],
        capture_output=True,
        text=True,
        env=service_env(),
        check=False,
    )
    assert apply.returncode == 2
    assert "rollout update-by-hand held by ansible-playbook on ops1" in apply.stderr
    refused = [entry for entry in service.audit() if entry[1] == "rollout.start"][-1]
    assert refused[3] == "refused"
    broken = subprocess.run(
        [CLI, *home, "break-lock", str(holder.token)],
        capture_output=True,
        text=True,
        env=service_env(),
        check=False,
    )
    assert broken.returncode == 0, broken.stderr
    assert f"token {holder.token}" in broken.stdout
    assert lock.holder() is None
    no_rollout = subprocess.run(
        [CLI, *home, "pause"], capture_output=True, text=True, env=service_env(), check=False
    )
    assert no_rollout.returncode == 2
    assert "no rollout is in progress" in no_rollout.stderr


def test_a_new_worker_continues_a_running_rollout_whose_process_is_gone(
    service: Service, lock: ClusterLock, zookeeper: ZooKeeperServer
) -> None:
    # What a worker killed with SIGKILL leaves: the store says running, and its owner znode names a process of
    # this host that no longer exists (its ZooKeeper session has not expired yet).
    _record(service, "update-orphan", RolloutState.RUNNING)
    dead = subprocess.Popen(["true"])
    start = process_start(dead.pid)
    dead.wait()
    leftover = KazooClient(hosts=zookeeper.hosts, timeout=30.0)
    leftover.start(timeout=15)
    try:
        claim_run(
            ClusterLock(leftover),
            "update-orphan",
            RunOwner(socket.gethostname(), dead.pid, start or "0", 0.0),
        )
        worker = service.start_worker()  # worker_ready sends the recovery task
        view = service.wait_state("update-orphan", {"failed", "succeeded", "aborted"}, 120, worker)
    finally:
        leftover.stop()
        leftover.close()
    # It was taken over under its own id; it then stops honestly: this cluster has no boot service.
    assert "the process running this rollout is gone: continuing it" in view.log
    assert any(line.startswith("run started by pid") for line in view.log)
    assert any("pxe boot service" in line for line in view.log), view.log
    assert view.state == "failed"
    assert run_owner(lock, "update-orphan") is None


def _begun(lock: ClusterLock, rollout_id: str) -> int:
    """A rollout begun by the engine (lock taken, record running), as the playbook leaves it between nodes."""
    inventory = build_inventory([NodeLocation(node) for node in NODES])
    holder = lock.acquire(rollout_id, "ansible-playbook on ops1")
    plan_and_begin(lock, holder.token, rollout_id, inventory, VERSION)
    return holder.token


def test_the_engine_applies_a_pause_before_the_next_node_and_keeps_the_lock(lock: ClusterLock) -> None:
    token = _begun(lock, "update-p")
    assert apply_control(lock, token, "update-p") is None  # nobody asked: the node goes ahead
    request_control(lock, "update-p", "pause", "gina", 1.0)
    applied = apply_control(lock, token, "update-p")
    assert applied is not None
    assert (applied["action"], applied["reason"]) == ("pause", "pause requested by gina")
    record = lock.read_rollout("update-p")
    assert record is not None
    assert (record.state, record.reason) == ("paused", "pause requested by gina")
    holder = lock.holder()
    assert holder is not None
    assert (holder.rollout_id, holder.token) == ("update-p", token)


def test_the_engine_applies_an_abort_before_the_next_node_and_releases_the_lock(lock: ClusterLock) -> None:
    token = _begun(lock, "update-a")
    request_control(lock, "update-a", "abort", "gina", 1.0)
    applied = apply_control(lock, token, "update-a")
    assert applied is not None
    assert applied["action"] == "abort"
    record = lock.read_rollout("update-a")
    assert record is not None
    assert record.state == "aborted"
    assert lock.holder() is None


def test_a_stale_run_cannot_apply_a_control(lock: ClusterLock) -> None:
    old = _begun(lock, "update-s")
    lock.acquire("update-s", "a newer run of the same rollout")  # a newer token now
    request_control(lock, "update-s", "pause", "gina", 1.0)
    with pytest.raises(StaleToken):
        apply_control(lock, old, "update-s")
    record = lock.read_rollout("update-s")
    assert record is not None
    assert record.state == "running"
