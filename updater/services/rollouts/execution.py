"""Running a rollout: what the Celery task ``corral.rollout`` calls, and the crash recovery that finds a
rollout whose worker died and continues it under the same id.

:func:`run` runs the per-node plays of ``corral.cloud.rolling_update`` (``corral_rolling_phase=nodes``)
through ansible-runner, from the target release's collection. The playbook's first phase (verify, stage,
install the collection, publish the image) is done here by the same service function its ``release_stage``
plugin calls
(``release.staged_release``), so the events ansible-runner hands back are those of the per-node
procedure itself: they become per-node step state, ``phase_seconds`` and log lines
(:mod:`updater.services.rollouts.events`). ``corral-probe`` runs beside it; its report is stored with the
rollout.

**Who runs a rollout** is an ephemeral znode ``rollouts/<id>/owner`` (host, pid, process start time) created
by the process that runs it, in its ZooKeeper session: a second run of the same id is refused while it exists,
and it disappears when that process dies (at once when the run ends, after the session timeout when the
process is killed). :func:`recover` (on ``worker_ready`` and periodically from beat) enqueues every rollout
the store shows ``running`` with no owner, or whose owner ran on this host and is gone (its pid no longer the
same process). The run takes the lock back with a newer fencing token, so anything the dead run left behind is
fenced off, and the engine's progress in ZooKeeper means no finished node is redone and no node rebooted
twice. Celery's redelivery plays no part (tasks are acknowledged when they start).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from updater.config import ServiceConfig, known_secrets
from updater.domain.availability import merge_run_reports
from updater.domain.states import FINAL_ROLLOUT_STATES, RolloutState
from updater.services.accounts import auth
from updater.services.cluster.access import Cluster, ClusterAccessError, load_cluster
from updater.services.cluster.boot import BootServiceError, open_boot_service
from updater.services.cluster.lock import ClusterLock, LockError
from updater.services.cluster.zookeeper import zookeeper
from updater.services.installation import self_update
from updater.services.rollouts.events import (
    NodeRun,
    failure_reason,
    log_lines,
    node_runs,
    note_node_run,
    phases_across_runs,
    step_change,
)
from updater.services.rollouts.ownership import (
    RUN_MARKER,
    RunClaimed,
    RunOwner,
    claim_run,
    drop_run_owner,
    kill_stale_runs,
    owner_is_dead_here,
    process_start,
    run_marker,
    run_owner,
)
from updater.services.rollouts.playbook import die_with_parent
from updater.services.rollouts.probe_credentials import (
    S3_USER,
    ProbeCredentialsError,
    S3Access,
    environment_without_keys,
    s3_access,
)
from updater.services.rollouts.records import clear_control, finish_rollout, read_control
from updater.services.rollouts.release import RolloutRunnerError, staged_release
from updater.store import queries
from updater.store.db import transaction
from updater.store.models import Rollout, RolloutStep, utcnow

log = logging.getLogger(__name__)

PLAYBOOK = "corral.cloud.rolling_update"
ROW_WAIT_SECONDS = 60.0  # the enqueuing transaction may commit just after the task starts
PROBE_STOP_SECONDS = 300.0
PROBE_READY_SECONDS = 60.0  # a probe with S3 sets its clients up (bucket, objects to read back) first
PROBE_READY_FILE = "probe.ready"
RUN_REPORT = "probe-run.json"  # a run's probe report as the run stored it (with its notes)
ZOOKEEPER_TIMEOUT = 10.0
_STORE_STATES = {
    "succeeded": RolloutState.SUCCEEDED,
    "paused": RolloutState.PAUSED,
    "aborted": RolloutState.ABORTED,
    "failed": RolloutState.FAILED,
}


class RolloutRunError(RuntimeError):
    """The rollout could not be run; the message says why (it is also in the rollout's log)."""


def releases_root(config: ServiceConfig) -> Path:
    """Where each release's collection is installed (``<version>/collections``) for the per-node plays."""
    return config.home / "releases"


def run_dir(config: ServiceConfig, rollout_id: str) -> Path:
    """ansible-runner's private data directories of this rollout's runs (one per run, kept for the record)."""
    return config.home / "rollouts" / rollout_id


# --- the store, one short transaction per change ----------------------------------------------------------
@dataclass
class _Recorder:
    sessions: sessionmaker[Session]
    rollout_id: str
    redactor: auth.RedactSecrets
    nodes: frozenset[str]
    last_failure: str | None = None
    pending: list[tuple[str | None, str, str]] = field(default_factory=list)
    # each node's part in the rollout's earlier runs (in order) and in this one, for its phases over all runs
    earlier: dict[str, list[NodeRun]] = field(default_factory=dict)
    current: dict[str, NodeRun] = field(default_factory=dict)

    def log(self, text: str, node: str | None = None, stream: str = "event") -> None:
        with transaction(self.sessions) as db:
            queries.append_log(db, self.rollout_id, [(node, stream, self.redactor.redact(text))])

    def on_event(self, event: Mapping[str, Any]) -> bool:
        note_node_run(event, self.nodes, self.current)
        change = step_change(event, self.nodes)
        lines = [
            (line.node, line.stream, self.redactor.redact(line.text)) for line in log_lines(event, self.nodes)
        ]
        reason = failure_reason(event)
        if reason is not None:
            self.last_failure = self.redactor.redact(reason)
        if change is None and not lines:
            return True
        with transaction(self.sessions) as db:
            if lines:
                queries.append_log(db, self.rollout_id, lines)
            if change is not None:
                step = _step(db, self.rollout_id, change.node)
                if step is not None:
                    now = utcnow()
                    if change.state is not None:
                        step.state = change.state
                    if change.started and step.started_at is None:
                        step.started_at = now
                    if change.finished:
                        step.finished_at = now
                    if change.phase_seconds is not None:
                        step.phase_seconds = phases_across_runs(
                            self.earlier.get(change.node, []),
                            self.current.get(change.node, NodeRun()),
                            change.phase_seconds,
                        )
                    if change.message is not None:
                        step.message = self.redactor.redact(change.message)
        return True  # ansible-runner keeps the event in the run's artifacts too


def _step(db: Session, rollout_id: str, node: str) -> RolloutStep | None:
    return db.scalars(
        sa.select(RolloutStep).where(RolloutStep.rollout_id == rollout_id, RolloutStep.node == node)
    ).one_or_none()


def _wait_for_row(sessions: sessionmaker[Session], rollout_id: str) -> tuple[str, RolloutState, str | None]:
    deadline = time.monotonic() + ROW_WAIT_SECONDS
    while True:
        with transaction(sessions) as db:
            rollout = db.get(Rollout, rollout_id)
            if rollout is not None:
                release = rollout.target_release
                return release.version, rollout.state, release.staged_path
        if time.monotonic() > deadline:
            raise RolloutRunError(f"rollout {rollout_id} is not recorded in the store: nothing to run")
        time.sleep(0.5)


def _set_state(
    sessions: sessionmaker[Session], rollout_id: str, state: RolloutState, *, finished: bool = False
) -> None:
    with transaction(sessions) as db:
        rollout = queries.get_rollout(db, rollout_id)
        rollout.state = state
        if state is RolloutState.RUNNING and rollout.started_at is None:
            rollout.started_at = utcnow()
        if finished:
            rollout.finished_at = utcnow()
            if state is RolloutState.SUCCEEDED:
                queries.mark_installed(db, rollout.target_release)


# --- the probe beside the rollout -------------------------------------------------------------------------
class Probe:
    """``corral-probe`` against the cluster's services while the rollout runs; its JSON report at the end.

    ZooKeeper always; the VIP when the rollout rolls the endpoint; S3 through the VIP (PUT/GET of fresh
    objects, reads of objects written before) when it also rolls Ceph, as the RGW user ``corral``
    (:mod:`updater.services.rollouts.probe_credentials`). Its keys reach the probe through its environment
    only and are
    redacted from the rollout's log. S3 that cannot be set up (keys unreadable, clients failing) leaves the
    probe running without it; the report's ``notes`` say why."""

    REPORT = "probe.json"  # what corral-probe writes when it stops

    def __init__(self, cluster: Cluster, directory: Path, rollout_id: str, recorder: _Recorder) -> None:
        self.report = directory / self.REPORT
        self.output = directory / "probe.log"
        self.notes: list[str] = []
        self._redact = recorder.redactor.redact
        s3 = self._s3(cluster, rollout_id, recorder)
        self.process = self._start(cluster, s3, directory)
        if s3 is not None and not self._s3_ready(directory, recorder):
            self.process = self._start(cluster, None, directory)

    def _s3(self, cluster: Cluster, rollout_id: str, recorder: _Recorder) -> S3Access | None:
        try:
            s3 = s3_access(cluster, rollout_id)
        except ProbeCredentialsError as error:
            self._note(recorder, f"S3 not probed: its keys could not be read: {error}")
            return None
        except Exception as error:  # the probe's S3 is a measurement: it never stops the rollout
            log.warning("reading the probe's S3 keys failed", exc_info=True)
            self._note(recorder, f"S3 not probed: reading its keys failed ({type(error).__name__}): {error}")
            return None
        if s3 is not None:
            for secret in s3.secrets:
                recorder.redactor.add(secret)
            recorder.log(
                f"probe: S3 through {s3.endpoint} in bucket {s3.bucket} as RGW user {S3_USER} "
                f"(keys read on {s3.node})"
            )
        return s3

    def _start(self, cluster: Cluster, s3: S3Access | None, directory: Path) -> subprocess.Popen[bytes]:
        command = [_probe_command(), "--zookeeper", cluster.zookeeper_hosts, "--report", str(self.report)]
        if cluster.vip:
            command += ["--vip-url", f"http://{cluster.vip}/"]
        environment = environment_without_keys(os.environ)
        if s3 is not None:
            # The keys go in the child's environment only: never its argv (process listings), never a log.
            command += [*s3.arguments(), "--ready-file", str(directory / PROBE_READY_FILE)]
            environment = s3.environment(environment)
        with self.output.open("ab") as out:
            return subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 (a crashed worker leaves no probe running)
            )

    def _s3_ready(self, directory: Path, recorder: _Recorder) -> bool:
        """Wait (bounded) for the probe with S3 to set its clients up; ``False`` when it gave up (it is
        started again without S3), ``True`` when ready or still setting up (it measures once it is)."""
        ready = directory / PROBE_READY_FILE
        deadline = time.monotonic() + PROBE_READY_SECONDS
        while not ready.exists():
            if self.process.poll() is not None:
                tail = self.output.read_text(errors="replace").strip()[-600:]
                self._note(
                    recorder,
                    f"S3 not probed: corral-probe could not set up its S3 clients "
                    f"(exit {self.process.returncode}): {tail}",
                )
                return False
            if time.monotonic() > deadline:
                recorder.log(f"probe: still setting up its S3 clients after {PROBE_READY_SECONDS:g} s")
                return True
            time.sleep(0.2)
        return True

    def _note(self, recorder: _Recorder, text: str) -> None:
        note = self._redact(text)
        self.notes.append(note)
        recorder.log(f"probe: {note}")

    def stop(self) -> dict[str, Any]:
        report = self._stop()
        if self.notes:
            report["notes"] = list(self.notes)
        return report

    def _stop(self) -> dict[str, Any]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=PROBE_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
            return {"error": f"corral-probe did not stop within {PROBE_STOP_SECONDS:g} s of SIGTERM"}
        try:
            report = json.loads(self.report.read_text())
        except (OSError, json.JSONDecodeError):
            tail = self._redact(self.output.read_text(errors="replace")[-1500:])
            return {"error": f"corral-probe wrote no report (exit {self.process.returncode}): {tail}"}
        return report if isinstance(report, dict) else {"error": "corral-probe's report is not an object"}


