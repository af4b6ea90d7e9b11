"""The rolling-update planner on hand-written inventories: order, batches, resume, finalise, errors."""

from __future__ import annotations

import pytest

from updater.domain.inventory import build_inventory
from updater.domain.placement import NodeLocation
from updater.domain.plan import (
    BatchMode,
    PlanError,
    StepKind,
    ceph_major,
    plan_rollout,
    require_osd_release,
)
from updater.domain.states import NodeProgress, NodeState


def lab(count: int = 3) -> list[NodeLocation]:
    return [NodeLocation(f"node{i}") for i in range(1, count + 1)]


def racked(sites: int, racks: int, per_rack: int) -> list[NodeLocation]:
    return [
        NodeLocation(f"s{s}r{r}n{n}", f"site{s}", f"rack{r}")
        for s in range(1, sites + 1)
        for r in range(1, racks + 1)
        for n in range(1, per_rack + 1)
    ]


def test_three_node_lab_is_three_quorum_steps_then_finalise() -> None:
    plan = plan_rollout(build_inventory(lab()), "v2")
    assert [step.kind for step in plan.steps] == [StepKind.QUORUM] * 3 + [StepKind.FINALISE]
    assert plan.node_order() == ("node1", "node2", "node3")
    assert plan.steps[0].quorum_services == ("ceph_mon", "zookeeper")
    assert plan.steps[-1].require_osd_release is None


def test_quorum_holders_go_first_then_the_rest_in_domain_order() -> None:
    plan = plan_rollout(build_inventory(lab(7)), "v2")
    assert plan.node_order() == tuple(f"node{i}" for i in (1, 2, 3, 4, 5, 6, 7))
    assert [step.kind for step in plan.steps[:5]] == [StepKind.QUORUM] * 5
    assert [step.kind for step in plan.steps[5:7]] == [StepKind.NODE] * 2


def test_domain_mode_takes_each_rack_in_one_step_after_the_quorum_holders() -> None:
    inventory = build_inventory(racked(sites=1, racks=3, per_rack=3))
    plan = plan_rollout(inventory, "v2", batch_mode="domain")
    quorum = [step for step in plan.steps if step.kind is StepKind.QUORUM]
    batches = [step for step in plan.steps if step.kind is StepKind.DOMAIN]
    assert [step.nodes[0] for step in quorum] == ["s1r1n1", "s1r1n2", "s1r2n1", "s1r2n2", "s1r3n1"]
    assert [step.nodes for step in batches] == [("s1r1n3",), ("s1r2n3",), ("s1r3n2", "s1r3n3")]
    assert [step.domain for step in batches] == ["site1/rack1", "site1/rack2", "site1/rack3"]
    assert plan.notes == ()


def test_domain_mode_with_host_failure_domain_takes_one_node_at_a_time() -> None:
    plan = plan_rollout(build_inventory(lab(6)), "v2", batch_mode=BatchMode.DOMAIN)
    assert all(len(step.nodes) <= 1 for step in plan.steps)
    assert plan.notes == (
        "batch mode 'domain' not used: the CRUSH failure domain is the host, so a batch is one node",
    )


def test_domain_mode_needs_as_many_racks_as_replicas() -> None:
    plan = plan_rollout(build_inventory(racked(sites=1, racks=2, per_rack=4)), "v2", batch_mode="domain")
    assert all(len(step.nodes) <= 1 for step in plan.steps)
    assert "2 racks cannot hold 3 replicas" in plan.notes[0]


def test_domain_mode_refused_when_min_size_equals_size() -> None:
    plan = plan_rollout(
        build_inventory(racked(sites=1, racks=3, per_rack=3)),
        "v2",
        batch_mode="domain",
        ceph_pool_size=2,
        ceph_pool_min_size=2,
    )
    assert all(len(step.nodes) <= 1 for step in plan.steps)
    assert "stop serving I/O" in plan.notes[0]


def test_host_crush_domain_on_a_racked_inventory_keeps_single_nodes() -> None:
    plan = plan_rollout(
        build_inventory(racked(sites=1, racks=3, per_rack=3)),
        "v2",
        batch_mode="domain",
        crush_failure_domain="host",
    )
    assert all(len(step.nodes) <= 1 for step in plan.steps)


def test_rack_crush_domain_without_racks_is_refused() -> None:
    with pytest.raises(PlanError, match="CRUSH failure domain is 'rack' but no node has corral_rack"):
        plan_rollout(build_inventory(lab()), "v2", crush_failure_domain="rack")


def test_done_nodes_are_skipped() -> None:
    progress = {"node1": NodeProgress(NodeState.ACTIVE, "v2"), "node2": NodeProgress(NodeState.ACTIVE, "v1")}
    plan = plan_rollout(build_inventory(lab()), "v2", progress=progress)
    assert plan.node_order() == ("node2", "node3")
    assert plan.skipped == ("node1",)


def test_all_done_leaves_only_finalise() -> None:
    progress = {f"node{i}": NodeProgress(NodeState.ACTIVE, "v2") for i in (1, 2, 3)}
    plan = plan_rollout(build_inventory(lab()), "v2", progress=progress)
    assert [step.kind for step in plan.steps] == [StepKind.FINALISE]


def test_interrupted_node_is_finished_first() -> None:
    progress = {
        "node1": NodeProgress(NodeState.ACTIVE, "v2"),
        "node3": NodeProgress(NodeState.REBOOTING, "v1", "boot-a"),
    }
    plan = plan_rollout(build_inventory(lab(4)), "v2", progress=progress)
    assert plan.steps[0].kind is StepKind.RESUME
    assert plan.node_order() == ("node3", "node2", "node4")


