"""A rollout: its state, every node's progress, and the order nodes were actually taken.

Pure and persistable (``to_dict``/``from_dict``): the cluster's copy lives in ZooKeeper, so a
restarted worker rebuilds the same object and carries on. The rules it enforces on every change:

- node and rollout transitions follow the tables of :mod:`updater.domain.states`;
- a node already active on the target release is never taken again;
- nodes of two failure domains are never in the procedure at once, and a quorum holder is only
  ever in the procedure alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from updater.domain.inventory import Inventory
from updater.domain.plan import Plan
from updater.domain.states import (
    IN_PROGRESS_STATES,
    NodeProgress,
    NodeState,
    RolloutState,
    StateError,
    rollout_transition,
)


class UnsafeNodeChange(StateError):
    """Taking this node now would break a safety rule of the rollout."""


@dataclass
class Rollout:
    rollout_id: str
    target_release: str
    domains: Mapping[str, str]  # node -> failure domain
    quorum_holders: frozenset[str]
    nodes: dict[str, NodeProgress]
    state: RolloutState = RolloutState.PLANNED
    executed: list[str] = field(default_factory=list)  # nodes in the order their procedure began
    plan: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    @classmethod
    def create(
        cls,
        rollout_id: str,
        inventory: Inventory,
        plan: Plan,
        progress: Mapping[str, NodeProgress] | None = None,
    ) -> Rollout:
        if not rollout_id:
            raise StateError("a rollout needs an id")
        progress = progress or {}
        return cls(
            rollout_id=rollout_id,
            target_release=plan.target_release,
            domains={node.name: str(node.domain) for node in inventory.nodes},
            quorum_holders=frozenset(node.name for node in inventory.nodes if node.holds_quorum),
            nodes={node.name: progress.get(node.name, NodeProgress()) for node in inventory.nodes},
            plan=plan.to_dict(),
        )

    # --- rollout ---------------------------------------------------------------------------------
    def _move(self, wanted: RolloutState, reason: str | None = None) -> None:
        self.state = rollout_transition(self.rollout_id, self.state, wanted)
        self.reason = reason

    def start(self) -> None:
        """Begin, or (when already running or failed) take the rollout back after an interruption."""
        self._move(RolloutState.RUNNING)

    def pause(self, reason: str | None = None) -> None:
        self._move(RolloutState.PAUSED, reason)

    def fail(self, reason: str) -> None:
        self._move(RolloutState.FAILED, reason)

    def abort(self, reason: str) -> None:
        self._move(RolloutState.ABORTED, reason)

    def succeed(self) -> None:
        remaining = self.remaining()
        if remaining:
            raise StateError(
                f"rollout {self.rollout_id} cannot succeed: {', '.join(remaining)} "
                f"{'is' if len(remaining) == 1 else 'are'} not on {self.target_release} yet"
            )
        self._move(RolloutState.SUCCEEDED)

    # --- nodes -----------------------------------------------------------------------------------
    def remaining(self) -> list[str]:
        return [name for name, record in self.nodes.items() if not record.is_done(self.target_release)]

    def in_progress(self) -> list[str]:
        return [name for name, record in self.nodes.items() if record.state in IN_PROGRESS_STATES]

    def _progress(self, node: str) -> NodeProgress:
        try:
            return self.nodes[node]
        except KeyError:
            raise StateError(f"node {node!r} is not part of rollout {self.rollout_id}") from None

    def _check_can_take(self, node: str) -> None:
        if self._progress(node).is_done(self.target_release):
            raise UnsafeNodeChange(
                f"node {node} already runs {self.target_release}: a finished node is never taken again"
            )
        others = [name for name in self.in_progress() if name != node]
        if not others:
            return
        if node in self.quorum_holders or any(name in self.quorum_holders for name in others):
            raise UnsafeNodeChange(
                f"cannot take {node} while {', '.join(others)} {'is' if len(others) == 1 else 'are'} "
                "in the procedure: quorum holders are taken alone"
            )
        foreign = [name for name in others if self.domains[name] != self.domains[node]]
        if foreign:
            raise UnsafeNodeChange(
                f"cannot take {node} ({self.domains[node]}) while {foreign[0]} ({self.domains[foreign[0]]}) "
                "is in the procedure: never two failure domains at once"
            )

    def move_node(
        self,
        node: str,
        wanted: NodeState,
        *,
        release: str | None = None,
        boot_id_before_reboot: str | None = None,
    ) -> NodeProgress:
        """Record a node's transition; the rollout must be running."""
        if self.state is not RolloutState.RUNNING:
            raise StateError(f"rollout {self.rollout_id} is {self.state}: nodes change only while it runs")
        current = self._progress(node)
        if wanted is NodeState.DRAINING and current.state is NodeState.ACTIVE:
            self._check_can_take(node)
        updated = current.moved_to(node, wanted, release=release, boot_id_before_reboot=boot_id_before_reboot)
        self.nodes[node] = updated
        if wanted is NodeState.DRAINING and node not in self.executed:
            self.executed.append(node)
        return updated

    # --- persistence -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "target_release": self.target_release,
            "state": str(self.state),
            "reason": self.reason,
            "domains": dict(self.domains),
            "quorum_holders": sorted(self.quorum_holders),
            "nodes": {name: record.to_dict() for name, record in self.nodes.items()},
            "executed": list(self.executed),
            "plan": self.plan,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rollout:
        try:
            return cls(
                rollout_id=str(data["rollout_id"]),
                target_release=str(data["target_release"]),
                domains={str(k): str(v) for k, v in data["domains"].items()},
                quorum_holders=frozenset(str(name) for name in data["quorum_holders"]),
                nodes={str(k): NodeProgress.from_dict(v) for k, v in data["nodes"].items()},
                state=RolloutState(data["state"]),
                executed=[str(name) for name in data["executed"]],
                plan=dict(data.get("plan") or {}),
                reason=data.get("reason"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise StateError(f"not a valid rollout record: {error!r}") from error
