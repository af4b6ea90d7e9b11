"""Turn ansible-runner events of ``corral.cloud.rolling_update`` into per-node step changes and log lines.

Pure: an event (the dict ansible-runner hands its ``event_handler``) in, a :class:`StepChange` and the log
lines out. The mapping leans on what the per-node procedure itself reports:

- ``corral.cloud.rollout_progress`` results carry the node's recorded progress (``draining`` … ``active``):
  that is the step's state (ZooKeeper stays the authority; the run reconciles with it at the end);
- the role's ``Note when this node started`` fact is the step's start;
- its ``ROLLING_TIMING`` line gives ``phase_seconds`` (drain, reboot, wait, health, undrain, total); a run
  that resumed a node an earlier run had begun (a takeover after a dead worker, a resume after a pause) times
  only its own part, so the node's phases are joined with the earlier runs' (:func:`phases_across_runs`,
  from the role's ``rolling_node_t_*`` facts and where each run resumed the node);
- a failed or unreachable task on a node is the step's message.

Log lines are the event's own ``stdout`` (what ``ansible-playbook`` prints): tasks marked ``no_log`` print
only Ansible's censored notice there, so nothing they hide reaches the log.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from updater.domain.states import NodeState

PHASES = ("drain", "reboot", "wait", "health", "undrain", "total")
_TIMING = re.compile(r"ROLLING_TIMING node=(?P<node>\S+) resumed_at=\S+ (?P<phases>.*)")
_PHASE = re.compile(r"(\w+)=([\d.]+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MAX_LINE = 4000


@dataclass(frozen=True)
class StepChange:
    node: str
    state: NodeState | None = None
    started: bool = False
    finished: bool = False
    phase_seconds: dict[str, float] | None = None
    message: str | None = None


@dataclass(frozen=True)
class LogLine:
    node: str | None
    stream: str
    text: str


def _data(event: Mapping[str, Any]) -> Mapping[str, Any]:
    data = event.get("event_data")
    return data if isinstance(data, Mapping) else {}


def _result(event: Mapping[str, Any]) -> Mapping[str, Any]:
    result = _data(event).get("res")
    return result if isinstance(result, Mapping) else {}


def _message(event: Mapping[str, Any]) -> str:
    data, result = _data(event), _result(event)
    if result.get("censored"):
        text = str(result["censored"])
    else:
        text = str(result.get("msg") or result.get("stderr") or result.get("reason") or "failed").strip()
    return f"{data.get('task', 'a task')}: {text}"[:MAX_LINE]


def _ok_change(node: str, data: Mapping[str, Any], result: Mapping[str, Any]) -> StepChange | None:
    progress = result.get("progress")
    if str(data.get("task_action", "")).endswith("rollout_progress") and isinstance(progress, Mapping):
        state = str(progress.get("state"))
        if state not in set(NodeState):
            return None
        return StepChange(node, state=NodeState(state), started=state == NodeState.DRAINING)
    facts = result.get("ansible_facts")
    if isinstance(facts, Mapping) and "rolling_node_t_start" in facts:
        return StepChange(node, started=True)
    timing = _TIMING.search(str(result.get("msg", "")))
    if timing is None or timing.group("node") != node:
        return None
    phases = {name: float(value) for name, value in _PHASE.findall(timing.group("phases"))}
    return StepChange(
        node, finished=True, phase_seconds={name: phases[name] for name in PHASES if name in phases}
    )


def step_change(event: Mapping[str, Any], nodes: frozenset[str]) -> StepChange | None:
    """What ``event`` changes in a node's step, or ``None``."""
    data = _data(event)
    node = str(data.get("host") or "")
    if node not in nodes:
        return None
    kind = event.get("event")
    if kind == "runner_on_ok":
        return _ok_change(node, data, _result(event))
    failed = kind == "runner_on_failed" and not data.get("ignore_errors")
    if failed or kind == "runner_on_unreachable":
        return StepChange(node, message=_message(event))
    return None


