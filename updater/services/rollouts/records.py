"""A rollout's record in ZooKeeper (DESIGN.md §7): begin (or take back) a rollout, record each node's
transition fenced by the token, finish it; and the operator's control requests (pause / abort) that the
engine reads before each node. Behind the ``corral.cloud.update_lock`` and ``rollout_progress`` actions and
the worker.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from kazoo.exceptions import NodeExistsError, NoNodeError

from updater.domain.inventory import Inventory
from updater.domain.plan import BatchMode, Plan, PlanError, plan_rollout
from updater.domain.rollout import Rollout
from updater.domain.states import (
    NodeObservation,
    NodeProgress,
    NodeState,
    RolloutState,
    StateError,
    resume_action,
)
from updater.services.cluster.lock import ClusterLock
from updater.services.rollouts.release import RolloutRunnerError


# --- rollout progress ---------------------------------------------------------------------------------------
def begin_rollout(
    lock: ClusterLock, token: int, rollout_id: str, inventory: Inventory, plan: Plan
) -> Rollout:
    """Create the rollout record, or take back the one a previous run of this rollout left (it keeps its
    executed order and progress; the plan is the new one, computed from that progress)."""
    lock.check(token)
    rollout = lock.read_rollout(rollout_id)
    if rollout is None:
        rollout = Rollout.create(rollout_id, inventory, plan, lock.read_progress(rollout_id))
    elif rollout.target_release != plan.target_release:
        raise RolloutRunnerError(
            f"rollout {rollout_id} targets {rollout.target_release}, not {plan.target_release}: finish or "
            "abort it first, or use another rollout id"
        )
    elif rollout.state is RolloutState.SUCCEEDED:
        return rollout  # a re-run of a finished rollout: nothing to do
    else:
        rollout.plan = plan.to_dict()
    try:
        rollout.start()
    except StateError as error:
        raise RolloutRunnerError(str(error)) from None
    lock.write_rollout(token, rollout)
    return rollout


def plan_only(
    lock: ClusterLock,
    rollout_id: str,
    inventory: Inventory,
    target_release: str,
    *,
    batch_mode: BatchMode | str = BatchMode.NODE,
    observed: Mapping[str, str] | None = None,
) -> tuple[Plan, dict[str, NodeProgress]]:
    """The plan from the progress in ZooKeeper (and what the nodes run now); writes nothing (``--check``)."""
    progress = dict(lock.read_progress(rollout_id))
    for node, release in (observed or {}).items():
        if release == target_release and node not in progress:
            progress[node] = NodeProgress(NodeState.ACTIVE, release)
    try:
        plan = plan_rollout(inventory, target_release, batch_mode=batch_mode, progress=progress)
    except PlanError as error:
        raise RolloutRunnerError(f"no safe plan: {error}") from None
    return plan, progress


def plan_and_begin(
    lock: ClusterLock,
    token: int,
    rollout_id: str,
    inventory: Inventory,
    target_release: str,
    *,
    batch_mode: BatchMode | str = BatchMode.NODE,
    observed: Mapping[str, str] | None = None,
) -> tuple[Rollout, Plan]:
    """Plan with the one planner from the progress in ZooKeeper, then begin (or take back) the rollout.

    ``observed`` maps nodes to the release they run now (``/etc/corral-release``): a node already on the
    target with no record in the middle of the procedure counts as done, so it is never rebooted.
    """
    plan, progress = plan_only(
        lock, rollout_id, inventory, target_release, batch_mode=batch_mode, observed=observed
    )
    rollout = begin_rollout(lock, token, rollout_id, inventory, plan)
    for node, record in progress.items():
        if node in rollout.nodes and rollout.nodes[node] != record and record.is_done(target_release):
            rollout.nodes[node] = record
    lock.write_rollout(token, rollout)
    return rollout, plan


def _rollout(lock: ClusterLock, rollout_id: str) -> Rollout:
    rollout = lock.read_rollout(rollout_id)
    if rollout is None:
        raise RolloutRunnerError(f"rollout {rollout_id} has no record: it was never begun")
    return rollout


def move_node(
    lock: ClusterLock,
    token: int,
    rollout_id: str,
    node: str,
    state: NodeState | str,
    *,
    release: str | None = None,
    boot_id_before_reboot: str | None = None,
    operator_override: bool = False,
) -> NodeProgress:
    """Record ``node``'s transition (checked by the rollout's rules), fenced by ``token``.

    ``operator_override`` is the rollback path (``corral_rollback_node``): a failed rollout is taken back
    just long enough to move that node back to active.
    """
    _rollout(lock, rollout_id)  # a clear refusal when the rollout was never begun

    def change(rollout: Rollout) -> NodeProgress:
        if operator_override and rollout.state is not RolloutState.RUNNING:
            rollout.start()
        try:
            return rollout.move_node(
                node, NodeState(state), release=release, boot_id_before_reboot=boot_id_before_reboot
            )
        except (StateError, ValueError) as error:
            raise RolloutRunnerError(str(error)) from None

    # Read-modify-write against the record's version: the nodes of one domain batch move at the same time.
    return lock.update_rollout(token, rollout_id, change, progress_of=node)


def next_action(
    lock: ClusterLock, rollout_id: str, node: str, *, release: str, boot_id: str
) -> tuple[str, str]:
    """What a (re)started run does next with ``node`` and the node's recorded state, from its progress and
    what it runs now: ``skip``, ``drain``, ``boot``, ``verify`` or ``stop``
    (``updater.domain.states.resume_action``)."""
    rollout = _rollout(lock, rollout_id)
    progress = rollout.nodes.get(node)
    if progress is None:
        raise RolloutRunnerError(f"node {node} is not part of rollout {rollout_id}")
    try:
        action = resume_action(node, progress, rollout.target_release, NodeObservation(release, boot_id))
    except StateError as error:
        raise RolloutRunnerError(str(error)) from None
    return str(action), str(progress.state)


def finish_rollout(lock: ClusterLock, token: int, rollout_id: str, outcome: str, reason: str = "") -> Rollout:
    """``succeeded`` (every node done), ``failed`` (with the reason the operator sees) or ``aborted``."""
    rollout = _rollout(lock, rollout_id)
    try:
        if outcome == "succeeded":
            rollout.succeed()
        elif outcome == "failed":
            rollout.fail(reason or "failed")
        elif outcome == "aborted":
            rollout.abort(reason or "aborted")
        else:
            raise RolloutRunnerError(f"unknown rollout outcome {outcome!r}: succeeded, failed or aborted")
    except StateError as error:
        raise RolloutRunnerError(str(error)) from None
    lock.write_rollout(token, rollout)
    return rollout


def progress_dicts(lock: ClusterLock, rollout_id: str) -> dict[str, dict[str, str | None]]:
    return {name: record.to_dict() for name, record in lock.read_progress(rollout_id).items()}


# --- operator control: pause / abort, checked before each node ----------------------------------------------
# ``rollouts/<id>/control`` holds an operator's request (JSON: action, actor, at). The per-node play checks it
# before it starts a node (``rollout_progress`` action ``control``), so the node in progress always finishes
# whole, and the same control works for a run of the playbook by hand. It is operator intent, not a node
# change, so it is written without the fencing token; applying it (pausing or aborting the record) is fenced.
CONTROL_ACTIONS = ("pause", "abort")


def _rollout_child(lock: ClusterLock, rollout_id: str, leaf: str) -> str:
    if not rollout_id or "/" in rollout_id or rollout_id in {".", ".."}:
        raise RolloutRunnerError(f"invalid rollout id {rollout_id!r}")
    return f"{lock.root}/rollouts/{rollout_id}/{leaf}"


def request_control(lock: ClusterLock, rollout_id: str, action: str, actor: str, at: float) -> None:
    """Ask the run of ``rollout_id`` to ``pause`` or ``abort`` once the node in progress is done."""
    if action not in CONTROL_ACTIONS:
        raise RolloutRunnerError(f"unknown control {action!r}: {' or '.join(CONTROL_ACTIONS)}")
    path = _rollout_child(lock, rollout_id, "control")
    value = json.dumps({"action": action, "actor": actor, "at": at}).encode()
    lock.client.ensure_path(path.rsplit("/", 1)[0])
    try:
        lock.client.create(path, value)
    except NodeExistsError:
        lock.client.set(path, value)


def read_control(lock: ClusterLock, rollout_id: str) -> dict[str, Any] | None:
    try:
        raw, _ = lock.client.get(_rollout_child(lock, rollout_id, "control"))
    except NoNodeError:
        return None
    data = json.loads(raw) if raw else None
    return dict(data) if isinstance(data, dict) and data.get("action") in CONTROL_ACTIONS else None


def clear_control(lock: ClusterLock, rollout_id: str) -> None:
    with contextlib.suppress(NoNodeError):
        lock.client.delete(_rollout_child(lock, rollout_id, "control"))


def apply_control(lock: ClusterLock, token: int, rollout_id: str) -> dict[str, Any] | None:
    """Called before a node starts: pause the rollout (it keeps the lock) or abort it (it releases the lock)
    when an operator asked for it; ``None`` (and nothing written) when nobody did."""
    control = read_control(lock, rollout_id)
    if control is None:
        return None
    rollout = _rollout(lock, rollout_id)
    reason = f"{control['action']} requested by {control.get('actor') or 'an operator'}"
    try:
        if control["action"] == "pause":
            rollout.pause(reason)
        else:
            rollout.abort(reason)
    except StateError as error:
        raise RolloutRunnerError(str(error)) from None
    lock.write_rollout(token, rollout)
    if control["action"] == "abort":
        lock.release(rollout_id, token)
    return {**control, "reason": reason}
