"""ansible-runner events → per-node steps, phases and log lines, and observe events → preflight answers, on
events recorded from real runs (``fixtures/service_rollout_events.json`` says which)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from updater.domain.states import NodeState
from updater.services.cluster.access import Observation, observation_from_events
from updater.services.rollouts.control import observation_checks
from updater.services.rollouts.events import PHASES, failure_reason, log_lines, step_change

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "service_rollout_events.json").read_text())
NODES = frozenset({"node1", "node2", "node3"})


@pytest.fixture
def rollout_events() -> list[dict[str, Any]]:
    return list(RECORDED["rollout"])


def test_the_recorded_rollout_maps_to_each_nodes_state_sequence_start_and_finish(
    rollout_events: list[dict[str, Any]],
) -> None:
    states: dict[str, list[NodeState]] = {node: [] for node in NODES}
    started: list[str] = []
    finished: list[str] = []
    for event in rollout_events:
        change = step_change(event, NODES)
        if change is None:
            continue
        if change.state is not None:
            states[change.node].append(change.state)
        if change.started and change.node not in started:
            started.append(change.node)
        if change.finished:
            finished.append(change.node)
        assert change.message is None  # the recorded run had no failure
    procedure = [
        NodeState.DRAINING,
        NodeState.DRAINED,
        NodeState.REBOOTING,
        NodeState.VERIFYING,
        NodeState.ACTIVE,
    ]
    assert states == dict.fromkeys(NODES, procedure)
    assert started == finished == ["node1", "node2", "node3"]


def test_the_timing_line_of_each_node_gives_its_phase_seconds(rollout_events: list[dict[str, Any]]) -> None:
    phases = {}
    for event in rollout_events:
        change = step_change(event, NODES)
        if change is not None and change.phase_seconds is not None:
            phases[change.node] = change.phase_seconds
    assert set(phases) == NODES
    for values in phases.values():
        assert tuple(values) == PHASES
        parts = sum(values[name] for name in PHASES if name != "total")
        assert values["total"] == pytest.approx(parts, abs=0.3)  # each value is rounded to 0.1 s


def test_log_lines_are_what_ansible_printed_tagged_with_the_node(
    rollout_events: list[dict[str, Any]],
) -> None:
    lines = [line for event in rollout_events for line in log_lines(event, NODES)]
    texts = [line.text for line in lines]
    assert any(
        text.startswith("PLAY [Roll each node, in the planned order, one at a time]") for text in texts
    )
    assert any("ROLLING_DONE rollout=" in text for text in texts)
    changed = [line for line in lines if line.text.startswith("changed: [node")]
    assert changed
    assert all(line.node == line.text.split("[", 1)[1].split("]", 1)[0] for line in changed)
    assert all(line.node is None for line in lines if line.text.startswith("TASK ["))
    assert all("\x1b[" not in text for text in texts)


def test_events_of_other_hosts_and_kinds_change_no_step(rollout_events: list[dict[str, Any]]) -> None:
    localhost = [event for event in rollout_events if event["event_data"].get("host") == "localhost"]
    assert localhost
    assert all(step_change(event, NODES) is None for event in localhost)
    starts = [event for event in rollout_events if event["event"] == "playbook_on_task_start"]
    assert all(step_change(event, NODES) is None for event in starts)


def test_a_censored_result_is_shown_as_censored_only() -> None:
    event = {
        "event": "runner_on_failed",
        "stdout": 'fatal: [node1]: FAILED! => {"censored": "the output has been hidden due to the fact that '
        "'no_log: true' was specified for this result\"}",
        "event_data": {
            "host": "node1",
            "task": "Power-cycle the node through its BMC",
            "res": {
                "censored": "the output has been hidden due to the fact that 'no_log: true' was specified"
            },
        },
    }
    change = step_change(event, NODES)
    assert change is not None
    assert change.message == (
        "Power-cycle the node through its BMC: the output has been hidden due to the fact that "
        "'no_log: true' was specified"
    )
    assert failure_reason(event) == f"node1: {change.message}"


def test_observe_events_say_which_node_runs_what_and_which_did_not_answer() -> None:
    observation = observation_from_events(["node1", "node2", "node3"], RECORDED["observe"])
    assert observation.releases == {}
    assert "Failed to connect to the host via ssh" in observation.unreachable["node1"]
    assert observation.unreachable["node2"].startswith("Read the node's release: ")
    assert observation.unreachable["node3"] == "no answer"
    assert observation.unhealthy == {}
    ok = {
        "event": "runner_on_ok",
        "event_data": {"host": "node3", "task": "Read the node's release", "res": {"release": "0.1.0"}},
    }
    assert observation_from_events(["node3"], [ok]).releases == {"node3": "0.1.0"}
    health = {
        "event": "runner_on_failed",
        "event_data": {"host": "node3", "task": "Check ZooKeeper is healthy", "res": {"msg": "not serving"}},
    }
    observed = observation_from_events(["node3"], [ok, health])
    assert observed.unhealthy == {"node3": "Check ZooKeeper is healthy: not serving"}


def test_a_health_play_that_ran_out_of_time_is_not_a_healthy_cluster() -> None:
    """Every node answered its release, then the health checks were cut off by the time limit (a check
    waiting for Ceph to heal): the preflight refuses instead of reading the silence as health."""
    answered = Observation(releases={"node1": "0.1.0", "node2": "0.1.0"}, timed_out=True)
    checks = {check.name: check for check in observation_checks(answered)}
    assert checks["nodes answer"].passed
    assert not checks["cluster health"].passed
    assert "did not finish in time" in checks["cluster health"].detail
    healthy = {c.name: c for c in observation_checks(Observation(releases={"node1": "0.1.0"}))}
    assert healthy["cluster health"].passed
    sick = Observation(releases={"node1": "0.1.0"}, unhealthy={"node1": "Check Ceph: OSD_DOWN"})
    assert {c.name: c for c in observation_checks(sick)}[
        "cluster health"
    ].detail == "node1: Check Ceph: OSD_DOWN"
