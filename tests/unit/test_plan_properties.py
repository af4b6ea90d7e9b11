"""Hypothesis properties of the planner over random inventories and random persisted progress."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from updater.domain.inventory import Inventory, build_inventory
from updater.domain.placement import NodeLocation
from updater.domain.plan import BatchMode, Plan, StepKind, plan_rollout
from updater.domain.states import NodeProgress, NodeState

Scenario = tuple[Inventory, dict[str, NodeProgress], BatchMode]


@st.composite
def inventories(draw: st.DrawFn) -> list[NodeLocation]:
    racked = draw(st.booleans())
    nodes: list[NodeLocation] = []
    for site in range(draw(st.integers(1, 3))):
        for rack in range(draw(st.integers(1, 5)) if racked else 1):
            for host in range(draw(st.integers(0, 6))):
                rack_name = f"rack{rack}" if racked else None
                nodes.append(NodeLocation(f"s{site}r{rack}h{host}", f"site{site}", rack_name))
    while len(nodes) < 3:
        nodes.append(NodeLocation(f"x{len(nodes)}", "site0", "rack0" if racked else None))
    return nodes


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    inventory = build_inventory(draw(inventories()))
    progress: dict[str, NodeProgress] = {}
    for name in inventory.names:
        choice = draw(st.sampled_from(["pending", "pending", "done", "old-active"]))
        if choice == "done":
            progress[name] = NodeProgress(NodeState.ACTIVE, "v2")
        elif choice == "old-active":
            progress[name] = NodeProgress(NodeState.ACTIVE, "v1")
    if draw(st.booleans()):
        # A previous run was interrupted in the middle of one node.
        name = draw(st.sampled_from(inventory.names))
        state = draw(st.sampled_from([NodeState.DRAINING, NodeState.DRAINED, NodeState.VERIFYING]))
        progress[name] = NodeProgress(state, "v1")
    return inventory, progress, draw(st.sampled_from(list(BatchMode)))


def plan_of(scenario: Scenario) -> Plan:
    inventory, progress, mode = scenario
    return plan_rollout(inventory, "v2", batch_mode=mode, progress=progress)


@given(scenarios())
def test_every_node_not_done_appears_exactly_once(scenario: Scenario) -> None:
    inventory, progress, _ = scenario
    plan = plan_of(scenario)
    counts = Counter(plan.node_order())
    done = {name for name, record in progress.items() if record.is_done("v2")}
    assert set(counts) == set(inventory.names) - done
    assert set(counts.values()) <= {1}
    assert set(plan.skipped) == done


@given(scenarios())
def test_no_step_takes_two_quorum_members_of_one_service(
    scenario: Scenario,
) -> None:
    inventory, _, _ = scenario
    for step in plan_of(scenario).steps:
        for service, members in inventory.quorum.items():
            assert len(set(step.nodes) & set(members)) <= 1, (service, step)


@given(scenarios())
def test_no_step_spans_two_failure_domains(scenario: Scenario) -> None:
    inventory, _, _ = scenario
    for step in plan_of(scenario).steps:
        assert len({inventory.node(name).domain for name in step.nodes}) <= 1
        if step.nodes:
            assert step.domain == str(inventory.node(step.nodes[0]).domain)


@given(scenarios())
def test_quorum_holders_come_first(scenario: Scenario) -> None:
    inventory, _, _ = scenario
    plan = plan_of(scenario)
    node_steps = [step for step in plan.steps if step.kind is not StepKind.RESUME and step.nodes]
    holds = [any(inventory.node(name).holds_quorum for name in step.nodes) for step in node_steps]
    assert holds == sorted(holds, reverse=True)
    assert all(len(step.nodes) == 1 for step, held in zip(node_steps, holds, strict=True) if held)


@given(scenarios())
def test_an_interrupted_node_is_finished_before_any_other(
    scenario: Scenario,
) -> None:
    _, progress, _ = scenario
    plan = plan_of(scenario)
    interrupted = {name for name, record in progress.items() if record.state is not NodeState.ACTIVE}
    if interrupted:
        assert plan.steps[0].kind is StepKind.RESUME
        assert set(plan.steps[0].nodes) == interrupted
    else:
        assert all(step.kind is not StepKind.RESUME for step in plan.steps)


@given(scenarios())
def test_finalise_is_the_last_step_and_only_there(scenario: Scenario) -> None:
    kinds = [step.kind for step in plan_of(scenario).steps]
    assert kinds[-1] is StepKind.FINALISE
    assert kinds.count(StepKind.FINALISE) == 1


@given(scenarios())
def test_domain_mode_takes_each_domain_in_at_most_one_batch(
    scenario: Scenario,
) -> None:
    plan = plan_of(scenario)
    domains = [step.domain for step in plan.steps if step.kind is StepKind.DOMAIN]
    assert len(domains) == len(set(domains))
    if plan.batch_mode is BatchMode.NODE:
        assert all(len(step.nodes) <= 1 for step in plan.steps if step.kind is not StepKind.RESUME)


@settings(max_examples=50)
@given(inventories(), st.randoms(use_true_random=False), st.sampled_from(list(BatchMode)))
def test_plan_does_not_depend_on_inventory_order(
    nodes: list[NodeLocation], rng: random.Random, mode: BatchMode
) -> None:
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    assert plan_rollout(build_inventory(shuffled), "v2", batch_mode=mode) == plan_rollout(
        build_inventory(nodes), "v2", batch_mode=mode
    )


@given(scenarios())
def test_replanning_after_any_prefix_keeps_the_remaining_order(
    scenario: Scenario,
) -> None:
    # A rollout that finished the first k nodes of its plan and is planned again continues with
    # exactly the rest of the original order (what a restarted worker relies on).
    inventory, progress, mode = scenario
    plan = plan_of(scenario)
    order = plan.node_order()
    for k in (0, len(order) // 2, len(order)):
        finished = dict(progress)
        finished.update({name: NodeProgress(NodeState.ACTIVE, "v2") for name in order[:k]})
        again = plan_rollout(inventory, "v2", batch_mode=mode, progress=finished)
        assert again.node_order() == order[k:]