def _probe_command() -> str:
    beside = Path(sys.executable).with_name("corral-probe")
    return str(beside) if beside.exists() else "corral-probe"


# --- the run ----------------------------------------------------------------------------------------------
def _collections_path(release_collections: Path) -> str:
    from ansible import constants  # type: ignore[import-untyped]  # noqa: PLC0415 (read when a run needs it)

    return ":".join([str(release_collections), *(str(path) for path in constants.COLLECTIONS_PATHS)])


@dataclass(frozen=True)
class _Target:
    """The rollout being run: its id, the release and where it is staged, the cluster."""

    rollout_id: str
    version: str
    staged: Path
    cluster: Cluster
    marker: str = ""  # this run's RUN_MARKER value, inherited by every process it starts


def _play(config: ServiceConfig, target: _Target, recorder: _Recorder) -> tuple[str, int]:
    cluster, version, rollout_id = target.cluster, target.version, target.rollout_id
    try:
        boot = open_boot_service("lab" if cluster.lab else "pxe", lab=cluster.lab)
        release = staged_release(
            version, staging_root=target.staged.parent, releases_root=releases_root(config), boot=boot
        )
    except (BootServiceError, RolloutRunnerError) as error:
        raise RolloutRunError(f"release {version} cannot be rolled out: {error}") from None
    base = run_dir(config, rollout_id)
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = base / f"run-{len(list(base.glob('run-*'))) + 1}"
    private.mkdir(mode=0o700)
    recorder.earlier = earlier_node_runs(_run_dirs(base)[:-1], recorder.nodes)
    recorder.current = {}
    recorder.log(f"running {PLAYBOOK} for {version} (ansible-runner data in {private})")
    probe = Probe(cluster, private, rollout_id, recorder)
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private),
            playbook=PLAYBOOK,
            inventory=str(cluster.inventory_source),
            extravars={
                "corral_release": version,
                "corral_rollout_id": rollout_id,
                "corral_rolling_phase": "nodes",
                "corral_staging_root": str(target.staged.parent),
                "corral_releases_root": str(releases_root(config)),
                "corral_trust_dir": str(config.trust_dir),
            },
            envvars={
                "ANSIBLE_COLLECTIONS_PATH": _collections_path(release.collections_path),
                RUN_MARKER: target.marker,
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
            },
            event_handler=recorder.on_event,
            status_handler=lambda status, **_config: recorder.log(f"ansible-runner: {status['status']}"),
            quiet=True,
        )
    finally:
        (private / RUN_REPORT).write_text(json.dumps(probe.stop(), indent=2) + "\n")
        report = rollout_probe_report(base)
        with transaction(recorder.sessions) as db:
            queries.get_rollout(db, rollout_id).probe_report = report
    return str(runner.status), int(runner.rc or 0)


