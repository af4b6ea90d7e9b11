"""Node and rollout state machines (DESIGN.md §7) with explicit transition tables.

A node goes ``active → draining → drained → rebooting → verifying → active``; ``failed`` (the
procedure stopped on it, it stays drained on purpose) and ``fenced`` (power-cycled through its BMC)
are the exits. A rollout goes ``planned → running → (paused) → succeeded | failed | aborted``.

Per-node progress is persisted (in ZooKeeper) as a :class:`NodeProgress`; :func:`resume_action`
tells a restarted worker what to do next with a node so that a finished node is never redone and
a node that already rebooted is never rebooted again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum


class StateError(ValueError):
    """Base of the state machine errors."""


class IllegalTransition(StateError):
    """A transition that the table does not allow."""

    def __init__(self, subject: str, current: StrEnum, wanted: StrEnum, allowed: frozenset[StrEnum]) -> None:
        self.subject = subject
        self.current = current
        self.wanted = wanted
        choices = ", ".join(sorted(str(state) for state in allowed)) or "none: it is final"
        super().__init__(
            f"{subject}: cannot go from {current} to {wanted} (allowed from {current}: {choices})"
        )


class NodeState(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    DRAINED = "drained"
    REBOOTING = "rebooting"
    VERIFYING = "verifying"
    FAILED = "failed"
    FENCED = "fenced"


_N = NodeState
NODE_TRANSITIONS: Mapping[NodeState, frozenset[NodeState]] = {
    # A healthy node may start its drain, or be found broken / fenced outside any procedure.
    _N.ACTIVE: frozenset({_N.DRAINING, _N.FAILED, _N.FENCED}),
    # A drain that fails undoes itself: back to active with the old image, nothing rebooted.
    _N.DRAINING: frozenset({_N.DRAINED, _N.ACTIVE, _N.FAILED, _N.FENCED}),
    # Drained: next is the trial boot; an operator rollback undrains it without a reboot.
    _N.DRAINED: frozenset({_N.REBOOTING, _N.ACTIVE, _N.FAILED, _N.FENCED}),
    _N.REBOOTING: frozenset({_N.VERIFYING, _N.FAILED, _N.FENCED}),
    # Verified: health, make the new image the default, undrain, then active on the new release.
    _N.VERIFYING: frozenset({_N.ACTIVE, _N.FAILED, _N.FENCED}),
    # Failed and fenced nodes stay drained until an operator rolls them back (or retries them).
    _N.FAILED: frozenset({_N.FENCED, _N.DRAINED, _N.ACTIVE}),
    _N.FENCED: frozenset({_N.DRAINED, _N.ACTIVE}),
}

IN_PROGRESS_STATES = frozenset({_N.DRAINING, _N.DRAINED, _N.REBOOTING, _N.VERIFYING})
BROKEN_STATES = frozenset({_N.FAILED, _N.FENCED})


class RolloutState(StrEnum):
    PLANNED = "planned"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


_R = RolloutState
ROLLOUT_TRANSITIONS: Mapping[RolloutState, frozenset[RolloutState]] = {
    _R.PLANNED: frozenset({_R.RUNNING, _R.ABORTED}),
    # RUNNING → RUNNING is a restarted worker taking its own rollout back after an interruption.
    _R.RUNNING: frozenset({_R.RUNNING, _R.PAUSED, _R.SUCCEEDED, _R.FAILED, _R.ABORTED}),
    _R.PAUSED: frozenset({_R.RUNNING, _R.ABORTED}),
    # A failed rollout is continued (same rollout id) once the operator has dealt with the node.
    _R.FAILED: frozenset({_R.RUNNING, _R.ABORTED}),
    _R.SUCCEEDED: frozenset(),
    _R.ABORTED: frozenset(),
}
FINAL_ROLLOUT_STATES = frozenset(state for state, nexts in ROLLOUT_TRANSITIONS.items() if not nexts)


def node_transition(node: str, current: NodeState, wanted: NodeState) -> NodeState:
    """Return ``wanted`` if the table allows it, else raise :class:`IllegalTransition`."""
    allowed = NODE_TRANSITIONS[current]
    if wanted not in allowed:
        raise IllegalTransition(f"node {node}", current, wanted, frozenset(allowed))
    return wanted


def rollout_transition(rollout_id: str, current: RolloutState, wanted: RolloutState) -> RolloutState:
    allowed = ROLLOUT_TRANSITIONS[current]
    if wanted not in allowed:
        raise IllegalTransition(f"rollout {rollout_id}", current, wanted, frozenset(allowed))
    return wanted


@dataclass(frozen=True)
class NodeProgress:
    """What is persisted per node: its state, the release it runs, and its boot id when the trial
    boot was requested (so a restarted worker can tell whether the reboot already happened)."""

    state: NodeState = NodeState.ACTIVE
    release: str | None = None
    boot_id_before_reboot: str | None = None

    def is_done(self, target_release: str) -> bool:
        return self.state is NodeState.ACTIVE and self.release == target_release

    def moved_to(
        self,
        node: str,
        wanted: NodeState,
        *,
        release: str | None = None,
        boot_id_before_reboot: str | None = None,
    ) -> NodeProgress:
        """The progress after a legal transition; ``None`` arguments keep the recorded value."""
        return replace(
            self,
            state=node_transition(node, self.state, wanted),
            release=self.release if release is None else release,
            boot_id_before_reboot=(
                self.boot_id_before_reboot if boot_id_before_reboot is None else boot_id_before_reboot
            ),
        )

    def to_dict(self) -> dict[str, str | None]:
        return {
            "state": str(self.state),
            "release": self.release,
            "boot_id_before_reboot": self.boot_id_before_reboot,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> NodeProgress:
        try:
            state = NodeState(str(data["state"]))
        except (KeyError, ValueError) as error:
            raise StateError(f"progress record has no valid state: {dict(data)!r}") from error
        release = data.get("release")
        boot_id = data.get("boot_id_before_reboot")
        return cls(
            state,
            None if release is None else str(release),
            None if boot_id is None else str(boot_id),
        )


class ResumeAction(StrEnum):
    SKIP = "skip"  # already on the target release and active
    DRAIN = "drain"  # start (or redo, it is idempotent) the drain
    BOOT = "boot"  # set the one-shot boot pointer and reboot
    VERIFY = "verify"  # the trial boot happened: health, make default, undrain
    STOP = "stop"  # the node failed or was fenced: an operator decides


@dataclass(frozen=True)
class NodeObservation:
    """What a worker sees on the node now: the release in /etc/corral-release and its boot id."""

    release: str
    boot_id: str


def resume_action(
    node: str, progress: NodeProgress, target_release: str, observed: NodeObservation | None = None
) -> ResumeAction:
    """The next step for ``node`` after a restart, from its persisted progress.

    ``observed`` is needed only for a node recorded as ``rebooting``: if its boot id changed since the
    reboot was requested, the reboot happened and is not repeated. Raises :class:`StateError` when
    the records contradict what is observed.
    """
    if progress.is_done(target_release):
        return ResumeAction.SKIP
    match progress.state:
        case NodeState.ACTIVE | NodeState.DRAINING:
            return ResumeAction.DRAIN
        case NodeState.DRAINED:
            return ResumeAction.BOOT
        case NodeState.VERIFYING:
            return ResumeAction.VERIFY
        case NodeState.FAILED | NodeState.FENCED:
            return ResumeAction.STOP
        case NodeState.REBOOTING:
            return _resume_rebooting(node, progress, target_release, observed)
    raise StateError(f"node {node}: unknown state {progress.state!r}")  # pragma: no cover


def _resume_rebooting(
    node: str, progress: NodeProgress, target_release: str, observed: NodeObservation | None
) -> ResumeAction:
    if observed is None:
        raise StateError(
            f"node {node} was rebooting when the rollout stopped: observe its release and boot id first"
        )
    if progress.boot_id_before_reboot is None:
        raise StateError(f"node {node} is recorded as rebooting without the boot id it had before the reboot")
    if observed.boot_id == progress.boot_id_before_reboot:
        # The reboot was requested but never happened: it is safe to request it (once) now.
        return ResumeAction.BOOT
    if observed.release == target_release:
        return ResumeAction.VERIFY
    # It rebooted and came back on another release: the trial boot fell back to the old image.
    return ResumeAction.STOP
