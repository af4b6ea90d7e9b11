"""Availability figures follow DESIGN.md §6: failures, retries, longest gap, p50/p99, verdicts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from updater.domain.availability import (
    DEFAULT_TARGETS,
    Operation,
    ServiceTarget,
    build_report,
    format_report,
    longest_gap,
    merge_run_reports,
    percentile,
)


def ok(service: str, finished: float, latency: float = 0.01, retries: int = 0) -> Operation:
    return Operation(service, finished - latency, finished, ok=True, retries=retries)


def test_longest_gap_counts_from_probe_start_and_to_probe_end() -> None:
    assert longest_gap([1.0, 1.5], started=0.0, finished=5.0) == (3.5, 1.5)
    assert longest_gap([3.0, 3.1], started=0.0, finished=3.2) == (3.0, 0.0)


def test_a_service_that_never_succeeds_has_the_whole_run_as_gap() -> None:
    assert longest_gap([], started=10.0, finished=12.5) == (2.5, 10.0)


@given(st.lists(st.floats(min_value=0, max_value=100), max_size=50))
def test_longest_gap_is_at_least_the_average_spacing(times: list[float]) -> None:
    gap, _ = longest_gap(times, 0.0, 100.0)
    assert gap >= 100.0 / (len(times) + 1) - 1e-9
    assert 0 <= gap <= 100.0


def test_percentile_nearest_rank() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) == 0.0


def test_report_counts_failures_retries_and_latencies() -> None:
    ops = [
        ok("zookeeper", 0.1, latency=0.010),
        ok("zookeeper", 0.2, latency=0.020, retries=2),
        Operation("zookeeper", 0.25, 5.25, ok=False, retries=40, error="no success within the 5 s deadline"),
        ok("zookeeper", 5.4, latency=0.030),
    ]
    report = build_report(ops, started=0.0, finished=5.5)
    stats = report.services["zookeeper"]
    assert (stats.operations, stats.failures, stats.retries) == (4, 1, 42)
    assert stats.longest_gap_s == pytest.approx(5.2)
    assert stats.p50_ms == pytest.approx(20.0)
    assert stats.errors == ("no success within the 5 s deadline",)
    verdict = report.verdicts["zookeeper"]
    assert not verdict.passed
    assert any("1 failed operations" in r for r in verdict.reasons)
    assert any("longest gap 5.200 s" in r for r in verdict.reasons)


def test_vip_gap_bound_is_strict_and_ceph_data_path_bound_is_inclusive() -> None:
    assert not DEFAULT_TARGETS["vip"].gap_ok(1.0)
    assert DEFAULT_TARGETS["vip"].gap_ok(0.999)
    assert DEFAULT_TARGETS["s3-write"].gap_ok(3.0)
    assert not DEFAULT_TARGETS["s3-write"].gap_ok(3.001)


def test_clean_run_passes() -> None:
    ops = [ok("vip", t / 10) for t in range(1, 30)]
    report = build_report(ops, started=0.0, finished=3.0)
    assert report.passed
    assert report.to_dict()["passed"] is True


def test_a_named_service_without_operations_fails() -> None:
    report = build_report([], started=0.0, finished=1.0, services=["s3-read"])
    assert not report.passed
    assert report.verdicts["s3-read"].reasons[0] == "no operation was attempted"


def test_unknown_service_gets_the_strict_default_target() -> None:
    report = build_report([ok("rbd", 0.5), ok("rbd", 2.0)], started=0.0, finished=2.1)
    assert report.verdicts["rbd"].passed is False  # 1.5 s gap against the default < 1 s
    assert ServiceTarget().max_failures == 0


def test_failures_are_reported_with_when_they_began_as_offsets_and_times_of_day() -> None:
    ops = [
        ok("s3-write", 1.0),
        Operation("s3-write", 1.1, 6.1, ok=False, error="ReadTimeoutError: Read timeout"),
        ok("s3-write", 6.3),
    ]
    # 1_800_000_000 is 2027-01-15 08:00:00 UTC
    report = build_report(ops, started=0.0, finished=7.0, started_at_unix=1_800_000_000.0)
    assert report.services["s3-write"].failures_at_s == (1.1,)
    assert report.to_dict()["started_at_unix"] == 1_800_000_000.0
    text = format_report(report)
    assert "s3-write failures began at +1.1 s (08:00:01.100 UTC)" in text
    assert "s3-write error: ReadTimeoutError: Read timeout" in text
    assert "s3-write longest gap began at +1.0 s (08:00:01.000 UTC)" in text


def test_without_a_wall_clock_start_failures_are_offsets_only() -> None:
    ops = [Operation("vip", 0.5, 5.5, ok=False, error="ConnectionRefusedError")]
    text = format_report(build_report(ops, started=0.0, finished=6.0))
    assert "vip failures began at +0.5 s\n" in text + "\n"


# --- one rollout, several runs (issue 19 item 2) ----------------------------------------------------------
def _run(ops: list[Operation], duration: float, at_unix: float) -> dict[str, Any]:
    return build_report(ops, started=0.0, finished=duration, started_at_unix=at_unix).to_dict()


def _merged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The merged report as the store's JSON column keeps it."""
    result: dict[str, Any] = json.loads(json.dumps(merge_run_reports(runs)))
    return result


def _steady(service: str, start: float, stop: float) -> list[Operation]:
    return [ok(service, start + i / 10) for i in range(round((stop - start) * 10) + 1)]


