"""The rolling-update planner: the ordered steps (batches of nodes) that take a cluster to a release.

One plan function, shared by the update service and ``ansible-playbook corral.cloud.rolling_update``.
The rules (issue 6, DESIGN.md §7):

- a node interrupted in the middle of its procedure is finished first (and alone);
- then the nodes holding quorum members (ZooKeeper, Ceph monitors), one at a time, so no service
  ever has two members down at once;
- then every other node: one per step, or with batch mode ``domain`` every remaining node of one
  failure domain in one step when the CRUSH failure domain is that domain and the pools keep
  ``min_size`` replicas without it; never nodes of two failure domains in one step;
- nodes already on the target release are skipped;
- a final ``finalise`` step (safety flags unset; ``require-osd-release`` when the Ceph major changes).

The plan is deterministic: the same inventory and progress give the same steps, whatever order the
inventory lists its nodes in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from updater.domain.inventory import DomainLevel, FailureDomain, Inventory, Node, domain_sort_key, sort_key
from updater.domain.states import BROKEN_STATES, IN_PROGRESS_STATES, NodeProgress

CEPH_RELEASE_NAMES: Mapping[int, str] = {
    15: "octopus",
    16: "pacific",
    17: "quincy",
    18: "reef",
    19: "squid",
    20: "tentacle",
}
MIN_QUORUM_FOR_ROLLING = 3


class PlanError(ValueError):
    """No safe plan exists for this input; the message says why and what to do."""


class BatchMode(StrEnum):
    NODE = "node"
    DOMAIN = "domain"


class StepKind(StrEnum):
    RESUME = "resume"  # finish the node(s) a previous run left in the middle of the procedure
    QUORUM = "quorum"  # one node holding quorum members
    NODE = "node"  # one node
    DOMAIN = "domain"  # every remaining node of one failure domain
    FINALISE = "finalise"  # after the last node


@dataclass(frozen=True)
class Step:
    kind: StepKind
    nodes: tuple[str, ...] = ()
    domain: str | None = None
    quorum_services: tuple[str, ...] = ()
    require_osd_release: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": str(self.kind), "nodes": list(self.nodes)}
        if self.domain is not None:
            data["domain"] = self.domain
        if self.quorum_services:
            data["quorum_services"] = list(self.quorum_services)
        if self.kind is StepKind.FINALISE:
            data["require_osd_release"] = self.require_osd_release
        return data

    def describe(self) -> str:
        if self.kind is StepKind.FINALISE:
            extra = f", require-osd-release {self.require_osd_release}" if self.require_osd_release else ""
            return f"finalise: unset the rollout's safety flags{extra}"
        holds = f", holds {' and '.join(self.quorum_services)}" if self.quorum_services else ""
        return f"{self.kind}: {', '.join(self.nodes)} ({self.domain}{holds})"


@dataclass(frozen=True)
class Plan:
    target_release: str
    batch_mode: BatchMode
    domain_level: DomainLevel
    steps: tuple[Step, ...]
    skipped: tuple[str, ...] = ()  # already on the target release
    notes: tuple[str, ...] = ()

    def node_order(self) -> tuple[str, ...]:
        return tuple(name for step in self.steps for name in step.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_release": self.target_release,
            "batch_mode": str(self.batch_mode),
            "domain_level": str(self.domain_level),
            "steps": [step.to_dict() for step in self.steps],
            "skipped": list(self.skipped),
            "notes": list(self.notes),
        }

    def to_report(self) -> dict[str, Any]:
        """The plan as every caller hands it on (the ``rolling_plan`` filter, check mode and ``begin`` of the
        ``rollout_progress`` action, the update service's preview): :meth:`to_dict` plus the nodes in order
        (``node_order``) and the plan as text (``lines``). The rollout record keeps only :meth:`to_dict`: the
        other two follow from it, and a 10,000-node plan must stay small in ZooKeeper."""
        return {**self.to_dict(), "node_order": list(self.node_order()), "lines": self.describe()}

    def describe(self) -> list[str]:
        lines = [f"{index}. {step.describe()}" for index, step in enumerate(self.steps, start=1)]
        if self.skipped:
            lines.append(f"already on {self.target_release}: {', '.join(self.skipped)}")
        lines.extend(f"note: {note}" for note in self.notes)
        return lines


_MAJOR = re.compile(r"^v?(\d+)(?:\.\d+)*(?:[-+~].*)?$")


def ceph_major(release: str) -> int:
    """The Ceph major of ``16.2.15``, ``17``, ``v18.2.0`` or a codename such as ``quincy``."""
    text = release.strip().lower()
    by_name = {name: major for major, name in CEPH_RELEASE_NAMES.items()}
    if text in by_name:
        return by_name[text]
    match = _MAJOR.match(text)
    if not match:
        raise PlanError(f"cannot read a Ceph major version from {release!r} (expected e.g. 17.2.7 or quincy)")
    return int(match.group(1))


def require_osd_release(ceph_from: str | None, ceph_to: str | None) -> str | None:
    """The ``ceph osd require-osd-release`` value to set after the last node, if the major changes."""
    if ceph_from is None and ceph_to is None:
        return None
    if ceph_from is None or ceph_to is None:
        raise PlanError("give both the installed and the target Ceph release, or neither")
    before, after = ceph_major(ceph_from), ceph_major(ceph_to)
    if after < before:
        raise PlanError(f"Ceph cannot be downgraded: the cluster runs {ceph_from}, the target has {ceph_to}")
    if after == before:
        return None
    if after - before > 2:
        raise PlanError(
            f"Ceph supports upgrades across at most two majors; {ceph_from} to {ceph_to} needs an "
            "intermediate release"
        )
    if after not in CEPH_RELEASE_NAMES:
        known = ", ".join(f"{major} ({name})" for major, name in CEPH_RELEASE_NAMES.items())
        raise PlanError(f"unknown Ceph major {after} in {ceph_to!r}; known: {known}")
    return CEPH_RELEASE_NAMES[after]


def _parse_batch_mode(value: BatchMode | str) -> BatchMode:
    try:
        return BatchMode(value)
    except ValueError:
        choices = " or ".join(repr(str(mode)) for mode in BatchMode)
        raise PlanError(f"corral_rolling_batch must be {choices}, got {value!r}") from None


def _check_quorums(inventory: Inventory) -> None:
    for service, members in inventory.quorum.items():
        if len(members) < MIN_QUORUM_FOR_ROLLING:
            raise PlanError(
                f"{service} has {len(members)} member(s) ({', '.join(members)}): its quorum is lost while "
                f"a member reboots; a rolling update without downtime needs at least "
                f"{MIN_QUORUM_FOR_ROLLING} members"
            )


def _node_sort_key(node: Node) -> tuple[Any, ...]:
    return (domain_sort_key(node.domain), sort_key(node.name))


def _split_progress(
    inventory: Inventory, progress: Mapping[str, NodeProgress], target_release: str
) -> tuple[list[Node], list[Node], list[str]]:
    """(in progress, pending, done) nodes; refuses unknown, failed or fenced nodes."""
    unknown = sorted((name for name in progress if name not in inventory), key=sort_key)
    if unknown:
        raise PlanError(
            f"progress is recorded for {', '.join(unknown)}, which the inventory does not have: "
            "use the inventory the rollout started with"
        )
    broken = [
        node
        for node in inventory.nodes
        if node.name in progress and progress[node.name].state in BROKEN_STATES
    ]
    if broken:
        details = ", ".join(f"{node.name} ({progress[node.name].state})" for node in broken)
        raise PlanError(
            f"cannot continue while {details} is out of service: roll it back with "
            f"-e corral_rollback_node={broken[0].name} or repair it first"
        )
    in_progress: list[Node] = []
    pending: list[Node] = []
    done: list[str] = []
    for node in inventory.nodes:
        record = progress.get(node.name)
        if record is not None and record.is_done(target_release):
            done.append(node.name)
        elif record is not None and record.state in IN_PROGRESS_STATES:
            in_progress.append(node)
        else:
            pending.append(node)
    return in_progress, pending, done


def _resume_step(in_progress: list[Node]) -> Step:
    domains = sorted({node.domain for node in in_progress}, key=domain_sort_key)
    names = ", ".join(node.name for node in in_progress)
    if len(domains) > 1:
        raise PlanError(
            f"the recorded progress has {names} in the middle of the procedure in "
            f"{len(domains)} failure domains ({', '.join(map(str, domains))}); that never happens in a "
            "valid rollout: check those nodes by hand and correct their progress records"
        )
    holders = [node for node in in_progress if node.holds_quorum]
    if holders and len(in_progress) > 1:
        raise PlanError(
            f"the recorded progress has {names} in the middle of the procedure together with quorum "
            f"holder {holders[0].name}; quorum holders are updated alone: check those nodes by hand"
        )
    nodes = sorted(in_progress, key=_node_sort_key)
    return Step(
        StepKind.RESUME,
        tuple(node.name for node in nodes),
        str(domains[0]),
        tuple(sorted({service for node in nodes for service in node.quorum_services})),
    )


def _domain_batches_allowed(
    inventory: Inventory, crush_level: DomainLevel, pool_size: int, pool_min_size: int
) -> str | None:
    """None when whole failure domains may go down together, else the reason they may not."""
    if crush_level is not DomainLevel.RACK:
        return "the CRUSH failure domain is the host, so a batch is one node"
    if pool_size - 1 < pool_min_size:
        return (
            f"pools with size {pool_size} and min_size {pool_min_size} stop serving I/O when a "
            "failure domain is down, so a batch is one node"
        )
    racks = len(inventory.domains())
    if racks < pool_size:
        return (
            f"{racks} racks cannot hold {pool_size} replicas one per rack, so a rack may hold two "
            "replicas of a placement group and a batch is one node"
        )
    return None


def plan_rollout(
    inventory: Inventory,
    target_release: str,
    *,
    batch_mode: BatchMode | str = BatchMode.NODE,
    progress: Mapping[str, NodeProgress] | None = None,
    ceph_release_from: str | None = None,
    ceph_release_to: str | None = None,
    crush_failure_domain: DomainLevel | str | None = None,
    ceph_pool_size: int = 3,
    ceph_pool_min_size: int = 2,
) -> Plan:
    """Plan the rollout of ``target_release`` over ``inventory``; raises :class:`PlanError` when no
    safe plan exists."""
    if not target_release:
        raise PlanError("the target release is empty")
    mode = _parse_batch_mode(batch_mode)
    crush_level = DomainLevel(crush_failure_domain) if crush_failure_domain else inventory.domain_level
    if crush_level is DomainLevel.RACK and inventory.domain_level is not DomainLevel.RACK:
        raise PlanError("the CRUSH failure domain is 'rack' but no node has corral_rack")
    if ceph_pool_min_size < 1 or ceph_pool_size < ceph_pool_min_size:
        raise PlanError(f"invalid pool size {ceph_pool_size} / min_size {ceph_pool_min_size}")
    finalise = Step(
        StepKind.FINALISE, require_osd_release=require_osd_release(ceph_release_from, ceph_release_to)
    )
    _check_quorums(inventory)
    in_progress, pending, done = _split_progress(inventory, progress or {}, target_release)

    steps: list[Step] = []
    if in_progress:
        steps.append(_resume_step(in_progress))

    pending.sort(key=_node_sort_key)
    for node in pending:
        if node.holds_quorum:
            steps.append(
                Step(StepKind.QUORUM, (node.name,), str(node.domain), tuple(sorted(node.quorum_services)))
            )

    notes: list[str] = []
    others = [node for node in pending if not node.holds_quorum]
    refused = _domain_batches_allowed(inventory, crush_level, ceph_pool_size, ceph_pool_min_size)
    if mode is BatchMode.DOMAIN and refused is None:
        batches: dict[FailureDomain, list[str]] = {}
        for node in others:
            batches.setdefault(node.domain, []).append(node.name)
        steps.extend(Step(StepKind.DOMAIN, tuple(names), str(domain)) for domain, names in batches.items())
    else:
        if mode is BatchMode.DOMAIN and refused is not None and others:
            notes.append(f"batch mode 'domain' not used: {refused}")
        steps.extend(Step(StepKind.NODE, (node.name,), str(node.domain)) for node in others)
    steps.append(finalise)
    return Plan(
        target_release=target_release,
        batch_mode=mode,
        domain_level=inventory.domain_level,
        steps=tuple(steps),
        skipped=tuple(done),
        notes=tuple(notes),
    )
