"""Planner time on a simulated large cluster: 3 sites x 40 racks.

Smoke size (default): 480 nodes. Full size (CORRAL_BENCH_SIZE=full): 10,000 nodes. The figures are
printed; the test asserts only that the plan is complete and safe, never a time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from tests.support.figures import Figures
from updater.domain.inventory import inventory_from_ansible
from updater.domain.plan import BatchMode, Plan, plan_rollout
from updater.domain.states import NodeProgress, NodeState

SITES = 3
RACKS_PER_SITE = 40
FULL = os.environ.get("CORRAL_BENCH_SIZE") == "full"
NODE_COUNT = 10_000 if FULL else 480


def simulated_inventory(node_count: int) -> dict[str, Any]:
    """``ansible-inventory --list`` output of a cluster spread evenly over 3 sites x 40 racks."""
    racks = [(f"site{s}", f"rack{r:02d}") for s in range(1, SITES + 1) for r in range(1, RACKS_PER_SITE + 1)]
    hostvars: dict[str, dict[str, Any]] = {}
    for index in range(node_count):
        site, rack = racks[index % len(racks)]
        hostvars[f"node{index + 1:05d}"] = {
            "ansible_host": f"10.{index // 65536}.{index // 256 % 256}.{index % 256}",
            "corral_site": site,
            "corral_rack": rack,
            "corral_cluster_name": "bench",
        }
    return {
        "_meta": {"hostvars": hostvars},
        "all": {"children": ["nodes"]},
        "nodes": {"hosts": list(hostvars)},
    }


def run_rounds(
    benchmark: BenchmarkFixture, function: Callable[..., Plan], **options: Any
) -> tuple[Plan, Any]:
    """benchmark.pedantic, typed; returns the result and the timing statistics."""
    pedantic = cast(Callable[..., Plan], benchmark.pedantic)
    plan = pedantic(function, iterations=1, **options)
    assert benchmark.stats is not None
    return plan, benchmark.stats.stats


def check_plan(plan: Plan, expected_nodes: int) -> None:
    order = plan.node_order()
    assert len(order) == expected_nodes
    assert len(set(order)) == expected_nodes
    quorum_steps = [step for step in plan.steps if step.quorum_services]
    assert len(quorum_steps) == 5
    if plan.batch_mode is BatchMode.DOMAIN:
        # Every rack in one step: 5 quorum holders alone, 120 racks, finalise.
        assert len(plan.steps) == 5 + SITES * RACKS_PER_SITE + 1
        assert len({step.domain for step in plan.steps if step.nodes and not step.quorum_services}) == 120


@pytest.mark.parametrize("mode", [BatchMode.NODE, BatchMode.DOMAIN])
def test_bench_plan_from_inventory_data(
    benchmark: BenchmarkFixture, figures: Figures, mode: BatchMode
) -> None:
    data = simulated_inventory(NODE_COUNT)

    def build_and_plan() -> Plan:
        return plan_rollout(inventory_from_ansible(data), "v2", batch_mode=mode)

    plan, stats = run_rounds(benchmark, build_and_plan, rounds=5 if FULL else 10, warmup_rounds=1)
    check_plan(plan, NODE_COUNT)
    figures.record(f"inventory+plan, {NODE_COUNT} nodes, mean", stats.mean * 1000, "ms")
    figures.record("inventory+plan, max", stats.max * 1000, "ms")
    figures.record("plan steps (3 sites x 40 racks)", len(plan.steps), "steps")


def test_bench_replan_halfway(benchmark: BenchmarkFixture, figures: Figures) -> None:
    """What a restarted worker pays: re-plan with half the nodes recorded as done."""
    inventory = inventory_from_ansible(simulated_inventory(NODE_COUNT))
    started = time.perf_counter()
    first = plan_rollout(inventory, "v2")
    first_plan_s = time.perf_counter() - started
    order = first.node_order()
    done = NodeProgress(NodeState.ACTIVE, "v2")
    progress = dict.fromkeys(order[: len(order) // 2], done)

    plan, stats = run_rounds(
        benchmark,
        plan_rollout,
        args=(inventory, "v2"),
        kwargs={"progress": progress},
        rounds=5 if FULL else 10,
    )
    assert plan.node_order() == order[len(order) // 2 :]
    figures.record(f"first plan ({NODE_COUNT} nodes)", first_plan_s * 1000, "ms")
    first_plan = ("first plan", first_plan_s * 1000)
    figures.record("re-plan with half done, mean", stats.mean * 1000, "ms", baseline=first_plan)