def _run_dirs(base: Path) -> list[Path]:
    """The rollout's run directories (``run-1``, ``run-2`` …) in the order they ran."""
    numbered = [(int(p.name[4:]), p) for p in base.glob("run-*") if p.name[4:].isdigit()]
    return [path for _, path in sorted(numbered)]


def earlier_node_runs(directories: Sequence[Path], nodes: frozenset[str]) -> dict[str, list[NodeRun]]:
    """Each node's part in the runs kept in ``directories`` (in order), from the events ansible-runner wrote
    there (a dead worker's run keeps those of every task that finished)."""
    parts: dict[str, list[NodeRun]] = {}
    for directory in directories:
        events = []
        for path in directory.glob("artifacts/*/job_events/*.json"):
            with contextlib.suppress(OSError, json.JSONDecodeError):
                events.append(json.loads(path.read_text()))
        for node, part in node_runs(events, nodes).items():
            parts.setdefault(node, []).append(part)
    return parts


def _run_report(directory: Path) -> dict[str, Any]:
    """One run's probe report: the one the run stored, else what corral-probe wrote when a dead worker's
    probe got its SIGTERM (:func:`die_with_parent`), else an error."""
    for name in (RUN_REPORT, Probe.REPORT):
        try:
            report = json.loads((directory / name).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(report, dict):
            return report
    return {"error": f"{directory.name} left no probe report"}


def rollout_probe_report(base: Path) -> dict[str, Any]:
    """The rollout's one probe report over every run so far (a run taken over from a dead worker or resumed
    after a pause adds to it; the seams between runs are marked): :func:`merge_run_reports`."""
    return merge_run_reports([_run_report(directory) for directory in _run_dirs(base)])


def _conclude(
    lock: ClusterLock, sessions: sessionmaker[Session], rollout_id: str, status: str, recorder: _Recorder
) -> RolloutState:
    """Copy ZooKeeper's word on the rollout (state, every node, order executed) into the store."""
    record = lock.read_rollout(rollout_id)
    progress = lock.read_progress(rollout_id)
    with transaction(sessions) as db:
        rollout = queries.get_rollout(db, rollout_id)
        version = rollout.target_release.version
        for step in rollout.steps:
            node = progress.get(step.node)
            if node is None:
                continue
            step.state = node.state
            if node.is_done(version) and step.finished_at is None:
                step.finished_at = utcnow()
        if record is not None:
            rollout.executed_order = list(record.executed)
    recorded = str(record.state) if record is not None else "not begun"
    state = _STORE_STATES.get(recorded, RolloutState.FAILED)
    if state is RolloutState.FAILED:
        why = (
            (record.reason if record is not None else None)
            or recorder.last_failure
            or f"ansible-runner {status}"
        )
        recorder.log(f"rollout {rollout_id} failed: {why}")
    else:
        reason = f": {record.reason}" if record is not None and record.reason else ""
        recorder.log(f"rollout {rollout_id} {state}{reason}")
    if state is not RolloutState.PAUSED:
        clear_control(lock, rollout_id)  # a request the run ended before applying is void now
    _set_state(sessions, rollout_id, state, finished=state is not RolloutState.PAUSED)
    return state


def _abort_unstarted(lock: ClusterLock, rollout_id: str, control: Mapping[str, Any]) -> None:
    holder = lock.holder()
    record = lock.read_rollout(rollout_id)
    if holder is not None and holder.rollout_id == rollout_id:
        if record is not None and record.state not in FINAL_ROLLOUT_STATES:
            finish_rollout(lock, holder.token, rollout_id, "aborted", f"aborted by {control.get('actor')}")
        lock.release(rollout_id, holder.token)


def run(config: ServiceConfig, sessions: sessionmaker[Session], rollout_id: str) -> str:
    """Run (or continue) ``rollout_id`` to its end, a pause or an abort; returns the state it ended in."""
    version, state, staged_path = _wait_for_row(sessions, rollout_id)
    if state in FINAL_ROLLOUT_STATES or state is RolloutState.FAILED:
        log.info("rollout %s is %s: nothing to run", rollout_id, state)
        return str(state)
    redactor = auth.RedactSecrets(known_secrets(config))
    recorder = _Recorder(sessions, rollout_id, redactor, frozenset())
    try:
        cluster = load_cluster(config)
    except ClusterAccessError as error:
        recorder.log(f"rollout {rollout_id} cannot start: {error}")
        _set_state(sessions, rollout_id, RolloutState.FAILED, finished=True)
        return str(RolloutState.FAILED)
    for secret in cluster.secrets:
        redactor.add(secret)
    recorder.nodes = frozenset(cluster.inventory.names)
    me = RunOwner(socket.gethostname(), os.getpid(), process_start(os.getpid()), time.time())
    try:
        with zookeeper(cluster.zookeeper_hosts, ZOOKEEPER_TIMEOUT) as client:
            lock = ClusterLock(client)
            try:
                claim_run(lock, rollout_id, me)
            except RunClaimed as error:
                log.info("%s", error)
                return "claimed"
            try:
                # no play of a dead owner of this rollout may still act when this run begins
                killed = kill_stale_runs(rollout_id, me.host)
                if killed:
                    recorder.log(
                        f"killed {len(killed)} processes a dead run of {rollout_id} left on {me.host} "
                        f"(pids {', '.join(map(str, killed))}) before taking over"
                    )
                if not staged_path:
                    raise RolloutRunError(f"release {version} is not staged")
                target = _Target(rollout_id, version, Path(staged_path), cluster, run_marker(rollout_id, me))
                return str(_run_claimed(config, sessions, lock, target, recorder))
            finally:
                drop_run_owner(lock, rollout_id)
    except (RolloutRunnerError, RolloutRunError, LockError) as error:
        recorder.log(f"rollout {rollout_id} stopped: {error}")
        _set_state(sessions, rollout_id, RolloutState.FAILED, finished=True)
        return str(RolloutState.FAILED)
    except Exception as error:
        # Never leave the store saying "running" after a bug: recovery would take it up again and again.
        recorder.log(f"rollout {rollout_id} stopped by an internal error ({type(error).__name__}): {error}")
        _set_state(sessions, rollout_id, RolloutState.FAILED, finished=True)
        raise


def _run_claimed(
    config: ServiceConfig,
    sessions: sessionmaker[Session],
    lock: ClusterLock,
    target: _Target,
    recorder: _Recorder,
) -> RolloutState:
    rollout_id = target.rollout_id
    control = read_control(lock, rollout_id)
    if control is not None and control["action"] == "abort":
        _abort_unstarted(lock, rollout_id, control)
        recorder.log(f"rollout {rollout_id} aborted by {control.get('actor')} before it ran")
        _set_state(sessions, rollout_id, RolloutState.ABORTED, finished=True)
        return RolloutState.ABORTED
    _set_state(sessions, rollout_id, RolloutState.RUNNING)
    recorder.log(f"run started by pid {os.getpid()} on {socket.gethostname()}")
    status, rc = _play(config, target, recorder)
    recorder.log(f"{PLAYBOOK} ended: {status} (exit {rc})")
    state = _conclude(lock, sessions, rollout_id, status, recorder)
    if state is RolloutState.SUCCEEDED:
        _self_update(config, sessions, rollout_id, recorder)
    return state


def _self_update(
    config: ServiceConfig, sessions: sessionmaker[Session], rollout_id: str, recorder: _Recorder
) -> None:
    """The cluster runs the new release: the service moves onto its own package of that release. A fresh
    transaction that has not queried before the install (the new code migrates from another process)."""
    with transaction(sessions) as db:
        release = queries.get_rollout(db, rollout_id).target_release
        db.expunge(release)
    with transaction(sessions) as db:
        outcome = self_update.after_rollout(config, db, release)
    recorder.log(f"self-update after {rollout_id}: {outcome.action} ({outcome.message})")


# --- crash recovery ---------------------------------------------------------------------------------------
def orphaned(config: ServiceConfig, sessions: sessionmaker[Session], *, host: str | None = None) -> list[str]:
    """Rollouts the store shows running that no live process runs (their owner znode is gone, or it names a
    process of this host that no longer exists: it is removed so the rollout can be taken over now)."""
    with transaction(sessions) as db:
        running = list(db.scalars(sa.select(Rollout.id).where(Rollout.state == RolloutState.RUNNING)).all())
    if not running:
        return []
    here = host or socket.gethostname()
    found: list[str] = []
    with zookeeper(load_cluster(config).zookeeper_hosts, ZOOKEEPER_TIMEOUT) as client:
        lock = ClusterLock(client)
        for rollout_id in running:
            owner = run_owner(lock, rollout_id)
            if owner is not None and owner_is_dead_here(owner, here):
                drop_run_owner(lock, rollout_id)
                owner = None
            if owner is None:
                found.append(rollout_id)
    return found


def recover(
    config: ServiceConfig, sessions: sessionmaker[Session], enqueue: Callable[[str], None]
) -> list[str]:
    """Enqueue every orphaned rollout under its own id; returns their ids. Never raises for a cluster that
    cannot be reached (the next periodic run tries again)."""
    try:
        ids = orphaned(config, sessions)
    except (ClusterAccessError, RolloutRunnerError) as error:
        log.warning("rollout recovery could not look at the cluster: %s", error)
        return []
    for rollout_id in ids:
        log.info("continuing rollout %s: the process that ran it is gone", rollout_id)
        with transaction(sessions) as db:
            queries.append_log(
                db, rollout_id, [(None, "event", "the process running this rollout is gone: continuing it")]
            )
        enqueue(rollout_id)
    return ids
