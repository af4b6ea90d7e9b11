"""A rollout run in several parts (issue 19):: a run taken over from a dead worker, or resumed after a pause,
adds to the rollout's one record instead of replacing it."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from updater.config import ServiceConfig
from updater.domain.availability import Operation, build_report
from updater.services.accounts.auth import RedactSecrets
from updater.services.rollouts import execution
from updater.services.rollouts.events import NodeRun, node_runs, phases_across_runs
from updater.services.rollouts.execution import RUN_REPORT, rollout_probe_report
from updater.store import queries
from updater.store.db import make_engine, migrate, session_factory, transaction
from updater.store.models import ReleaseSource


def _report(seconds: float, at_unix: float, **extra: Any) -> dict[str, Any]:
    ops = [Operation("zookeeper", t / 10 - 0.01, t / 10, ok=True) for t in range(1, round(seconds * 10))]
    return {**build_report(ops, 0.0, seconds, started_at_unix=at_unix).to_dict(), **extra}


def test_the_stored_probe_report_covers_every_run_of_the_rollout(tmp_path: Path) -> None:
    runs = {
        # the dead worker's run: only what corral-probe wrote on its SIGTERM
        "run-1": ("probe.json", _report(130.0, 1_800_000_000.0)),
        # a run whose worker died before corral-probe wrote anything
        "run-2": (None, None),
        # the run that stored its report (notes included), and the tenth run, which sorts after it
        "run-9": (RUN_REPORT, _report(50.0, 1_800_000_200.0, notes=["S3 not probed: no keys"])),
        "run-10": (RUN_REPORT, _report(82.0, 1_800_000_262.0)),
    }
    for name, (file, report) in runs.items():
        (tmp_path / name).mkdir()
        if file is not None:
            (tmp_path / name / file).write_text(json.dumps(report))
    (tmp_path / "run-1" / "probe.log").write_text("a dead run's probe output\n")
    merged = rollout_probe_report(tmp_path)
    assert [run["run"] for run in merged["runs"]] == [1, 2, 3, 4]
    assert merged["runs"][1] == {"run": 2, "error": "run-2 left no probe report"}
    assert [run.get("at_s") for run in merged["runs"]] == [0.0, None, 200.0, 262.0]
    assert merged["duration_s"] == 344.0
    assert merged["services"]["zookeeper"]["operations"] == 1299 + 499 + 819
    assert merged["notes"] == ["run 3: S3 not probed: no keys"]
    assert [seam["unmeasured_s"] for seam in merged["seams"]] == [70.0, 12.0]
    assert merged["passed"] is False  # run 2 measured nothing


def test_one_run_stores_its_own_report(tmp_path: Path) -> None:
    report = _report(10.0, 1_800_000_000.0, notes=["S3 not probed: no keys"])
    (tmp_path / "run-1").mkdir()
    (tmp_path / "run-1" / RUN_REPORT).write_text(json.dumps(report))
    (tmp_path / "run-1" / "probe.json").write_text("{}")
    assert rollout_probe_report(tmp_path) == json.loads(json.dumps(report))


# --- per-node timings after a takeover (issue 19 item 3) --------------------------------------------------
NODES = frozenset({"node1", "node2"})


def _ok(
    node: str, task: str, res: dict[str, Any], action: str = "ansible.builtin.set_fact"
) -> dict[str, Any]:
    return {
        "event": "runner_on_ok",
        "event_data": {"host": node, "task": task, "task_action": action, "res": res},
    }


def _fact(node: str, name: str, at: float) -> dict[str, Any]:
    return _ok(node, f"note {name}", {"ansible_facts": {f"rolling_node_t_{name}": at}})


def _resumed(node: str, next_step: str) -> dict[str, Any]:
    return _ok(
        node,
        "Ask where this node's procedure stands",
        {"next_step": next_step, "state": "active"},
        action="corral.cloud.rollout_progress",
    )


def _timing(node: str, line: str) -> dict[str, Any]:
    return _ok(
        node,
        "Report the node's timings",
        {"msg": f"ROLLING_TIMING node={node} {line}"},
        action="ansible.builtin.debug",
    )


# the dead worker's run: node1 began at 1000 s, was drained at 1010 s, then the worker died in its trial boot
DEAD_RUN = [
    _fact("node1", "start", 1000.0),
    _resumed("node1", "drain"),
    _fact("node1", "drained", 1010.0),
]
# the takeover, 40 s later: node1 had rebooted, so it resumed at verify; its line times only that part
TAKEOVER = [
    _fact("node1", "start", 1050.0),
    _resumed("node1", "verify"),
    _fact("node1", "drained", 1050.5),
    _fact("node1", "rebooted", 1050.6),
    _timing("node1", "resumed_at=verify drain=0.5 reboot=0.1 wait=9.4 health=15.0 undrain=7.7 total=32.7"),
]


def _write_events(directory: Path, events: list[dict[str, Any]]) -> None:
    job_events = directory / "artifacts" / "c0ffee" / "job_events"
    job_events.mkdir(parents=True)
    for counter, event in enumerate(events, start=1):
        (job_events / f"{counter}-uuid{counter}.json").write_text(json.dumps({**event, "counter": counter}))


def test_a_taken_over_node_keeps_the_phases_of_the_dead_run(tmp_path: Path) -> None:
    config = ServiceConfig(home=tmp_path)
    engine = make_engine(config.effective_database_url)
    migrate(engine)
    sessions = session_factory(engine)
    try:
        with transaction(sessions) as db:
            queries.add_release(
                db,
                version="0.2.0",
                channel="stable",
                release_date=date(2026, 11, 1),
                source=ReleaseSource.IMPORTED,
                staged_path=None,
                checks=[],
            )
            release = queries.find_release(db, "0.2.0")
            assert release is not None
            queries.add_rollout(
                db, rollout_id="u1", release=release, created_by="a", plan={}, nodes=sorted(NODES)
            )
        _write_events(tmp_path / "run-1", DEAD_RUN)
        recorder = execution._Recorder(sessions, "u1", RedactSecrets([]), NODES)
        recorder.earlier = execution.earlier_node_runs([tmp_path / "run-1"], NODES)
        for event in TAKEOVER:
            recorder.on_event(event)
        with transaction(sessions) as db:
            step = next(s for s in queries.get_rollout(db, "u1").steps if s.node == "node1")
            phases = dict(step.phase_seconds)
    finally:
        engine.dispose()
    # drained 10 s after its start in the dead run; rebooting from then until the takeover saw it back
    assert phases == {
        "drain": 10.0,
        "reboot": 40.6,
        "wait": 9.4,
        "health": 15.0,
        "undrain": 7.7,
        "total": 82.7,
    }


def test_one_run_keeps_its_line_and_a_redone_drain_counts_from_the_first_start() -> None:
    line = {"drain": 6.4, "reboot": 5.4, "wait": 0.7, "health": 0.3, "undrain": 0.4, "total": 13.2}
    alone = node_runs([_fact("node1", "start", 2000.0), _resumed("node1", "drain")], NODES)["node1"]
    assert phases_across_runs([], alone, line) == line
    # a worker died during node1's drain; the takeover drained it again from the start
    dead = node_runs([_fact("node1", "start", 1990.0), _resumed("node1", "drain")], NODES)["node1"]
    assert phases_across_runs([dead], alone, line) == {**line, "drain": 16.4, "total": 23.2}
    # a resume at the trial boot: drained in the first run, rebooted in the takeover
    drained = node_runs(DEAD_RUN, NODES)["node1"]
    boot = NodeRun("boot", {"start": 1050.0})
    resumed = {"drain": 0.3, "reboot": 30.0, "wait": 1.0, "health": 2.0, "undrain": 1.0, "total": 34.3}
    assert phases_across_runs([drained], boot, resumed) == {
        **resumed,
        "drain": 10.0,
        "reboot": 70.3,
        "total": 84.3,
    }