def test_runs_of_one_rollout_merge_into_one_report_with_the_seam_marked() -> None:
    # run 1 (the worker that died): 0-100 s, the VIP fails at 95.5 s and its last success is at 95 s
    first = _run(
        [
            *_steady("vip", 0.1, 95.0),
            Operation("vip", 95.5, 100.0, ok=False, error="ReadTimeoutError"),
            *_steady("zookeeper", 0.1, 99.9),
        ],
        100.0,
        at_unix=1_800_000_000.0,
    )
    # run 2 (the takeover) starts 30 s after run 1 ended; the VIP answers 2 s into it, then fails once more
    second = _run(
        [
            *_steady("vip", 2.0, 49.0),
            Operation("vip", 50.0, 50.2, ok=False, error="ConnectionRefusedError"),
            *_steady("vip", 50.3, 130.0),
            *_steady("zookeeper", 0.1, 129.9),
        ],
        130.0,
        at_unix=1_800_000_130.0,
    )
    merged = _merged([first, second])
    vip, zookeeper = merged["services"]["vip"], merged["services"]["zookeeper"]
    assert (
        vip["operations"] == first["services"]["vip"]["operations"] + second["services"]["vip"]["operations"]
    )
    assert vip["failures"] == 2
    # failures keep their times, on the rollout's timeline (run 2 began 130 s after run 1)
    assert vip["failures_at_s"] == [95.5, 180.0]
    assert vip["errors"] == ["ReadTimeoutError", "ConnectionRefusedError"]
    # the VIP's longest measured gap runs from 95 s in run 1 across the seam to 2 s into run 2: 5 s + 2 s
    assert vip["longest_gap_s"] == pytest.approx(7.0)
    assert vip["longest_gap_at_s"] == pytest.approx(95.0)
    assert vip["longest_gap_spans_seam"] is True
    # ZooKeeper answered up to 0.1 s before run 1 ended and from 0.1 s into run 2: its seam gap is 0.2 s
    assert zookeeper["longest_gap_s"] == pytest.approx(0.2)
    assert zookeeper["longest_gap_spans_seam"] is True
    assert merged["seams"] == [{"after_run": 1, "at_s": 100.0, "unmeasured_s": 30.0}]
    assert merged["unmeasured_s"] == 30.0
    assert [run["at_s"] for run in merged["runs"]] == [0.0, 130.0]
    assert merged["started_at_unix"] == 1_800_000_000.0
    assert merged["duration_s"] == 260.0
    assert merged["verdicts"]["vip"]["passed"] is False
    assert any("longest gap 7.000 s" in reason for reason in merged["verdicts"]["vip"]["reasons"])
    assert merged["verdicts"]["zookeeper"]["passed"] is True
    assert merged["passed"] is False


def test_a_longer_gap_inside_a_run_wins_over_the_seam_and_a_clean_resume_passes() -> None:
    first = _run(
        [*_steady("zookeeper", 0.1, 20.0), *_steady("zookeeper", 20.8, 60.0)], 60.05, 1_800_000_000.0
    )
    second = _run(_steady("zookeeper", 0.1, 40.0), 40.0, 1_800_000_300.0)
    merged = _merged([first, second])
    stats = merged["services"]["zookeeper"]
    assert stats["longest_gap_s"] == pytest.approx(0.8)
    assert stats["longest_gap_at_s"] == pytest.approx(20.0)
    assert stats["longest_gap_spans_seam"] is False
    assert stats["first_success_s"] == pytest.approx(0.1)
    assert stats["last_success_s"] == pytest.approx(340.0)
    # a pause of four minutes between the runs is marked, not counted as an outage
    assert merged["seams"][0]["unmeasured_s"] == pytest.approx(239.95)
    assert merged["passed"] is True


def test_a_service_down_through_a_whole_run_joins_one_gap_over_both_seams() -> None:
    runs = [
        _run(_steady("vip", 0.1, 10.0), 10.5, 1_800_000_000.0),
        _run([Operation("vip", 0.0, 5.0, ok=False, error="down")], 6.0, 1_800_000_020.0),
        _run(_steady("vip", 1.0, 10.0), 10.0, 1_800_000_040.0),
    ]
    stats = _merged(runs)["services"]["vip"]
    assert stats["longest_gap_s"] == pytest.approx(0.5 + 6.0 + 1.0)
    assert stats["longest_gap_at_s"] == pytest.approx(10.0)
    assert stats["longest_gap_spans_seam"] is True
    assert stats["failures_at_s"] == [20.0]


def test_a_run_without_a_report_is_listed_and_the_rollout_does_not_pass() -> None:
    first = {"error": "corral-probe wrote no report (exit -9): ", "notes": ["S3 not probed: no keys"]}
    second = _run(_steady("zookeeper", 0.1, 10.0), 10.0, 1_800_000_100.0)
    merged = _merged([first, second])
    assert merged["runs"][0] == {"run": 1, "error": "corral-probe wrote no report (exit -9): "}
    assert merged["notes"] == ["run 1: S3 not probed: no keys"]
    assert merged["verdicts"]["zookeeper"]["passed"] is True
    assert merged["passed"] is False
    assert merged["started_at_unix"] == 1_800_000_100.0


def test_one_run_is_its_own_report_and_lost_objects_of_any_run_fail_the_rollout() -> None:
    only = _run(_steady("vip", 0.1, 5.0), 5.0, 1_800_000_000.0)
    assert merge_run_reports([only]) == only
    lost = {**only, "integrity": {"objects_written": 3, "lost_or_altered": ["k1"]}, "passed": False}
    clean = {
        **_run(_steady("vip", 0.1, 5.0), 5.0, 1_800_000_010.0),
        "integrity": {"objects_written": 2, "lost_or_altered": []},
    }
    merged = _merged([lost, clean])
    assert merged["integrity"] == {"objects_written": 5, "lost_or_altered": ["k1"]}
    assert merged["passed"] is False
