"""A rollout run in several parts (issue 19): a run taken over from a dead worker, or resumed after a pause,
adds to the rollout's one record instead of replacing it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from updater.domain.availability import Operation, build_report
from updater.services.rollouts.execution import RUN_REPORT, rollout_probe_report


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
