"""Availability figures of a rollout, as DESIGN.md §6 defines them.

Pure: operation records in, per-service statistics and a verdict out. An *operation* has a deadline
(5 s by default); inside it the client may reconnect or retry (retries are counted); an operation that
has not succeeded by its deadline, or that returned an error to its caller, is a *failure*. The
*longest gap* of a service is the longest time between two successful operations — including from the
start of the probe to the first success and from the last success to the end, so a service that is
down when the probe stops still shows its outage.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

DEFAULT_DEADLINE_S = 5.0


@dataclass(frozen=True)
class Operation:
    """One operation against one service, with times on one monotonic clock (seconds)."""

    service: str
    started: float
    finished: float
    ok: bool
    retries: int = 0
    error: str = ""

    @property
    def latency(self) -> float:
        return self.finished - self.started


@dataclass(frozen=True)
class ServiceStats:
    service: str
    operations: int
    failures: int
    retries: int
    longest_gap_s: float
    longest_gap_at_s: float  # seconds after the probe start where the longest gap began
    p50_ms: float
    p99_ms: float
    errors: tuple[str, ...] = ()
    # seconds after the probe start where each failed operation began (the first ten), so a failure can be
    # matched with what the rollout was doing at the time
    failures_at_s: tuple[float, ...] = ()
    # seconds after the probe start of the first and the last success (None: none), so the gap across the
    # seam between two runs of one rollout can be joined (:func:`merge_run_reports`)
    first_success_s: float | None = None
    last_success_s: float | None = None
    longest_gap_spans_seam: bool = False  # the longest gap began in one run and ended in a later one


@dataclass(frozen=True)
class ServiceTarget:
    """What 'zero downtime' means for one service: a failure budget and a longest-gap bound."""

    max_failures: int = 0
    max_gap_s: float = 1.0
    gap_bound_inclusive: bool = False  # "<= max_gap_s" rather than "< max_gap_s"

    def gap_ok(self, gap_s: float) -> bool:
        return gap_s <= self.max_gap_s if self.gap_bound_inclusive else gap_s < self.max_gap_s

    def describe_gap_bound(self) -> str:
        return f"{'<=' if self.gap_bound_inclusive else '<'} {self.max_gap_s} s"


@dataclass(frozen=True)
class Verdict:
    service: str
    passed: bool
    reasons: tuple[str, ...]


@dataclass
class Report:
    started: float
    finished: float
    services: dict[str, ServiceStats] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    started_at_unix: float | None = None  # wall clock of `started`, to turn offsets into times of day

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at_unix": self.started_at_unix,
            "duration_s": round(self.finished - self.started, 3),
            "passed": self.passed,
            "services": {name: asdict(stats) for name, stats in self.services.items()},
            "verdicts": {name: asdict(v) for name, v in self.verdicts.items()},
        }


# DESIGN.md §6 targets: no failures anywhere; longest gap < 1 s at the VIP and ZooKeeper, ≤ 3 s on the
# Ceph data path (S3 through the gateway is our Ceph data path client).
DEFAULT_TARGETS: Mapping[str, ServiceTarget] = {
    "vip": ServiceTarget(max_failures=0, max_gap_s=1.0),
    "zookeeper": ServiceTarget(max_failures=0, max_gap_s=1.0),
    "s3-write": ServiceTarget(max_failures=0, max_gap_s=3.0, gap_bound_inclusive=True),
    "s3-read": ServiceTarget(max_failures=0, max_gap_s=3.0, gap_bound_inclusive=True),
}


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for no values)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def longest_gap(success_times: Iterable[float], started: float, finished: float) -> tuple[float, float]:
    """(length, start) of the longest interval without a success, bounded by the probe's start and end."""
    previous = started
    best, best_at = 0.0, started
    for t in sorted(success_times):
        if t - previous > best:
            best, best_at = t - previous, previous
        previous = t
    if finished - previous > best:
        best, best_at = finished - previous, previous
    return best, best_at


def service_stats(service: str, operations: list[Operation], started: float, finished: float) -> ServiceStats:
    ok = [op for op in operations if op.ok]
    latencies = sorted(op.latency for op in ok)
    gap, gap_at = longest_gap((op.finished for op in ok), started, finished)
    errors = tuple(dict.fromkeys(op.error for op in operations if not op.ok and op.error))
    return ServiceStats(
        service=service,
        operations=len(operations),
        failures=len(operations) - len(ok),
        retries=sum(op.retries for op in operations),
        longest_gap_s=round(gap, 3),
        longest_gap_at_s=round(gap_at - started, 3),
        p50_ms=round(percentile(latencies, 0.50) * 1000, 2),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
        errors=errors[:10],
        failures_at_s=tuple(round(op.started - started, 3) for op in operations if not op.ok)[:10],
        first_success_s=round(min(op.finished for op in ok) - started, 3) if ok else None,
        last_success_s=round(max(op.finished for op in ok) - started, 3) if ok else None,
    )


