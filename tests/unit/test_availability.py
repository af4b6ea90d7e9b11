"""Availability figures follow DESIGN.md §6: failures, retries, longest gap, p50/p99, verdicts."""

from __future__ import annotations

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
