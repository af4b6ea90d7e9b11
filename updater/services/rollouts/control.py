"""Rollouts, the operator's side: preview (plan, preflight, estimate), start, pause, resume, abort, break the
lock. The web button, the API and ``corral-updater`` call these same functions (``updater/web``,
``updater/cli/rollout_commands.py``); the Celery task ``corral.rollout`` runs what :func:`start` enqueues
(:mod:`updater.services.rollouts.execution`).

Authority (DESIGN.md §7): ZooKeeper holds the cluster update lock, the fencing token, per-node progress and
the operator's pause/abort request (``rollouts/<id>/control``); the store keeps history and what the pages
show.

Audit: each function writes its ``ok`` entry in the caller's transaction (both land or neither). A refusal
raises :class:`RolloutConflict` or :class:`RolloutRefused` before anything is written; the adapter records the
refusal in a transaction of its own (``audit.record_separately``), as it does for every refused mutation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from updater.config import ServiceConfig
from updater.domain.states import BROKEN_STATES, FINAL_ROLLOUT_STATES, RolloutState
from updater.services import filelocks
from updater.services.accounts import audit
from updater.services.cluster import view as cluster_view
from updater.services.cluster.access import (
    Cluster,
    ClusterAccessError,
    Observation,
    load_cluster,
    observe,
)
from updater.services.cluster.lock import ClusterLock, LockError, LockHolder
from updater.services.cluster.zookeeper import zookeeper
from updater.services.rollouts.ownership import run_owner
from updater.services.rollouts.records import (
    clear_control,
    finish_rollout,
    plan_only,
    read_control,
    request_control,
)
from updater.services.rollouts.release import RolloutRunnerError
from updater.store import queries
from updater.store.models import Release, Rollout, RolloutStep, utcnow

# Estimated seconds per node when no past rollout recorded its phases (a lab node takes ≈ 30 s with the engine
# only; a node with Ceph, ZooKeeper and the endpoint drained and checked takes minutes).
DEFAULT_SECONDS_PER_NODE = 180
# Store states of a rollout that holds (or is about to hold) the cluster: a second start is refused.
ACTIVE_STATES = (RolloutState.PLANNED, RolloutState.RUNNING, RolloutState.PAUSED)
ZOOKEEPER_TIMEOUT = 10.0

Enqueue = Callable[[str], None]  # the adapter's way to start the Celery task `corral.rollout` for an id


class RolloutConflict(Exception):
    """Another rollout runs or holds the cluster update lock (HTTP 409); ``str()`` names the holder."""

    def __init__(self, holder: str, message: str | None = None) -> None:
        self.holder = holder
        super().__init__(message or f"another rollout is in progress: {holder}")


class RolloutRefused(Exception):
    """Refused input or state (HTTP 400/422): unknown or unstaged release, failed preflight, wrong state."""


@dataclass(frozen=True)
class PreflightCheck:
    name: str
    passed: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class PlanPreview:
    version: str
    batches: list[list[str]]  # node names, in order; one inner list per step
    lines: list[str]  # the planner's human-readable lines
    estimated_seconds: int
    preflight: list[PreflightCheck]
    plan: dict[str, Any]  # the planner's plan (Plan.to_report), recorded with the rollout

    @property
    def ready(self) -> bool:
        return all(check.passed for check in self.preflight)

    def failed_checks(self) -> list[PreflightCheck]:
        return [check for check in self.preflight if not check.passed]

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "batches": [list(batch) for batch in self.batches],
            "lines": list(self.lines),
            "estimated_seconds": self.estimated_seconds,
            "preflight": [check.as_json() for check in self.preflight],
            "ready": self.ready,
        }


# --- helpers ----------------------------------------------------------------------------------------------
def _cluster(config: ServiceConfig) -> Cluster:
    try:
        return load_cluster(config)
    except ClusterAccessError as error:
        raise RolloutRefused(str(error)) from None


@contextmanager
def _lock(cluster: Cluster) -> Iterator[ClusterLock]:
    try:
        with zookeeper(cluster.zookeeper_hosts, ZOOKEEPER_TIMEOUT) as client:
            yield ClusterLock(client)
    except RolloutRunnerError as error:
        raise RolloutRefused(str(error)) from None


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe_holder(holder: LockHolder) -> str:
    return (
        f"rollout {holder.rollout_id} held by {holder.owner} since {_when(holder.acquired_at)} "
        f"(token {holder.token})"
    )


def describe_rollout(rollout: Rollout) -> str:
    return (
        f"rollout {rollout.id} started by {rollout.created_by} at "
        f"{rollout.created_at.strftime('%Y-%m-%d %H:%M:%S UTC')} ({rollout.state})"
    )


def active_rollouts(db: Session) -> list[Rollout]:
    return list(
        db.scalars(
            sa.select(Rollout).where(Rollout.state.in_(ACTIVE_STATES)).order_by(Rollout.created_at)
        ).all()
    )


def _release(db: Session, version: str) -> Release:
    release = queries.find_release(db, version)
    if release is None:
        raise RolloutRefused(
            f"release {version} is unknown: import its bundle or download it from the channel"
        )
    return release


def _rollout(db: Session, rollout_id: str) -> Rollout:
    try:
        return queries.get_rollout(db, rollout_id)
    except queries.NotFound:
        raise RolloutRefused(f"there is no rollout {rollout_id!r}") from None


def estimate_seconds(db: Session, node_count: int) -> int:
    """Mean seconds per node over past rollouts' recorded phases (``phase_seconds['total']``), else the
    default, times the nodes to roll."""
    phases = db.scalars(
        sa.select(RolloutStep.phase_seconds)
        .join(Rollout)
        .where(Rollout.state == RolloutState.SUCCEEDED, RolloutStep.finished_at.is_not(None))
    ).all()
    totals = [
        float(phase["total"])
        for phase in phases
        if isinstance(phase, dict) and isinstance(phase.get("total"), int | float)
    ]
    per_node = sum(totals) / len(totals) if totals else DEFAULT_SECONDS_PER_NODE
    return round(per_node * node_count)


def _release_checks(release: Release) -> list[PreflightCheck]:
    staged = Path(release.staged_path) if release.staged_path else None
    if staged is None:
        staged_check = PreflightCheck("release staged", False, f"release {release.version} is not staged")
    elif not (staged / "manifest.json").is_file():
        staged_check = PreflightCheck(
            "release staged", False, f"release {release.version} is recorded at {staged} but is not there"
        )
    else:
        staged_check = PreflightCheck("release staged", True, str(staged))
    failed = [check.name for check in release.checks if not check.passed]
    if not release.checks:
        verified = PreflightCheck("release verified", False, "no verification result is recorded")
    elif failed:
        verified = PreflightCheck("release verified", False, f"failed checks: {', '.join(failed)}")
    else:
        verified = PreflightCheck("release verified", True, f"{len(release.checks)} checks passed")
    return [staged_check, verified]


def _lock_check(holder: LockHolder | None, rollout_id: str | None) -> PreflightCheck:
    if holder is None:
        return PreflightCheck("update lock", True, "free")
    if holder.rollout_id == rollout_id:
        return PreflightCheck("update lock", True, f"held by this rollout (token {holder.token})")
    return PreflightCheck("update lock", False, describe_holder(holder))


def observation_checks(observation: Observation) -> list[PreflightCheck]:
    """The preflight's verdicts on what every node answered: do they all answer, are they all healthy. A
    health play that ran out of time is not a healthy cluster. A play the engine could not run (a parse
    error, a module or role not found, no node in the inventory) says so as its own check and judges no
    node."""
    if observation.engine_error:
        not_checked = "not checked: the observation play could not run (see 'observation play')"
        return [
            PreflightCheck(
                "observation play", False, f"Ansible could not run it: {observation.engine_error}"
            ),
            PreflightCheck("nodes answer", False, not_checked),
            PreflightCheck("cluster health", False, not_checked),
        ]
    missing = {**observation.unreachable}
    checks: list[PreflightCheck] = []
    checks.append(
        PreflightCheck(
            "nodes answer",
            not missing,
            "; ".join(f"{node}: {why}" for node, why in sorted(missing.items()))
            or ", ".join(f"{node} runs {release}" for node, release in sorted(observation.releases.items())),
        )
    )
    checks.append(
        PreflightCheck(
            "cluster health",
            not observation.unhealthy and not missing and not observation.timed_out,
            "; ".join(f"{node}: {why}" for node, why in sorted(observation.unhealthy.items()))
            or (
                "not checked: a node did not answer"
                if missing
                else "the health checks did not finish in time: look at the cluster before updating"
                if observation.timed_out
                else "every service role's health check passed"
            ),
        )
    )
    return checks


# --- preview ----------------------------------------------------------------------------------------------
def _preview(
    config: ServiceConfig, db: Session, version: str, rollout_id: str | None
) -> tuple[PlanPreview, LockHolder | None]:
    release = _release(db, version)
    cluster = _cluster(config)
    observation = observe(cluster, home=config.home)
    cluster_view.save(config, observation)  # the Overview shows what this preflight saw
    checks = _release_checks(release)
    checks += observation_checks(observation)
    with _lock(cluster) as lock:
        holder = lock.holder()
        checks.append(_lock_check(holder, rollout_id))
        try:
            plan, _ = plan_only(
                lock,
                rollout_id or f"preview-{version}",
                cluster.inventory,
                version,
                observed=observation.releases,
            )
        except RolloutRunnerError as error:
            raise RolloutRefused(str(error)) from None
    batches = [list(step.nodes) for step in plan.steps if step.nodes]
    preview_ = PlanPreview(
        version=version,
        batches=batches,
        lines=plan.describe(),
        estimated_seconds=estimate_seconds(db, len(plan.node_order())),
        preflight=checks,
        plan=plan.to_report(),
    )
    return preview_, holder


def preview(config: ServiceConfig, db: Session, version: str) -> PlanPreview:
    """The plan to ``version`` over the configured inventory and what the nodes run now, with real preflight
    checks (nodes answer, release staged and verified, lock free, role health) and an estimated duration."""
    return _preview(config, db, version, None)[0]


# --- start ------------------------------------------------------------------------------------------------
def new_rollout_id(version: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"update-to-{version}-{stamp}"[:64]


START_LOCK = "rollout-start.lock"


@contextmanager
def starting(config: ServiceConfig, actor: str, version: str) -> Iterator[None]:
    """One start at a time, across the web's threads and processes and the CLI.

    :func:`start` checks that no rollout is active, runs the preflight (seconds of Ansible) and only then
    records the new rollout: two starts side by side would both pass the check. The caller holds this guard
    around the whole transaction that calls :func:`start`, until it has committed, so a second start either
    finds the first one starting (:class:`RolloutConflict` naming who) or finds its committed rollout. The
    guard is an ``flock``: a process that dies holding it lets go with its last breath.
    """
    since = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        held = filelocks.take(
            Path(config.home) / START_LOCK, holder=f"{actor} is starting a rollout to {version} since {since}"
        )
    except filelocks.Busy as busy:
        holder = busy.holder or "another start (just begun)"
        raise RolloutConflict(holder, f"another rollout is being started: {holder}") from None
    with held:
        yield


def start(config: ServiceConfig, db: Session, version: str, actor: str, enqueue: Enqueue) -> str:
    """Record a rollout to ``version`` (plan and steps) and enqueue its run; returns the rollout id.

    Callers hold :func:`starting` around the transaction. Refused with :class:`RolloutConflict` when a rollout
    is active in the store or another one holds the lock in ZooKeeper, with :class:`RolloutRefused` when a
    preflight check fails.
    """
    running = active_rollouts(db)
    if running:
        raise RolloutConflict(describe_rollout(running[0]))
    rollout_id = new_rollout_id(version)
    _release(db, version)
    with _lock(_cluster(config)) as lock:
        holder = lock.holder()
    if holder is not None:
        raise RolloutConflict(describe_holder(holder))
    plan, holder = _preview(config, db, version, rollout_id)
    if holder is not None:
        raise RolloutConflict(describe_holder(holder))
    if not plan.ready:
        raise RolloutRefused(
            "preflight failed: "
            + "; ".join(f"{check.name}: {check.detail}" for check in plan.failed_checks())
        )
    nodes = [node for batch in plan.batches for node in batch]
    if not nodes:
        raise RolloutRefused(f"every node already runs {version}: there is nothing to roll out")
    queries.add_rollout(
        db,
        rollout_id=rollout_id,
        release=_release(db, version),
        created_by=actor,
        plan=plan.plan,
        nodes=nodes,
    )
    audit.record(
        db,
        actor=actor,
        action="rollout.start",
        target=rollout_id,
        detail=f"to {version}, nodes in order: {', '.join(nodes)}",
    )
    db.flush()
    enqueue(rollout_id)
    return rollout_id


# --- pause / resume / abort -------------------------------------------------------------------------------
def _log(db: Session, rollout_id: str, text: str) -> None:
    queries.append_log(db, rollout_id, [(None, "event", text)])


def pause(config: ServiceConfig, db: Session, rollout_id: str, actor: str) -> None:
    """Ask the run to stop once the node in progress is whole; the rollout becomes ``paused`` and keeps the
    lock (a node is never stopped in its middle)."""
    rollout = _rollout(db, rollout_id)
    if rollout.state not in (RolloutState.PLANNED, RolloutState.RUNNING):
        raise RolloutRefused(f"rollout {rollout_id} is {rollout.state}: only a running rollout can be paused")
    with _lock(_cluster(config)) as lock:
        control = read_control(lock, rollout_id)
        if control is not None and control["action"] == "abort":
            raise RolloutRefused(f"rollout {rollout_id} is already being aborted by {control.get('actor')}")
        request_control(lock, rollout_id, "pause", actor, time.time())
    _log(db, rollout_id, f"pause requested by {actor}: the rollout stops once the node in progress is done")
    audit.record(db, actor=actor, action="rollout.pause", target=rollout_id)


def resume(config: ServiceConfig, db: Session, rollout_id: str, actor: str, enqueue: Enqueue) -> None:
    """Continue a paused rollout under the same id: the engine skips every finished node."""
    rollout = _rollout(db, rollout_id)
    if rollout.state is not RolloutState.PAUSED:
        raise RolloutRefused(f"rollout {rollout_id} is {rollout.state}: only a paused rollout can be resumed")
    with _lock(_cluster(config)) as lock:
        owner = run_owner(lock, rollout_id)
        if owner is not None:
            raise RolloutConflict(
                f"rollout {rollout_id} run by {owner.describe()}",
                f"rollout {rollout_id} is still being run by {owner.describe()}: wait until it has paused",
            )
        holder = lock.holder()
        if holder is not None and holder.rollout_id != rollout_id:
            raise RolloutConflict(describe_holder(holder))
        clear_control(lock, rollout_id)
    _log(db, rollout_id, f"resume requested by {actor}")
    audit.record(db, actor=actor, action="rollout.resume", target=rollout_id)
    db.flush()
    enqueue(rollout_id)


def abort(config: ServiceConfig, db: Session, rollout_id: str, actor: str) -> None:
    """End the rollout ``aborted`` once the node in progress is whole, and release the lock.

    A run in progress applies it before its next node; a rollout nobody runs (paused, or not started yet) is
    aborted here at once.
    """
    rollout = _rollout(db, rollout_id)
    if rollout.state in FINAL_ROLLOUT_STATES:
        raise RolloutRefused(f"rollout {rollout_id} is {rollout.state}: it has already ended")
    with _lock(_cluster(config)) as lock:
        record = lock.read_rollout(rollout_id)
        broken = [
            node
            for node, progress in (record.nodes.items() if record else ())
            if progress.state in BROKEN_STATES
        ]
        if broken:
            raise RolloutRefused(
                f"rollout {rollout_id} stopped on {', '.join(broken)}: roll "
                f"{'it' if len(broken) == 1 else 'them'} back first (ansible-playbook "
                f"corral.cloud.rolling_update -e corral_rollback_node={broken[0]}), then abort"
            )
        request_control(lock, rollout_id, "abort", actor, time.time())
        if run_owner(lock, rollout_id) is None:
            _abort_now(lock, rollout_id, actor)
            rollout.state = RolloutState.ABORTED
            rollout.finished_at = utcnow()
            _log(db, rollout_id, f"aborted by {actor}")
        else:
            _log(
                db,
                rollout_id,
                f"abort requested by {actor}: the rollout stops once the node in progress is done",
            )
    audit.record(db, actor=actor, action="rollout.abort", target=rollout_id)


def _abort_now(lock: ClusterLock, rollout_id: str, actor: str) -> None:
    """Abort a rollout no process runs: its record (fenced by the lock's token) and the lock."""
    holder = lock.holder()
    token = holder.token if holder is not None and holder.rollout_id == rollout_id else None
    record = lock.read_rollout(rollout_id)
    try:
        if token is not None and record is not None and record.state not in FINAL_ROLLOUT_STATES:
            finish_rollout(lock, token, rollout_id, "aborted", f"aborted by {actor}")
        if token is not None:
            lock.release(rollout_id, token)
    except (LockError, RolloutRunnerError) as error:
        raise RolloutRefused(f"cannot abort rollout {rollout_id}: {error}") from None


# --- the lock ---------------------------------------------------------------------------------------------
def break_lock(config: ServiceConfig, db: Session, token: int, actor: str) -> None:
    """Remove a stale lock by its token (a dead rollout's); refused while a live process runs its rollout."""
    with _lock(_cluster(config)) as lock:
        holder = lock.holder()
        if holder is None:
            raise RolloutRefused("nobody holds the cluster update lock: there is nothing to break")
        if holder.token != token:
            raise RolloutRefused(
                f"token {token} is not the lock's: {describe_holder(holder)}; give its token to break it"
            )
        owner = run_owner(lock, holder.rollout_id)
        if owner is not None:
            raise RolloutConflict(
                describe_holder(holder),
                f"rollout {holder.rollout_id} is being run by {owner.describe()}: pause or abort it instead",
            )
        try:
            lock.break_lock(token)
        except LockError as error:
            raise RolloutRefused(str(error)) from None
    rollout = db.get(Rollout, holder.rollout_id)
    if rollout is not None and rollout.state in ACTIVE_STATES:
        rollout.state = RolloutState.FAILED
        rollout.finished_at = utcnow()
        _log(db, rollout.id, f"the cluster update lock (token {token}) was broken by {actor}")
    audit.record(
        db, actor=actor, action="rollout.break_lock", target=holder.rollout_id, detail=describe_holder(holder)
    )


def lock_status(config: ServiceConfig) -> dict[str, Any] | None:
    """Who holds the cluster update lock (holder, owner, token, since), ``None`` when it is free."""
    with _lock(_cluster(config)) as lock:
        holder = lock.holder()
    if holder is None:
        return None
    return {
        "holder": holder.rollout_id,
        "owner": holder.owner,
        "token": holder.token,
        "since": datetime.fromtimestamp(holder.acquired_at, UTC).isoformat(),
    }