def judge(stats: ServiceStats, target: ServiceTarget) -> Verdict:
    reasons = []
    if stats.operations == 0:
        reasons.append("no operation was attempted")
    if stats.failures > target.max_failures:
        reasons.append(f"{stats.failures} failed operations (allowed {target.max_failures})")
    if not target.gap_ok(stats.longest_gap_s):
        reasons.append(f"longest gap {stats.longest_gap_s:.3f} s (target {target.describe_gap_bound()})")
    return Verdict(service=stats.service, passed=not reasons, reasons=tuple(reasons))


def build_report(
    operations: Iterable[Operation],
    started: float,
    finished: float,
    *,
    targets: Mapping[str, ServiceTarget] = DEFAULT_TARGETS,
    services: Iterable[str] = (),
    started_at_unix: float | None = None,
) -> Report:
    """Group operations by service and judge each against its target (unknown services: 0 failures, < 1 s)."""
    by_service: dict[str, list[Operation]] = {name: [] for name in services}
    for op in operations:
        by_service.setdefault(op.service, []).append(op)
    report = Report(started=started, finished=finished, started_at_unix=started_at_unix)
    for name in sorted(by_service):
        stats = service_stats(name, by_service[name], started, finished)
        report.services[name] = stats
        report.verdicts[name] = judge(stats, targets.get(name, ServiceTarget()))
    return report


def format_report(report: Report) -> str:
    lines = [
        f"availability probe: {report.finished - report.started:.1f} s, "
        f"{'PASSED' if report.passed else 'FAILED'}",
        f"{'service':<12}{'ops':>7}{'fail':>6}{'retry':>7}{'gap s':>8}{'p50 ms':>9}{'p99 ms':>9}  verdict",
    ]
    for name, s in report.services.items():
        verdict = report.verdicts[name]
        lines.append(
            f"{name:<12}{s.operations:>7}{s.failures:>6}{s.retries:>7}{s.longest_gap_s:>8.3f}"
            f"{s.p50_ms:>9.1f}{s.p99_ms:>9.1f}  {'ok' if verdict.passed else '; '.join(verdict.reasons)}"
        )
    for name, s in report.services.items():
        if s.failures_at_s:
            times = ", ".join(_when(report, at) for at in s.failures_at_s)
            lines.append(f"  {name} failures began at {times}")
        lines.extend(f"  {name} error: {error}" for error in s.errors)
        if not report.verdicts[name].passed:
            lines.append(f"  {name} longest gap began at {_when(report, s.longest_gap_at_s)}")
    return "\n".join(lines)


def _when(report: Report, offset_s: float) -> str:
    """An offset from the probe start, with its UTC time of day when the start's wall clock is known."""
    if report.started_at_unix is None:
        return f"+{offset_s:.1f} s"
    wall = datetime.fromtimestamp(report.started_at_unix + offset_s, tz=UTC)
    return f"+{offset_s:.1f} s ({wall.strftime('%H:%M:%S.%f')[:-3]} UTC)"


