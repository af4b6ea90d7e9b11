"""The update service rolls real lab nodes: ``rollouts.start`` records the rollout, a real
``corral-updater worker`` process (Celery over a real Redis) runs ``corral.cloud.rolling_update`` through
ansible-runner against the lab (real reboots into a v2 image derived from the lab's, the lab boot service),
with the lock and progress in a real ZooKeeper and the service's store in a real PostgreSQL server (the
browser tier rolls the lab with the embedded SQLite store). Engine only (``rolling_node_roles=[]``, no Ceph
deployed), like ``tests/lab/test_rolling_engine.py``, so each rollout takes about a minute.

The specs: a rollout to completion (steps, order = plan, one boot per node), ``kill -9`` of the worker in the
middle of a node and a new worker finishing the same rollout id without a second boot, pause after the node in
progress then resume, and abort after the node in progress (lock released). The release's collection carries a
service role double (``tests.lab.test_rolling_engine.SERVICE_DOUBLE``) whose drain and undrain the kill specs
hold open, so the worker dies in the middle of them.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import yaml
from kazoo.client import KazooClient

from tests.lab.conftest import LabSession
from tests.lab.test_rolling_engine import (
    SERVICE_DOUBLE,
    SERVICE_DOUBLE_DIR,
    build_collection_with_double,
    double_log,
)
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer
from tests.support.service_stack import (
    Service,
    init_service,
    service_env,
    wait_for,
    write_inventory,
)
from tests.support.zookeeper_server import ZooKeeperServer
from tests.unit import bundle_kit
from updater.domain.keyring import TrustStore
from updater.services.bundles.staging import verify_and_stage
from updater.services.cluster.boot import FENCE_DIR
from updater.services.rollouts import control as rollouts
from updater.store import queries
from updater.store.models import ReleaseSource

V1, V2 = "0.1.0", "0.2.0"
NODES = ("node1", "node2", "node3")
FAST = {
    "rolling_node_roles": [],
    "rolling_node_reboot_timeout": 60,
    "rolling_node_fence_timeout": 60,
    "rolling_node_release_retries": 5,
    "rolling_node_release_delay": 2,
}
ROLLOUT_TIMEOUT = 600


@dataclass
class Stack:
    session: LabSession
    zookeeper: ZooKeeperServer
    service: Service
    image: str
    bmc_password: str
    inventory: Path
    inventory_data: dict[str, object]
    double: Path  # the service double's log and hold files

    def write_inventory(self, *, double: bool = False) -> None:
        """The engine-only inventory; with ``double``, the service double is the one role rolled."""
        roles = {"rolling_node_roles": [SERVICE_DOUBLE]} if double else {}
        write_inventory(
            self.inventory,
            self.inventory_data,
            {"corral_rolling_zookeeper_hosts": self.zookeeper.hosts, **FAST, **roles},
        )

    def boots_since(self, count: int) -> list[tuple[str, str, str]]:
        return [(b.node, b.image, b.kind) for b in self.session.lab.boots()[count:]]

    def releases(self) -> dict[str, str]:
        out = {}
        for node in NODES:
            match = re.search(r"^CORRAL_VERSION=(.*)$", self.session.release(node), re.MULTILINE)
            assert match
            out[node] = match.group(1)
        return out

    def start(self, actor: str = "tester", *, double: bool = False) -> tuple[str, list[str]]:
        """Preview and start a rollout to v2; with ``double``, its runs roll the service double (the preview,
        like the web's, checks health with this checkout's collection, which has no double)."""
        queued: list[str] = []
        config = self.service.config
        self.write_inventory()
        with self.service.db() as db:
            preview = rollouts.preview(config, db, V2)
            assert preview.ready, preview.preflight
            rollout_id = rollouts.start(config, db, V2, actor, queued.append)
        if double:
            self.write_inventory(double=True)
        for queued_id in queued:  # after the commit, as the adapters do
            self.service.enqueue(queued_id)
        assert queued == [rollout_id]
        return rollout_id, [node for batch in preview.batches for node in batch]

    def wait_node_started(self, rollout_id: str, node: str) -> None:
        wait_for(
            lambda: self.service.view(rollout_id).steps[node]["started"] is not None,
            180,
            f"{node} starting",
            self.service.workers[-1],
        )

    def reset(self) -> None:
        """Every node back on v1, no lock, no rollout in ZooKeeper, the boot service's fences cleared."""
        self.write_inventory()
        for path in self.double.iterdir():
            path.unlink()
        for node in NODES:
            self.session.reset(node)
            shutil.rmtree(self.session.lab.layout.node_dir(node) / FENCE_DIR, ignore_errors=True)
        client = KazooClient(hosts=self.zookeeper.hosts, timeout=5.0)
        client.start(timeout=15)
        try:
            client.delete("/corral/update", recursive=True)
        finally:
            client.stop()
            client.close()
        for node in NODES:
            wait_for(partial(_answers, self.session, node), 120, f"{node} back after the reset")


