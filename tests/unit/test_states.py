"""Node and rollout state machines, resume decisions, and the rollout record's safety rules."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from updater.domain.inventory import Inventory, build_inventory
from updater.domain.placement import NodeLocation
from updater.domain.plan import plan_rollout
from updater.domain.rollout import Rollout, UnsafeNodeChange
from updater.domain.states import (
    FINAL_ROLLOUT_STATES,
    NODE_TRANSITIONS,
    ROLLOUT_TRANSITIONS,
    IllegalTransition,
    NodeObservation,
    NodeProgress,
    NodeState,
    ResumeAction,
    RolloutState,
    StateError,
    node_transition,
    resume_action,
    rollout_transition,
)

N = NodeState
HAPPY_PATH = [N.ACTIVE, N.DRAINING, N.DRAINED, N.REBOOTING, N.VERIFYING, N.ACTIVE]


def test_the_happy_node_path_is_legal() -> None:
    for current, wanted in itertools.pairwise(HAPPY_PATH):
        assert node_transition("node1", current, wanted) is wanted


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        (current, wanted)
        for current in NodeState
        for wanted in NodeState
        if wanted not in NODE_TRANSITIONS[current]
    ],
)
def test_every_transition_outside_the_table_raises(current: NodeState, wanted: NodeState) -> None:
    with pytest.raises(IllegalTransition, match=f"node n1: cannot go from {current} to {wanted}"):
        node_transition("n1", current, wanted)


def test_illegal_transition_names_the_allowed_ones() -> None:
    with pytest.raises(IllegalTransition) as caught:
        node_transition("node2", N.ACTIVE, N.REBOOTING)
    assert str(caught.value) == (
        "node node2: cannot go from active to rebooting (allowed from active: draining, failed, fenced)"
    )
    assert caught.value.current is N.ACTIVE
    assert caught.value.wanted is N.REBOOTING


@pytest.mark.parametrize("state", [N.DRAINING, N.DRAINED, N.REBOOTING, N.VERIFYING])
def test_failed_and_fenced_are_exits_from_every_step(state: NodeState) -> None:
    assert {N.FAILED, N.FENCED} <= NODE_TRANSITIONS[state]


def test_a_failed_drain_goes_back_to_active_but_a_reboot_cannot() -> None:
    assert node_transition("n", N.DRAINING, N.ACTIVE) is N.ACTIVE
    with pytest.raises(IllegalTransition):
        node_transition("n", N.REBOOTING, N.ACTIVE)


def test_rollout_path_with_pause() -> None:
    path = [RolloutState.PLANNED, RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.RUNNING]
    for current, wanted in itertools.pairwise(path):
        assert rollout_transition("r1", current, wanted) is wanted
    assert rollout_transition("r1", RolloutState.RUNNING, RolloutState.SUCCEEDED) is RolloutState.SUCCEEDED


@pytest.mark.parametrize("final", sorted(FINAL_ROLLOUT_STATES))
def test_final_rollout_states_go_nowhere(final: RolloutState) -> None:
    for wanted in RolloutState:
        with pytest.raises(IllegalTransition, match="none: it is final"):
            rollout_transition("r1", final, wanted)


def test_final_states_are_succeeded_and_aborted() -> None:
    assert {RolloutState.SUCCEEDED, RolloutState.ABORTED} == FINAL_ROLLOUT_STATES
    assert RolloutState.SUCCEEDED not in ROLLOUT_TRANSITIONS[RolloutState.PLANNED]


def test_progress_round_trips_through_json() -> None:
    record = NodeProgress(N.REBOOTING, "v1", "boot-1")
    assert NodeProgress.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_progress_without_a_valid_state_is_refused() -> None:
    with pytest.raises(StateError, match="no valid state"):
        NodeProgress.from_dict({"state": "sleeping"})


@pytest.mark.parametrize(
    ("progress", "observed", "expected"),
    [
        (NodeProgress(N.ACTIVE, "v2"), None, ResumeAction.SKIP),
        (NodeProgress(N.ACTIVE, "v1"), None, ResumeAction.DRAIN),
        (NodeProgress(N.DRAINING, "v1"), None, ResumeAction.DRAIN),
        (NodeProgress(N.DRAINED, "v1"), None, ResumeAction.BOOT),
        (NodeProgress(N.REBOOTING, "v1", "b1"), NodeObservation("v1", "b1"), ResumeAction.BOOT),
        (NodeProgress(N.REBOOTING, "v1", "b1"), NodeObservation("v2", "b2"), ResumeAction.VERIFY),
        (NodeProgress(N.REBOOTING, "v1", "b1"), NodeObservation("v1", "b2"), ResumeAction.STOP),
        (NodeProgress(N.VERIFYING, "v2"), None, ResumeAction.VERIFY),
        (NodeProgress(N.FAILED, "v1"), None, ResumeAction.STOP),
        (NodeProgress(N.FENCED, "v1"), None, ResumeAction.STOP),
    ],
)
def test_resume_action(
    progress: NodeProgress, observed: NodeObservation | None, expected: ResumeAction
) -> None:
    assert resume_action("n1", progress, "v2", observed) is expected


def test_resume_of_a_rebooting_node_needs_an_observation() -> None:
    with pytest.raises(StateError, match="observe its release and boot id first"):
        resume_action("n1", NodeProgress(N.REBOOTING, "v1", "b1"), "v2")
    with pytest.raises(StateError, match="without the boot id"):
        resume_action("n1", NodeProgress(N.REBOOTING, "v1"), "v2", NodeObservation("v1", "b1"))


# --- the rollout record ----------------------------------------------------------------------------


def racked_inventory() -> Inventory:
    return build_inventory(
        [NodeLocation(f"r{rack}n{n}", "site1", f"rack{rack}") for rack in (1, 2, 3) for n in (1, 2, 3)]
    )


def new_rollout(inventory: Inventory | None = None) -> Rollout:
    inventory = inventory or racked_inventory()
    rollout = Rollout.create("r-1", inventory, plan_rollout(inventory, "v2", batch_mode="domain"))
    rollout.start()
    return rollout


def finish(rollout: Rollout, node: str) -> None:
    rollout.move_node(node, N.DRAINING)
    rollout.move_node(node, N.DRAINED)
    rollout.move_node(node, N.REBOOTING, boot_id_before_reboot="b0")
    rollout.move_node(node, N.VERIFYING, release="v2")
    rollout.move_node(node, N.ACTIVE)


def test_a_finished_node_is_never_taken_again() -> None:
    rollout = new_rollout()
    finish(rollout, "r1n1")
    with pytest.raises(UnsafeNodeChange, match="r1n1 already runs v2: a finished node is never taken again"):
        rollout.move_node("r1n1", N.DRAINING)


def test_nodes_of_two_failure_domains_are_never_in_progress_together() -> None:
    rollout = new_rollout()
    rollout.move_node("r1n3", N.DRAINING)
    with pytest.raises(UnsafeNodeChange, match=r"never two failure domains at once"):
        rollout.move_node("r2n3", N.DRAINING)
    assert rollout.nodes["r2n3"].state is N.ACTIVE


def test_nodes_of_one_domain_may_go_together_but_quorum_holders_go_alone() -> None:
    rollout = new_rollout()
    assert rollout.quorum_holders == {"r1n1", "r1n2", "r2n1", "r2n2", "r3n1"}
    rollout.move_node("r3n2", N.DRAINING)
    rollout.move_node("r3n3", N.DRAINING)
    with pytest.raises(UnsafeNodeChange, match="cannot take r3n1 while r3n2, r3n3 are in the procedure"):
        rollout.move_node("r3n1", N.DRAINING)


def test_a_quorum_holder_in_progress_blocks_its_own_domain() -> None:
    rollout = new_rollout()
    rollout.move_node("r1n1", N.DRAINING)
    with pytest.raises(UnsafeNodeChange, match="quorum holders are taken alone"):
        rollout.move_node("r1n3", N.DRAINING)


def test_nodes_change_only_while_the_rollout_runs() -> None:
    rollout = new_rollout()
    rollout.pause("operator")
    with pytest.raises(StateError, match="rollout r-1 is paused"):
        rollout.move_node("r1n1", N.DRAINING)


def test_succeed_needs_every_node_on_the_target() -> None:
    inventory = build_inventory([NodeLocation(f"n{i}") for i in (1, 2, 3)])
    rollout = new_rollout(inventory)
    finish(rollout, "n1")
    with pytest.raises(StateError, match="n2, n3 are not on v2 yet"):
        rollout.succeed()
    finish(rollout, "n2")
    finish(rollout, "n3")
    rollout.succeed()
    assert rollout.state is RolloutState.SUCCEEDED
    assert rollout.executed == ["n1", "n2", "n3"]


def test_record_round_trips_and_refuses_garbage() -> None:
    rollout = new_rollout()
    finish(rollout, "r1n1")
    rollout.move_node("r1n2", N.DRAINING)
    restored = Rollout.from_dict(json.loads(json.dumps(rollout.to_dict())))
    assert restored == rollout
    with pytest.raises(StateError, match="not a valid rollout record"):
        Rollout.from_dict({"rollout_id": "x"})


class Crash(Exception):
    """The worker dies: everything not in the persisted record is lost."""


class SimulatedCluster:
    """Nodes that count their boots; a reboot changes the boot id and the running release."""

    def __init__(self, names: tuple[str, ...], crash_at: int) -> None:
        self.boots: Counter[str] = Counter()
        self.boot_ids = dict.fromkeys(names, "boot-0")
        self.releases = dict.fromkeys(names, "v1")
        self.events = 0
        self.crash_at = crash_at

    def event(self) -> None:
        self.events += 1
        if self.events == self.crash_at:
            raise Crash

    def reboot_into(self, node: str, release: str) -> None:
        self.boots[node] += 1
        self.boot_ids[node] = f"boot-{self.boots[node]}"
        self.releases[node] = release
        self.event()


def run_worker(
    rollout: Rollout, cluster: SimulatedCluster, inventory: Inventory, mode: str
) -> dict[str, Any]:
    """One worker: plan from the record, then for each node do what resume_action says."""
    record = rollout.to_dict()

    def move(node: str, wanted: NodeState, **extra: str) -> None:
        nonlocal record
        rollout.move_node(node, wanted, **extra)
        record = rollout.to_dict()  # persisted before anything else happens
        cluster.event()

    try:
        plan = plan_rollout(inventory, "v2", batch_mode=mode, progress=rollout.nodes)
        for step in plan.steps:
            for node in step.nodes:
                observed = NodeObservation(cluster.releases[node], cluster.boot_ids[node])
                action = resume_action(node, rollout.nodes[node], "v2", observed)
                if action is ResumeAction.DRAIN:
                    if rollout.nodes[node].state is N.ACTIVE:
                        move(node, N.DRAINING)
                    move(node, N.DRAINED)
                if action in {ResumeAction.DRAIN, ResumeAction.BOOT}:
                    if rollout.nodes[node].state is not N.REBOOTING:
                        move(node, N.REBOOTING, boot_id_before_reboot=cluster.boot_ids[node])
                    cluster.reboot_into(node, "v2")
                    action = ResumeAction.VERIFY
                if action is ResumeAction.VERIFY:
                    if rollout.nodes[node].state is not N.VERIFYING:
                        move(node, N.VERIFYING, release=cluster.releases[node])
                    move(node, N.ACTIVE)
                assert action is ResumeAction.VERIFY or action is ResumeAction.SKIP, action
        rollout.succeed()
        record = rollout.to_dict()
    except Crash:
        pass
    return record


@given(st.sampled_from(["node", "domain"]), st.integers(1, 70))
def test_a_rollout_interrupted_anywhere_finishes_with_one_boot_per_node(mode: str, crash_at: int) -> None:
    """Crash the worker after any recorded transition or reboot; a new worker restores the record,
    takes the rollout back, re-plans and finishes. Every node boots exactly once."""
    inventory = racked_inventory()
    cluster = SimulatedCluster(inventory.names, crash_at)
    record = new_rollout(inventory).to_dict()
    for _worker in range(2):
        rollout = Rollout.from_dict(record)
        if rollout.state is RolloutState.SUCCEEDED:
            break
        rollout.start()
        record = run_worker(rollout, cluster, inventory, mode)
    final = Rollout.from_dict(record)
    assert final.state is RolloutState.SUCCEEDED
    assert cluster.boots == Counter(dict.fromkeys(inventory.names, 1))
    assert sorted(final.executed) == sorted(inventory.names)
    assert tuple(final.executed) == plan_rollout(inventory, "v2", batch_mode=mode).node_order()
