"""Domain batches on real lab nodes: with ``corral_rolling_batch=domain`` and racks as the failure domain, the
quorum holders go one at a time and then every remaining node of one rack goes through the procedure at the
same time. Nine engine-only nodes in three racks (their own lab, so the shared one is not disturbed); the
lock and progress in a real ZooKeeper on loopback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.lab.conftest import LabSession, side_lab
from tests.lab.test_rolling_engine import V2, Controller, build_controller
from tests.support.zookeeper_server import ZooKeeperServer
from updater.lab.image import ImageStore
from updater.lab.lab import Lab

BATCH_LAB = side_lab("r")
NODES = tuple(f"node{i}" for i in range(1, 10))


@pytest.fixture(scope="module")
def batch_controller(lab: LabSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    side = Lab(BATCH_LAB)
    if (side.root / side.name).exists():
        side.down()
    session: LabSession | None = None
    try:
        result = side.up(nodes=len(NODES), racks=3, disks_per_node=1, disk_size_gib=1, image=lab.base_image)
        session = LabSession(side, result.image)
        with ZooKeeperServer(tmp_path_factory.mktemp("zookeeper-batches")) as zookeeper:
            yield build_controller(session, zookeeper, tmp_path_factory.mktemp("batches"), nodes=len(NODES))
    finally:
        side.down()
        for image in session.derived if session else []:
            ImageStore().remove(image)


def _seconds(boot_time: str) -> float:
    return datetime.fromisoformat(boot_time).timestamp()


def test_domain_batches_take_every_node_of_a_rack_at_the_same_time(batch_controller: Controller) -> None:
    ctl = batch_controller
    before = len(ctl.session.lab.boots())
    run = ctl.run("-e", f"corral_bundle={ctl.good.bundle}", "-e", "corral_rolling_batch=domain", timeout=900)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    steps = [
        (kind, [node.strip() for node in nodes.split(",")])
        for kind, nodes in re.findall(r"\d+\. (quorum|domain|node): ([\w, ]+) \(", run.stdout)
    ]
    assert sorted(node for _, nodes in steps for node in nodes) == sorted(NODES)
    batches = [nodes for kind, nodes in steps if kind == "domain" and len(nodes) > 1]
    assert batches, f"the plan has no batch of several nodes: {steps}"
    releases = {node: ctl.session.release(node) for node in NODES}
    assert all(f"CORRAL_VERSION={V2}" in text for text in releases.values()), releases
    boots = ctl.session.lab.boots()[before:]
    assert sorted(boot.node for boot in boots) == sorted(NODES)  # one boot per node
    at = {boot.node: _seconds(boot.time) for boot in boots}
    # Executed in plan order, step by step (inside a batch, in whatever order the nodes started).
    done = re.search(r"ROLLING_DONE rollout=\S+ release=\S+ executed=([\w,]+)", run.stdout)
    assert done, run.stdout[-4000:]
    executed = done.group(1).split(",")
    position = 0
    for _, nodes in steps:
        assert sorted(executed[position : position + len(nodes)]) == sorted(nodes), (steps, executed)
        position += len(nodes)
    # At the same time: the nodes of a batch boot within a few seconds of each other, while one node's
    # whole procedure (drain to undrain) takes longer; one at a time they would be a procedure apart.
    totals = [float(t) for t in re.findall(r"ROLLING_TIMING node=\S+ .*? total=([\d.]+)", run.stdout)]
    assert len(totals) == len(NODES)
    for nodes in batches:
        spread = max(at[node] for node in nodes) - min(at[node] for node in nodes)
        print(f"\n[batches] {nodes}: trial boots {spread:.1f}s apart; one node's procedure >= {min(totals)}s")
        assert spread < min(totals) / 2, (nodes, spread, totals)
