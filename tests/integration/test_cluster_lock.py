"""The cluster update lock, fencing tokens and rollout progress against a real ZooKeeper on 127.0.0.1."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from tests.support.zookeeper_server import ZooKeeperServer, four_letter_word
from updater.domain.inventory import build_inventory
from updater.domain.placement import NodeLocation
from updater.domain.plan import plan_rollout
from updater.domain.rollout import Rollout
from updater.domain.states import NodeProgress, NodeState
from updater.services.cluster.lock import ClusterLock, LockHeld, LockNotHeld, StaleToken

_roots = itertools.count()


@pytest.fixture(scope="module")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    with ZooKeeperServer(tmp_path_factory.mktemp("zookeeper")) as server:
        yield server


def connect(hosts: str) -> KazooClient:
    client = KazooClient(hosts=hosts, timeout=5.0)
    client.start(timeout=15)
    return client


@pytest.fixture
def client(zookeeper: ZooKeeperServer) -> Iterator[KazooClient]:
    client = connect(zookeeper.hosts)
    yield client
    client.stop()
    client.close()


@pytest.fixture
def root() -> str:
    """A fresh subtree per test, so tests sharing the server never see each other's lock."""
    return f"/test-{next(_roots)}/corral/update"


def test_the_server_is_standalone_on_loopback(zookeeper: ZooKeeperServer) -> None:
    assert four_letter_word(zookeeper.port, "ruok") == "imok"
    assert "Mode: standalone" in four_letter_word(zookeeper.port, "srvr")


def test_first_acquire_gets_token_one_and_is_visible(client: KazooClient, root: str) -> None:
    lock = ClusterLock(client, root)
    assert lock.holder() is None
    holder = lock.acquire("rollout-a", "ops@controller pid 1")
    assert holder.token == 1
    assert lock.holder() == holder
    assert lock.current_token() == 1


def test_another_rollout_is_refused_and_told_who_holds_the_lock(client: KazooClient, root: str) -> None:
    lock = ClusterLock(client, root)
    first = lock.acquire("rollout-a", "ops@controller pid 1")
    with pytest.raises(LockHeld) as refused:
        lock.acquire("rollout-b", "web button")
    assert refused.value.holder == first
    message = str(refused.value)
    assert "held by rollout rollout-a (ops@controller pid 1" in message
    assert f"-e corral_lock_break={first.token}" in message
    assert lock.holder() == first


def test_the_same_rollout_takes_the_lock_back_with_a_newer_token(client: KazooClient, root: str) -> None:
    lock = ClusterLock(client, root)
    first = lock.acquire("rollout-a", "worker 1")
    again = lock.acquire("rollout-a", "worker 2")
    assert again.token > first.token
    assert lock.holder() == again
    # The interrupted worker's token is fenced off: its writes are refused.
    with pytest.raises(StaleToken, match=f"fencing token {first.token} is stale"):
        lock.write_progress(first.token, "rollout-a", "node1", NodeProgress(NodeState.DRAINING, "v1"))
    lock.write_progress(again.token, "rollout-a", "node1", NodeProgress(NodeState.DRAINING, "v1"))
    assert lock.read_progress("rollout-a") == {"node1": NodeProgress(NodeState.DRAINING, "v1")}


def test_break_needs_the_holders_token(client: KazooClient, root: str) -> None:
    lock = ClusterLock(client, root)
    holder = lock.acquire("rollout-a", "worker 1")
    with pytest.raises(
        LockNotHeld, match=f"held by rollout rollout-a \\(worker 1\\) with token {holder.token}"
    ):
        lock.break_lock(holder.token + 5)
    assert lock.holder() == holder
    assert lock.break_lock(holder.token) == holder
    assert lock.holder() is None
    with pytest.raises(LockNotHeld, match="nobody holds the cluster update lock"):
        lock.break_lock(holder.token)


def test_a_stale_worker_cannot_set_a_boot_pointer_after_a_newer_rollout_took_over(
    client: KazooClient, root: str
) -> None:
    lock = ClusterLock(client, root)
    old = lock.acquire("rollout-a", "worker that hung")
    lock.set_boot_pointer(old.token, "node2", {"once": "image-v2", "default": "image-v1"})
    lock.break_lock(old.token)
    new = lock.acquire("rollout-b", "new worker")
    lock.set_boot_pointer(new.token, "node2", {"once": None, "default": "image-v1"})
    with pytest.raises(
        StaleToken, match=f"fencing token {old.token} is stale \\(token {new.token} was issued"
    ):
        lock.set_boot_pointer(old.token, "node2", {"once": "image-v2", "default": "image-v2"})
    with pytest.raises(StaleToken):
        lock.set_boot_pointer(old.token, "node3", {"once": "image-v2"})
    assert lock.boot_pointer("node2") == {"once": None, "default": "image-v1"}
    # The refused write to a node that had no pointer left nothing behind.
    assert lock.boot_pointer("node3") is None
    assert client.exists(f"{root}/boot/node3") is None