# --- one report for a rollout run in several parts (a worker died, or the rollout was paused) -------------
def merge_run_reports(
    runs: Sequence[Mapping[str, Any]], *, targets: Mapping[str, ServiceTarget] = DEFAULT_TARGETS
) -> dict[str, Any]:
    """The rollout's one report from the stored reports (:meth:`Report.to_dict` documents, each perhaps with
    ``notes``, ``integrity`` or only an ``error``) of its runs, in the order they ran.

    Runs are placed on one timeline by their wall-clock start (offsets from the first run's start). Per
    service: operations, failures and retries add up; failures keep their times (offsets on that timeline);
    the longest gap is the longest stretch without a success *that the probe measured*: a gap open at the
    end of one run is joined with the head of the next run the service was probed in (the run's
    ``first_success_s``/``last_success_s``), and when the longest gap so joined crosses a seam it is marked
    ``longest_gap_spans_seam``. The time between runs, when no probe ran, is not counted as up or down: it
    is marked in ``seams`` (``at_s``, ``unmeasured_s``) and summed as ``unmeasured_s``. p50/p99 are the
    highest of the runs' (the operations are not kept). A run without a report (``error``) is listed in
    ``runs`` and the merged report does not pass. One run's report is returned as it is."""
    if len(runs) == 1:
        return dict(runs[0])
    measured: list[tuple[int, float, Mapping[str, Any]]] = []  # (run number, offset, report)
    summary: list[dict[str, Any]] = []
    notes: list[str] = []
    base: float | None = None
    end = 0.0
    for number, report in enumerate(runs, start=1):
        notes.extend(f"run {number}: {note}" for note in report.get("notes", ()))
        if "services" not in report:
            summary.append({"run": number, "error": str(report.get("error", "no probe report"))})
            continue
        started = report.get("started_at_unix")
        if base is None:
            base = float(started) if started is not None else 0.0
        # a report without a wall-clock start is placed right after the one before it
        offset = max(0.0, float(started) - base) if started is not None else end
        duration = float(report.get("duration_s", 0.0))
        measured.append((number, offset, report))
        summary.append(
            {"run": number, "at_s": round(offset, 3), "duration_s": duration, "passed": report.get("passed")}
        )
        end = max(end, offset + duration)
    seams = []
    for (number, offset, report), (_, next_offset, _) in itertools.pairwise(measured):
        ended = offset + float(report.get("duration_s", 0.0))
        unmeasured = round(max(0.0, next_offset - ended), 3)
        seams.append({"after_run": number, "at_s": round(ended, 3), "unmeasured_s": unmeasured})
    names = sorted({name for _, _, report in measured for name in report["services"]})
    services: dict[str, ServiceStats] = {}
    verdicts: dict[str, Verdict] = {}
    for name in names:
        stats = _merge_service(name, [(o, r) for _, o, r in measured])
        services[name] = stats
        verdicts[name] = judge(stats, targets.get(name, ServiceTarget()))
    merged: dict[str, Any] = {
        "started_at_unix": base,
        "duration_s": round(end, 3),
        "passed": all(v.passed for v in verdicts.values()),
        "services": {name: asdict(stats) for name, stats in services.items()},
        "verdicts": {name: asdict(v) for name, v in verdicts.items()},
        "runs": summary,
        "seams": seams,
        "unmeasured_s": round(sum(seam["unmeasured_s"] for seam in seams), 3),
    }
    integrity = [r["integrity"] for r in runs if isinstance(r.get("integrity"), Mapping)]
    if integrity:
        merged["integrity"] = {
            "objects_written": sum(int(i.get("objects_written", 0)) for i in integrity),
            "lost_or_altered": [key for i in integrity for key in i.get("lost_or_altered", ())],
        }
    if (
        any("error" in run for run in summary)
        or any(run.get("passed") is False for run in summary)  # e.g. objects lost in that run
        or (integrity and merged["integrity"]["lost_or_altered"])
    ):
        merged["passed"] = False
    if notes:
        merged["notes"] = notes
    return merged


def _merge_service(name: str, runs: Sequence[tuple[float, Mapping[str, Any]]]) -> ServiceStats:
    """One service's figures over the runs (offset, report) that may have probed it."""
    probed = [
        (offset, report["services"][name], float(report.get("duration_s", 0.0)))
        for offset, report in runs
        if name in report["services"]
    ]
    best, best_at, spans = 0.0, 0.0, False
    # the gap still open (measured seconds), where it began, and how many runs it has gone through
    open_gap, open_at, open_runs = 0.0, (probed[0][0] if probed else 0.0), 0
    first: float | None = None
    last: float | None = None
    for offset, stats, duration in probed:
        head = stats.get("first_success_s")
        tail = stats.get("last_success_s")
        if stats["operations"] > stats["failures"] and head is None:  # a report from before these fields
            head, tail = 0.0, duration
        if head is None or tail is None:  # no success in this run: the open gap goes on through it
            open_gap += duration
            open_runs += 1
            continue
        if open_gap + head > best:
            best, best_at, spans = open_gap + head, open_at, open_runs > 0
        if stats["longest_gap_s"] > best:  # a gap inside this run
            best, best_at, spans = float(stats["longest_gap_s"]), offset + stats["longest_gap_at_s"], False
        first = offset + head if first is None else first
        last = offset + tail
        open_gap, open_at, open_runs = duration - tail, offset + tail, 1
    if open_gap > best:
        best, best_at, spans = open_gap, open_at, open_runs > 1
    return ServiceStats(
        service=name,
        operations=sum(int(s["operations"]) for _, s, _ in probed),
        failures=sum(int(s["failures"]) for _, s, _ in probed),
        retries=sum(int(s["retries"]) for _, s, _ in probed),
        longest_gap_s=round(best, 3),
        longest_gap_at_s=round(best_at, 3),
        p50_ms=max((float(s["p50_ms"]) for _, s, _ in probed), default=0.0),
        p99_ms=max((float(s["p99_ms"]) for _, s, _ in probed), default=0.0),
        errors=tuple(dict.fromkeys(e for _, s, _ in probed for e in s.get("errors", ())))[:10],
        failures_at_s=tuple(round(o + at, 3) for o, s, _ in probed for at in s.get("failures_at_s", ())),
        first_success_s=None if first is None else round(first, 3),
        last_success_s=None if last is None else round(last, 3),
        longest_gap_spans_seam=spans,
    )
