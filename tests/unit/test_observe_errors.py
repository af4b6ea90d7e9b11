"""An error of the engine is never a verdict on the cluster's health (issue 19 item 4): the observe play's
events (shaped as ansible-runner hands them over) with a role not found, a module not found, an inventory
without nodes, next to a real failed health check."""

from __future__ import annotations

from typing import Any

from updater.services.cluster.access import observation_from_events
from updater.services.rollouts.control import observation_checks

NODES = ["node1", "node2"]
ROLE_NOT_FOUND = (
    "the role 'corral.cloud.rolling_node' was not found in /tmp/corral-observe-x/project/roles:"
    "/root/.ansible/roles:/usr/share/ansible/roles:/etc/ansible/roles:/tmp/corral-observe-x/project"
)


def _host(kind: str, host: str, task: str, action: str, msg: str = "", **res: Any) -> dict[str, Any]:
    data = {"host": host, "task": task, "task_action": action, "res": {"msg": msg, **res}}
    return {"event": kind, "event_data": data, "stdout": ""}


def _released(host: str) -> dict[str, Any]:
    return _host(
        "runner_on_ok", host, "Read the node's release", "corral.cloud.node_release", release="0.1.0"
    )


def test_a_role_not_found_is_the_engines_error_not_every_nodes_health() -> None:
    events = [_released("node1"), _released("node2")]
    events += [
        _host(
            "runner_on_failed",
            node,
            "Check every service role is healthy",
            "ansible.builtin.include_role",
            ROLE_NOT_FOUND,
        )
        for node in NODES
    ]
    observation = observation_from_events(NODES, events)
    assert observation.unhealthy == {}
    assert "the role 'corral.cloud.rolling_node' was not found" in observation.engine_error
    checks = {check.name: check for check in observation_checks(observation)}
    assert list(checks) == ["observation play", "nodes answer", "cluster health"]
    assert not checks["observation play"].passed
    assert "was not found" in checks["observation play"].detail
    assert not checks["cluster health"].passed
    assert "node1" not in checks["cluster health"].detail
    assert "Check every service role is healthy" not in checks["cluster health"].detail


def test_a_parse_error_before_any_node_answered_is_the_engines_error() -> None:
    error = "\x1b[0;31m[ERROR]: couldn't resolve module/action 'corral.cloud.node_release'.\x1b[0m"
    events = [{"event": "verbose", "event_data": {}, "stdout": error}]
    observation = observation_from_events(NODES, events, failed=True)
    assert observation.engine_error == "[ERROR]: couldn't resolve module/action 'corral.cloud.node_release'."
    assert observation.unreachable["node1"].startswith("not observed: [ERROR]: couldn't resolve")
    # a failed play with no error line still is not a verdict on the nodes
    assert observation_from_events(NODES, [], failed=True).engine_error.startswith("ansible-playbook failed")


def test_an_inventory_without_nodes_is_the_engines_error() -> None:
    events = [
        {"event": "playbook_on_no_hosts_matched", "event_data": {}, "stdout": "skipping: no hosts matched"}
    ]
    observation = observation_from_events(NODES, events)
    assert "no node" in observation.engine_error


def test_a_failed_health_check_stays_the_nodes_verdict() -> None:
    events = [_released("node1"), _released("node2")]
    events.append(
        _host(
            "runner_on_failed",
            "node2",
            "ZooKeeper answers ruok",
            "ansible.builtin.command",
            "non-zero return code",
        )
    )
    observation = observation_from_events(NODES, events)
    assert observation.engine_error == ""
    assert observation.unhealthy == {"node2": "ZooKeeper answers ruok: non-zero return code"}
    checks = {check.name: check for check in observation_checks(observation)}
    assert "observation play" not in checks
    assert checks["cluster health"].detail == "node2: ZooKeeper answers ruok: non-zero return code"