def log_lines(event: Mapping[str, Any], nodes: frozenset[str]) -> list[LogLine]:
    """The lines ``ansible-playbook`` printed for ``event`` (its ``stdout``), tagged with the node."""
    text = _ANSI.sub("", str(event.get("stdout") or ""))
    host = str(_data(event).get("host") or "")
    node = host if host in nodes else None
    return [LogLine(node, "stdout", line[:MAX_LINE]) for line in text.splitlines() if line.strip()]


def failure_reason(event: Mapping[str, Any]) -> str | None:
    """The message of a failed task (the rollout's reason when it stops), or ``None``."""
    if event.get("event") in {"runner_on_failed", "runner_on_unreachable"} and not _data(event).get(
        "ignore_errors"
    ):
        host = _data(event).get("host")
        return f"{host}: {_message(event)}" if host else _message(event)
    return None


# --- a node's timings over the runs of one rollout --------------------------------------------------------
_MARKS = {
    "rolling_node_t_start": "start",
    "rolling_node_t_drained": "drained",
    "rolling_node_t_rebooted": "rebooted",
    "rolling_node_t_released": "released",
    "rolling_node_t_healthy": "healthy",
}


@dataclass
class NodeRun:
    """One run's part of one node: where the run resumed it (``drain``, ``boot``, ``verify`` …) and the
    wall-clock times (Unix seconds) of the role's milestones it reached."""

    resumed_at: str | None = None
    marks: dict[str, float] = field(default_factory=dict)


def note_node_run(
    event: Mapping[str, Any], nodes: frozenset[str], runs: MutableMapping[str, NodeRun]
) -> None:
    """Add what ``event`` says of its node's milestones in this run to ``runs`` (node → its part)."""
    if event.get("event") != "runner_on_ok":
        return
    data = _data(event)
    node = str(data.get("host") or "")
    if node not in nodes:
        return
    result = _result(event)
    facts = result.get("ansible_facts")
    if isinstance(facts, Mapping):
        for fact, mark in _MARKS.items():
            if fact in facts:
                with contextlib.suppress(TypeError, ValueError):
                    runs.setdefault(node, NodeRun()).marks[mark] = float(facts[fact])
    if str(data.get("task_action", "")).endswith("rollout_progress") and "next_step" in result:
        runs.setdefault(node, NodeRun()).resumed_at = str(result["next_step"])


def node_runs(events: Iterable[Mapping[str, Any]], nodes: frozenset[str]) -> dict[str, NodeRun]:
    """Each node's part in one run, from that run's events."""
    runs: dict[str, NodeRun] = {}
    for event in events:
        note_node_run(event, nodes, runs)
    return runs


def phases_across_runs(
    earlier: Sequence[NodeRun], final: NodeRun, phases: Mapping[str, float]
) -> dict[str, float]:
    """A node's phases over every run that worked on it, from the final run's ``ROLLING_TIMING`` ``phases``.

    The final run's line times only its own part: resumed after the reboot, it shows the drain and the reboot
    as the few tenths of a second it took to see they were done. Joined: the node began at its earliest start
    in any run; it was drained when the last run that drained it (``resumed_at == "drain"``) noted it; from
    there the reboot lasts until the final run saw the node back, wait, health and undrain are the final
    run's; ``total`` runs from the first start to the end. The time between runs falls into the phase that was
    in progress. Without an earlier run's start (or the final run's own), the line's phases as they are."""
    result = {name: phases[name] for name in PHASES if name in phases}
    begun = final.marks.get("start")
    starts = [run.marks["start"] for run in earlier if "start" in run.marks]
    if begun is None or not starts or not all(name in phases for name in PHASES):
        return result
    # the final run's milestones, as its line computed them
    drained_final = begun + phases["drain"]
    back = drained_final + phases["reboot"]
    end = begun + phases["total"]
    first = min([*starts, begun])
    drained = drained_final
    if final.resumed_at != "drain":
        drains = [
            run.marks["drained"] for run in earlier if run.resumed_at == "drain" and "drained" in run.marks
        ]
        if drains:
            drained = drains[-1]
    result["drain"] = round(drained - first, 1)
    result["reboot"] = round(back - drained, 1)
    result["total"] = round(end - first, 1)
    return result