def test_interrupted_domain_batch_resumes_as_one_step() -> None:
    inventory = build_inventory(racked(sites=1, racks=3, per_rack=4))
    progress = {name: NodeProgress(NodeState.DRAINED, "v1") for name in ("s1r3n3", "s1r3n4")}
    plan = plan_rollout(inventory, "v2", batch_mode="domain", progress=progress)
    assert plan.steps[0].nodes == ("s1r3n3", "s1r3n4")
    assert plan.node_order().count("s1r3n3") == 1


def test_nodes_in_progress_in_two_domains_are_refused() -> None:
    progress = {name: NodeProgress(NodeState.DRAINING, "v1") for name in ("node4", "node5")}
    with pytest.raises(PlanError, match="in 2 failure domains"):
        plan_rollout(build_inventory(lab(5)), "v2", progress=progress)


def test_quorum_holder_in_progress_with_another_node_is_refused() -> None:
    inventory = build_inventory(racked(sites=1, racks=3, per_rack=3))
    progress = {name: NodeProgress(NodeState.DRAINING, "v1") for name in ("s1r1n1", "s1r1n3")}
    with pytest.raises(PlanError, match="together with quorum holder s1r1n1"):
        plan_rollout(inventory, "v2", progress=progress)


@pytest.mark.parametrize("state", [NodeState.FAILED, NodeState.FENCED])
def test_failed_or_fenced_node_stops_the_plan_with_the_rollback_command(state: NodeState) -> None:
    progress = {"node2": NodeProgress(state, "v1")}
    with pytest.raises(PlanError, match=f"node2 \\({state}\\).*-e corral_rollback_node=node2"):
        plan_rollout(build_inventory(lab()), "v2", progress=progress)


def test_progress_for_a_node_not_in_the_inventory_is_refused() -> None:
    with pytest.raises(PlanError, match="progress is recorded for ghost"):
        plan_rollout(build_inventory(lab()), "v2", progress={"ghost": NodeProgress()})


def test_single_member_quorum_cannot_be_rolled_without_downtime() -> None:
    inventory = build_inventory([NodeLocation("solo")], quorum_override=["solo"])
    with pytest.raises(PlanError, match="zookeeper has 1 member"):
        plan_rollout(inventory, "v2")


def test_unknown_batch_mode_is_refused() -> None:
    with pytest.raises(PlanError, match="corral_rolling_batch must be 'node' or 'domain', got 'rack'"):
        plan_rollout(build_inventory(lab()), "v2", batch_mode="rack")


def test_empty_target_release_is_refused() -> None:
    with pytest.raises(PlanError, match="target release is empty"):
        plan_rollout(build_inventory(lab()), "")


def test_bad_pool_sizes_are_refused() -> None:
    with pytest.raises(PlanError, match="invalid pool size 2 / min_size 3"):
        plan_rollout(build_inventory(lab()), "v2", ceph_pool_size=2, ceph_pool_min_size=3)


def test_finalise_sets_require_osd_release_when_the_ceph_major_changes() -> None:
    plan = plan_rollout(build_inventory(lab()), "v2", ceph_release_from="16.2.15", ceph_release_to="17.2.7")
    assert plan.steps[-1].kind is StepKind.FINALISE
    assert plan.steps[-1].require_osd_release == "quincy"
    assert plan.steps[-1].describe().endswith("safety flags, require-osd-release quincy")


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("16.2.15", "16.2.16", None),
        ("pacific", "reef", "reef"),
        ("v17.2.0", "18", "reef"),
        (None, None, None),
    ],
)
def test_require_osd_release(before: str | None, after: str | None, expected: str | None) -> None:
    assert require_osd_release(before, after) == expected


@pytest.mark.parametrize(
    ("before", "after", "message"),
    [
        ("17.2.7", "16.2.15", "Ceph cannot be downgraded"),
        ("15.2.0", "18.2.0", "at most two majors"),
        ("19.2.0", "21.0.0", "unknown Ceph major 21"),
        ("16.2.15", None, "give both"),
        ("latest", "17.2.7", "cannot read a Ceph major version from 'latest'"),
    ],
)
def test_impossible_ceph_changes_are_refused(before: str | None, after: str | None, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        require_osd_release(before, after)


def test_ceph_major_reads_versions_and_codenames() -> None:
    assert [ceph_major(text) for text in ("16.2.15", "quincy", "18", "v19.2.0-1")] == [16, 17, 18, 19]


def test_plan_serialises_for_the_rollout_record_and_check_mode() -> None:
    progress = {"node1": NodeProgress(NodeState.ACTIVE, "v2")}
    plan = plan_rollout(build_inventory(lab()), "v2", progress=progress)
    data = plan.to_dict()
    assert data["steps"][0] == {
        "kind": "quorum",
        "nodes": ["node2"],
        "domain": "site1/node2",
        "quorum_services": ["ceph_mon", "zookeeper"],
    }
    assert data["steps"][-1] == {"kind": "finalise", "nodes": [], "require_osd_release": None}
    assert data["skipped"] == ["node1"]
    assert plan.describe()[0] == "1. quorum: node2 (site1/node2, holds ceph_mon and zookeeper)"
    assert plan.describe()[-1] == "already on v2: node1"