def test_release_needs_the_current_token_and_fences_the_releaser(client: KazooClient, root: str) -> None:
    lock = ClusterLock(client, root)
    holder = lock.acquire("rollout-a", "worker")
    with pytest.raises(LockNotHeld, match="cannot release a lock held by rollout rollout-a"):
        lock.release("rollout-b", holder.token)
    lock.release("rollout-a", holder.token)
    assert lock.holder() is None
    with pytest.raises(StaleToken):
        lock.write_progress(holder.token, "rollout-a", "node1", NodeProgress())
    assert lock.acquire("rollout-b", "next").token == holder.token + 2


def test_a_write_before_any_token_was_issued_is_refused(client: KazooClient, root: str) -> None:
    lock = ClusterLock(client, root)
    with pytest.raises(LockNotHeld, match="no fencing token was ever issued"):
        lock.write_progress(1, "rollout-a", "node1", NodeProgress())


def test_concurrent_acquires_of_two_rollouts_have_one_winner(zookeeper: ZooKeeperServer, root: str) -> None:
    clients = [connect(zookeeper.hosts) for _ in range(6)]
    barrier = threading.Barrier(len(clients))
    winners: list[str] = []
    refused: list[str] = []

    def contend(index: int, client: KazooClient) -> None:
        rollout_id = f"rollout-{index}"
        barrier.wait()
        try:
            ClusterLock(client, root).acquire(rollout_id, f"worker {index}")
            winners.append(rollout_id)
        except LockHeld as error:
            refused.append(error.holder.rollout_id)

    try:
        threads = [threading.Thread(target=contend, args=pair) for pair in enumerate(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(winners) == 1
        assert refused == [winners[0]] * (len(clients) - 1)
        holder = ClusterLock(clients[0], root).holder()
        assert holder is not None
        assert holder.rollout_id == winners[0]
    finally:
        for client in clients:
            client.stop()
            client.close()


def test_no_write_with_the_old_token_lands_after_the_takeover(zookeeper: ZooKeeperServer, root: str) -> None:
    """A worker writes progress in a loop while a new rollout takes over: every write that ZooKeeper
    accepted was ordered before the takeover, every later one was refused."""
    writer_client, taker_client = connect(zookeeper.hosts), connect(zookeeper.hosts)
    try:
        writer_lock = ClusterLock(writer_client, root)
        old = writer_lock.acquire("rollout-a", "old worker")
        refused = threading.Event()
        accepted = 0

        def write_until_refused() -> None:
            nonlocal accepted
            while True:
                try:
                    writer_lock.write_progress(
                        old.token, "rollout-a", "node1", NodeProgress(NodeState.DRAINING)
                    )
                    accepted += 1
                except StaleToken:
                    refused.set()
                    return

        writer = threading.Thread(target=write_until_refused)
        writer.start()
        taker = ClusterLock(taker_client, root)
        deadline = time.monotonic() + 30
        while accepted < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert accepted >= 20, "the old worker could not write while it held the lock"
        taker.break_lock(old.token)
        new = taker.acquire("rollout-b", "new worker")
        writer.join(timeout=30)
        assert refused.is_set()
        _, progress_stat = taker_client.get(f"{root}/rollouts/rollout-a/nodes/node1")
        _, lock_stat = taker_client.get(f"{root}/lock")
        assert progress_stat.mzxid < lock_stat.czxid
        assert taker.current_token() == new.token
    finally:
        for client in (writer_client, taker_client):
            client.stop()
            client.close()


def test_rollout_record_and_progress_survive_a_zookeeper_restart(tmp_path: Path) -> None:
    inventory = build_inventory([NodeLocation(f"node{i}") for i in (1, 2, 3)])
    plan = plan_rollout(inventory, "v2")
    with ZooKeeperServer(tmp_path / "zk") as server:
        client = connect(server.hosts)
        try:
            lock = ClusterLock(client)
            holder = lock.acquire("rollout-7", "worker")
            rollout = Rollout.create("rollout-7", inventory, plan)
            rollout.start()
            rollout.move_node("node1", NodeState.DRAINING)
            lock.write_rollout(holder.token, rollout)
            lock.write_progress(holder.token, "rollout-7", "node1", rollout.nodes["node1"])
        finally:
            client.stop()
            client.close()
        server.restart()
        client = connect(server.hosts)
        try:
            lock = ClusterLock(client)
            assert lock.holder() == holder
            restored = lock.read_rollout("rollout-7")
            assert restored == rollout
            assert restored is not None
            assert restored.executed == ["node1"]
            assert lock.read_progress("rollout-7") == {"node1": NodeProgress(NodeState.DRAINING)}
            # A restarted worker of the same rollout takes the lock back and continues.
            again = lock.acquire("rollout-7", "restarted worker")
            assert again.token == holder.token + 1
            again_plan = plan_rollout(inventory, "v2", progress=lock.read_progress("rollout-7"))
            assert again_plan.node_order() == ("node1", "node2", "node3")
        finally:
            client.stop()
            client.close()


@pytest.mark.parametrize("bad", ["", "a/b", ".."])
def test_bad_names_are_refused_before_anything_is_written(client: KazooClient, root: str, bad: str) -> None:
    lock = ClusterLock(client, root)
    with pytest.raises(ValueError, match="contain no '/'"):
        lock.acquire(bad, "worker")
    holder = lock.acquire("rollout-a", "worker")
    with pytest.raises(ValueError, match="invalid node name"):
        lock.write_progress(holder.token, "rollout-a", bad, NodeProgress())


def test_the_nodes_of_one_batch_move_at_the_same_time_and_no_move_is_lost(
    zookeeper: ZooKeeperServer, root: str
) -> None:
    """Domain batches run their nodes in parallel: each node's transition is a read-modify-write of the
    rollout record, checked against the record's version, so concurrent moves are all kept."""
    locations = [NodeLocation(f"r{r}n{n}", "site1", f"rack{r}") for r in (1, 2, 3) for n in (1, 2, 3)]
    inventory = build_inventory(locations, quorum_override=["r1n1", "r2n1", "r3n1"])
    plan = plan_rollout(inventory, "v2", batch_mode="domain", crush_failure_domain="rack")
    batch = next(step.nodes for step in plan.steps if len(step.nodes) > 1)
    assert len(batch) == 2
    setup = connect(zookeeper.hosts)
    try:
        lock = ClusterLock(setup, root=root)
        holder = lock.acquire("rollout-batch", "worker")
        rollout = Rollout.create("rollout-batch", inventory, plan)
        rollout.start()
        lock.write_rollout(holder.token, rollout)
    finally:
        setup.stop()
        setup.close()
    start = threading.Barrier(len(batch))
    errors: list[BaseException] = []

    def walk(node: str) -> None:
        worker = connect(zookeeper.hosts)
        try:
            own = ClusterLock(worker, root=root)
            start.wait()
            for state in (NodeState.DRAINING, NodeState.DRAINED, NodeState.REBOOTING):
                own.update_rollout(
                    holder.token,
                    "rollout-batch",
                    lambda r, s=state: r.move_node(node, s),
                    progress_of=node,
                )
        except BaseException as error:  # the assertion below shows it
            errors.append(error)
        finally:
            worker.stop()
            worker.close()

    threads = [threading.Thread(target=walk, args=(node,)) for node in batch]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    check = connect(zookeeper.hosts)
    try:
        lock = ClusterLock(check, root=root)
        record = lock.read_rollout("rollout-batch")
        assert record is not None
        assert sorted(record.executed) == sorted(batch)
        assert {node: record.nodes[node].state for node in batch} == dict.fromkeys(batch, NodeState.REBOOTING)
        assert {node: lock.read_progress("rollout-batch")[node].state for node in batch} == dict.fromkeys(
            batch, NodeState.REBOOTING
        )
        # A worker whose token is stale cannot move anything, even with a fresh read of the record.
        newer = lock.acquire("rollout-batch", "restarted worker")
        with pytest.raises(StaleToken):
            lock.update_rollout(
                holder.token, "rollout-batch", lambda r: r.move_node(batch[0], NodeState.VERIFYING)
            )
        assert newer.token == holder.token + 1
    finally:
        check.stop()
        check.close()


def test_a_move_that_raced_another_is_applied_again_on_the_fresh_record(
    zookeeper: ZooKeeperServer, client: KazooClient, root: str
) -> None:
    """Deterministic interleaving: while node A's change is being computed, node B's move commits first.
    A's first commit fails on the record's version; A re-reads and re-applies; both moves are kept."""
    locations = [NodeLocation(f"r{r}n{n}", "site1", f"rack{r}") for r in (1, 2, 3) for n in (1, 2, 3)]
    inventory = build_inventory(locations, quorum_override=["r1n1", "r2n1", "r3n1"])
    plan = plan_rollout(inventory, "v2", batch_mode="domain", crush_failure_domain="rack")
    first, second = next(step.nodes for step in plan.steps if len(step.nodes) > 1)
    lock = ClusterLock(client, root=root)
    holder = lock.acquire("rollout-race", "worker")
    rollout = Rollout.create("rollout-race", inventory, plan)
    rollout.start()
    lock.write_rollout(holder.token, rollout)
    other = connect(zookeeper.hosts)
    calls: list[int] = []
    try:
        rival = ClusterLock(other, root=root)

        def move_first(record: Rollout) -> None:
            calls.append(len(record.executed))
            if len(calls) == 1:  # B commits between A's read and A's commit
                rival.update_rollout(
                    holder.token, "rollout-race", lambda r: r.move_node(second, NodeState.DRAINING)
                )
            record.move_node(first, NodeState.DRAINING)

        lock.update_rollout(holder.token, "rollout-race", move_first, progress_of=first)
    finally:
        other.stop()
        other.close()
    assert calls == [0, 1]  # applied twice: on the stale record, then on the one that has B's move
    record = lock.read_rollout("rollout-race")
    assert record is not None
    assert record.executed == [second, first]
    assert lock.read_progress("rollout-race")[first].state is NodeState.DRAINING