def _answers(session: LabSession, node: str) -> bool:
    try:
        return "CORRAL_VERSION=0.1.0" in session.release(node)
    except Exception:
        return False


@pytest.fixture(scope="module")
def stack(lab: LabSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("service-rollout")
    base = lab.lab.images.get(lab.base_image)
    assert base.release.version == V1
    kit = bundle_kit.make_kit(work / "kit")
    issued = bundle_kit.issue(kit)
    image = lab.derive_image(V2, {"/etc/motd": "Corral 0.2.0\n"})
    artifacts = bundle_kit.make_artifacts(work / "good", V2, image=lab.lab.images.get(image).artifact)
    artifacts.collection = build_collection_with_double(work / "collection")
    double = work / "double"
    double.mkdir()
    bundle = bundle_kit.build_bundle(kit, V2, upgrade_from=">=0.1.0, <0.3.0", artifacts=artifacts)
    # preview/start run ansible-runner in this process too (the web and CLI processes do the same).
    environment = pytest.MonkeyPatch()
    for name, value in service_env().items():
        environment.setenv(name, value)
    environment.setenv(SERVICE_DOUBLE_DIR, str(double))  # the workers' plays inherit it
    redis = RedisServer()
    redis.start()
    zookeeper = ZooKeeperServer(work / "zookeeper")
    zookeeper.start()
    postgres = PostgresServer()
    service: Service | None = None
    try:
        postgres.start()
        inventory_data = yaml.safe_load(lab.inventory.read_text())
        inventory = work / "inventory.yml"
        write_inventory(
            inventory, inventory_data, {"corral_rolling_zookeeper_hosts": zookeeper.hosts, **FAST}
        )
        service = init_service(
            work,
            redis_url=redis.url,
            inventory=inventory,
            trust={
                "trust_root": kit.vendor.trust_root,
                "keyring": kit.vendor.keyring,
                "license": issued.license_path,
                "entitlement_key": issued.key_path,
            },
            database_url=postgres.create_database(),
        )
        assert service.config.effective_database_url.startswith("postgresql+psycopg:")
        # The import's part (another service): verify and stage the bundle, record the release and its checks.
        staging = service.home / "staging"
        staging.mkdir(mode=0o700)
        now = dt.datetime.now(dt.UTC)
        staged = verify_and_stage(
            bundle,
            trust=TrustStore.load(
                kit.vendor.trust_root.read_bytes(), kit.vendor.keyring.read_bytes(), now=now
            ),
            now=now,
            license_document=issued.document,
            entitlement_key=issued.key,
            installed_version=V1,
            node_count=len(NODES),
            base_images_dir=None,
            staging_root=staging,
        )
        with service.db() as db:
            queries.add_release(
                db,
                version=V2,
                channel="stable",
                release_date=staged.verified.manifest.release_date,
                source=ReleaseSource.IMPORTED,
                staged_path=str(staged.path),
                checks=[queries.CheckResult(name, True) for name in staged.verified.checks],
            )
        service.start_worker()
        hostvars = lab.hostvars("node1")
        built = Stack(
            lab,
            zookeeper,
            service,
            image,
            str(hostvars["corral_bmc_password"]),
            inventory,
            inventory_data,
            double,
        )
        built.reset()
        yield built
        built.reset()
    finally:
        if service is not None:
            service.close()
        postgres.stop()
        zookeeper.stop()
        redis.stop()
        environment.undo()


def test_a_worker_rolls_every_node_to_v2_in_the_planned_order_booting_each_once(stack: Stack) -> None:
    before = len(stack.session.lab.boots())
    started = time.monotonic()
    rollout_id, order = stack.start()
    view = stack.service.wait_state(rollout_id, {"succeeded", "failed", "aborted"}, ROLLOUT_TIMEOUT)
    elapsed = time.monotonic() - started
    assert view.state == "succeeded", "\n".join(view.log[-60:])
    assert order == list(NODES)
    assert view.executed == order
    assert stack.releases() == dict.fromkeys(NODES, V2)
    assert stack.boots_since(before) == [(node, stack.image, "once") for node in order]
    for node in NODES:
        step = view.steps[node]
        assert step["state"] == "active"
        assert step["started"] is not None
        assert step["finished"] is not None
        assert step["finished"] >= step["started"]
        assert set(step["phases"]) == {"drain", "reboot", "wait", "health", "undrain", "total"}
        assert step["phases"]["reboot"] > 0
    assert view.probe_report is not None
    assert view.probe_report["passed"] is True, view.probe_report
    assert view.probe_report["services"]["zookeeper"]["failures"] == 0
    assert any("ROLLING_DONE" in line for line in view.log)
    assert not any(stack.bmc_password in line for line in view.log)
    assert rollouts.lock_status(stack.service.config) is None
    print(f"\n[service-rollout] 3 nodes in {elapsed:.1f}s from start() to succeeded in the store")
    for node in NODES:
        print(f"[service-rollout] {node} {view.steps[node]['phases']}")
    stack.reset()


HELD = ("drain", "undrain")  # phases the service double holds open until the worker is killed


@pytest.fixture
def reset_after(stack: Stack) -> Iterator[Stack]:
    """The stack, reset after the test whatever its outcome: a failed kill spec leaves no rollout behind."""
    try:
        yield stack
    finally:
        stack.reset()


@pytest.mark.parametrize("phase", ["preflight", "drain", "trial boot", "verify", "undrain"])
def test_a_worker_killed_mid_node_is_replaced_and_the_same_rollout_finishes_without_a_second_boot(
    reset_after: Stack, phase: str
) -> None:
    """kill -9 of the worker's process group while node1 is in ``phase`` (issue 19: each phase of a node).
    In the drain and the undrain the run rolls the service double, held open in node1's ``phase`` until the
    kill: the worker dies in the middle of the role's task."""
    stack = reset_after
    before = len(stack.session.lab.boots())
    hold = stack.double / f"hold-{phase}-node1"
    if phase in HELD:
        hold.touch()
    rollout_id, order = stack.start(double=phase in HELD)
    worker = stack.service.workers[-1]
    if phase == "preflight":
        stack.wait_node_started(rollout_id, "node1")
    elif phase in HELD:
        wait_for(lambda: (phase, "start", "node1") in _double(stack), 240, f"node1's {phase}", worker)
    elif phase == "trial boot":
        wait_for(lambda: stack.boots_since(before), 180, "node1's trial boot", worker)
    else:  # verifying lasts a second or two with the engine only: killed then, or just after
        wait_for(
            lambda: (
                stack.service.view(rollout_id).steps["node1"]["state"] in {"verifying", "active"}
                and stack.boots_since(before)
            ),
            180,
            "node1 verifying",
            worker,
        )
    state = stack.service.view(rollout_id).steps["node1"]["state"]
    worker.kill()  # kill -9 of the worker and its pool, in the middle of node1
    killed_at = len(double_log(stack.double))
    print(f"\n[service-rollout] worker killed with node1 {state} ({phase})")
    assert stack.service.view(rollout_id).state == "running"
    # The dead run's play (its own session, deaf to SIGHUP) may outlive the process group: the takeover
    # kills whatever of it is left before it acts (issue 19 item 1a), so the new worker starts at once.
    orphans = _marked_processes(rollout_id)
    print(f"\n[service-rollout] the dead run's processes right after the kill: {len(orphans)}")
    stack.service.start_worker()  # worker_ready: recovery finds the rollout whose process is gone
    if phase in HELD:  # once the new run has begun (after its sweep), its own drain or undrain goes through
        wait_for(
            lambda: _runs_begun(stack, rollout_id) >= 2, 180, "the takeover's run", stack.service.workers[-1]
        )
        hold.unlink()
    view = stack.service.wait_state(rollout_id, {"succeeded", "failed", "aborted"}, ROLLOUT_TIMEOUT)
    assert view.state == "succeeded", "\n".join(view.log[-60:])
    assert any("the process running this rollout is gone: continuing it" in line for line in view.log)
    assert not [pid for pid in orphans if _alive(pid)], "a process of the dead run outlived the takeover"
    swept = [line for line in view.log if "a dead run of" in line]
    checks = sum("Check this run still owns the cluster" in line for line in view.log)
    print(f"[service-rollout] takeover sweep: {swept or 'nothing left to kill'}; token checks run: {checks}")
    assert view.executed == order == list(NODES)
    assert stack.releases() == dict.fromkeys(NODES, V2)
    assert stack.boots_since(before) == [(node, stack.image, "once") for node in NODES]
    if phase in HELD:
        _check_the_dead_run_changed_nothing_after_the_kill(stack, phase, killed_at)
    # one record over both runs (issue 19 items 2, 3): the probe report and node1's phases cover the dead run
    report = view.probe_report
    assert report is not None
    assert [run["run"] for run in report["runs"]] == [1, 2], report["runs"]
    assert len(report["seams"]) == 1
    print(f"[service-rollout] probe over both runs: {report['duration_s']} s, seam {report['seams'][0]}")
    for name, service in sorted(report["services"].items()):
        seam = service.get("longest_gap_spans_seam")
        print(
            f"[service-rollout] probe {name}: {service['failures']} failures of {service['operations']}, "
            f"longest gap {service['longest_gap_s']} s (across the seam: {seam})"
        )
    node1 = view.steps["node1"]
    spent = (node1["finished"] - node1["started"]).total_seconds()  # from its start in the dead run
    print(f"[service-rollout] node1 over both runs: {node1['phases']} ({spent:.1f} s from start to finish)")
    assert node1["phases"]["total"] >= spent - 2.0, (node1["phases"], spent)


def _double(stack: Stack) -> list[tuple[str, str, str]]:
    return [(action, edge, node) for action, edge, node, _run in double_log(stack.double)]


def _runs_begun(stack: Stack, rollout_id: str) -> int:
    return sum("(ansible-runner data in" in line for line in stack.service.view(rollout_id).log)


def _check_the_dead_run_changed_nothing_after_the_kill(stack: Stack, phase: str, killed_at: int) -> None:
    """The dead run's last act is the start of node1's ``phase`` (it never ended it, nor did anything after);
    the new run undid a half-done drain before draining node1 again, or ran node1's undrain once more."""
    log = double_log(stack.double)
    dead = log[killed_at - 1][3]
    assert log[killed_at - 1][:3] == (phase, "start", "node1"), log
    assert [line for line in log[killed_at:] if line[3] == dead] == [], "the dead run acted after the kill"
    new = [line for line in log[killed_at:] if line[3] != dead]
    assert len({run for *_, run in new}) == 1, new
    node1 = [(action, edge) for action, edge, node, _ in new if node == "node1"]
    again = ["undrain", "drain", "undrain"] if phase == "drain" else ["undrain"]
    assert node1 == [(action, edge) for action in again for edge in ("start", "end")], log
    for node in ("node2", "node3"):
        assert [(a, e) for a, e, n, _ in new if n == node] == [
            ("drain", "start"),
            ("drain", "end"),
            ("undrain", "start"),
            ("undrain", "end"),
        ], log
    print(f"[service-rollout] service double: dead run {log[:killed_at]}, new run's node1 {node1}")


def _marked_processes(rollout_id: str) -> list[int]:
    """Processes of this host carrying a run marker of ``rollout_id`` (CORRAL_ROLLOUT_RUN)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            if f"CORRAL_ROLLOUT_RUN={rollout_id}:".encode() in environ:
                found.append(int(proc.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def test_pause_stops_after_the_node_in_progress_and_resume_continues_the_same_rollout(stack: Stack) -> None:
    before = len(stack.session.lab.boots())
    config = stack.service.config
    rollout_id, _ = stack.start()
    stack.wait_node_started(rollout_id, "node1")
    with stack.service.db() as db:
        rollouts.pause(config, db, rollout_id, "operator1")
    view = stack.service.wait_state(rollout_id, {"paused", "succeeded", "failed"}, ROLLOUT_TIMEOUT)
    assert view.state == "paused", "\n".join(view.log[-60:])
    # node1 finished whole; nothing else was touched; the rollout keeps the lock.
    assert view.executed == ["node1"]
    assert stack.releases() == {"node1": V2, "node2": V1, "node3": V1}
    assert [step["state"] for step in view.steps.values()] == ["active", "active", "active"]
    assert stack.boots_since(before) == [("node1", stack.image, "once")]
    lock = rollouts.lock_status(config)
    assert lock is not None
    assert lock["holder"] == rollout_id
    with stack.service.db() as db, pytest.raises(rollouts.RolloutConflict, match=rollout_id):
        rollouts.start(config, db, V2, "someone else", lambda _id: None)
    queued: list[str] = []
    with stack.service.db() as db:
        rollouts.resume(config, db, rollout_id, "operator1", queued.append)
    for queued_id in queued:
        stack.service.enqueue(queued_id)
    view = stack.service.wait_state(rollout_id, {"succeeded", "failed", "aborted"}, ROLLOUT_TIMEOUT)
    assert view.state == "succeeded", "\n".join(view.log[-60:])
    assert view.executed == list(NODES)
    assert stack.boots_since(before) == [(node, stack.image, "once") for node in NODES]
    assert rollouts.lock_status(config) is None
    stack.reset()


def test_abort_ends_the_rollout_after_the_node_in_progress_and_releases_the_lock(stack: Stack) -> None:
    before = len(stack.session.lab.boots())
    config = stack.service.config
    rollout_id, _ = stack.start()
    stack.wait_node_started(rollout_id, "node1")
    with stack.service.db() as db:
        rollouts.abort(config, db, rollout_id, "operator1")
    view = stack.service.wait_state(rollout_id, {"aborted", "succeeded", "failed"}, ROLLOUT_TIMEOUT)
    assert view.state == "aborted", "\n".join(view.log[-60:])
    assert view.executed == ["node1"]
    assert stack.releases() == {"node1": V2, "node2": V1, "node3": V1}
    assert stack.boots_since(before) == [("node1", stack.image, "once")]
    assert rollouts.lock_status(config) is None
    actions = [(action, target) for _actor, action, target, _outcome in stack.service.audit()]
    assert ("rollout.abort", rollout_id) in actions
    stack.reset()
