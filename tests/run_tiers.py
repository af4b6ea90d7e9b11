"""Run the pytest tiers of `make test` and enforce their committed minimums.

Each tier runs in its own pytest process (so a lab fixture's teardown cannot leak into the next
tier), writes a JUnit report under build/test-reports/, and must run at least the number of tests
committed in tests/tiers.json. Consecutive tiers marked ``"concurrent": true`` there run side by side
(CI has 90 minutes on 2 cores; tiers that measure nothing by the clock can share them): each one's
output goes to build/test-reports/<tier>.log and is printed whole when it ends. Every other tier runs
alone. At the end a table gives every tier's counts and duration and a total row with the run's wall clock,
and the closing line sums them up as "N passed, N failed, N skipped".

Each test counts once towards the minimums: tests/conftest.py gives every test a ``spec`` property (the file
and function that define it, and its parameters, whichever module collected it), and a test whose spec an
earlier tier of the run (in tiers.json's order), or the same tier, already ran is a repeat: it runs, its
failures fail the tier, but it does not count towards the tier's minimum (the "repeats" column).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "build" / "test-reports"
PYTEST_NO_TESTS = 5


@dataclass
class TierResult:
    name: str
    minimum: int
    tests: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    exit_code: int = 0
    repeats: int = 0  # tests whose spec was already counted (in an earlier tier or earlier in this one)
    specs: list[str] = field(default_factory=list)  # the spec of every test that ran and did not skip

    @property
    def below_minimum(self) -> bool:
        return self.tests - self.skipped - self.repeats < self.minimum

    @property
    def ok(self) -> bool:
        return self.exit_code in (0, PYTEST_NO_TESTS) and self.failed == 0 and not self.below_minimum


def read_junit(path: Path) -> tuple[int, int, int]:
    """(tests, failed, skipped) from a JUnit XML report; a missing report counts as nothing run."""
    if not path.exists():
        return 0, 0, 0
    root = ET.parse(path).getroot()  # noqa: S314 - our own pytest wrote this file
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return tests, failed, skipped


def read_specs(path: Path) -> list[str]:
    """The spec of every test case in a JUnit report that did not skip (its ``spec`` property, else its
    class name and name), in the report's order."""
    if not path.exists():
        return []
    specs = []
    for case in ET.parse(path).getroot().iter("testcase"):  # noqa: S314 - our own pytest wrote this file
        if case.find("skipped") is not None:
            continue
        spec = next((p.get("value") for p in case.iter("property") if p.get("name") == "spec"), None)
        specs.append(spec or f"{case.get('classname', '')}::{case.get('name', '')}")
    return specs


def count_repeats(results: list[TierResult]) -> None:
    """Set each result's ``repeats``: its tests whose spec an earlier result, or itself, already counted."""
    seen: set[str] = set()
    for result in results:
        result.repeats = 0
        for spec in result.specs:
            if spec in seen:
                result.repeats += 1
            seen.add(spec)


def _header(name: str, path: str, minimum: int) -> str:
    return f"\n===== tier {name}: {path} (minimum {minimum} tests) ====="


def _result(name: str, minimum: int, report: Path, code: int, started: float) -> TierResult:
    result = TierResult(name=name, minimum=minimum, seconds=time.monotonic() - started, exit_code=code)
    result.tests, result.failed, result.skipped = read_junit(report)
    result.specs = read_specs(report)
    result.passed = result.tests - result.failed - result.skipped
    if code not in (0, PYTEST_NO_TESTS) and result.failed == 0:
        result.failed = 1  # pytest itself failed (collection error, internal error): count it
    return result


def _command(path: str, report: Path, extra: list[str]) -> list[str]:
    REPORTS.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    return [sys.executable, "-m", "pytest", path, f"--junitxml={report}", *extra]


def run_tier(name: str, path: str, minimum: int, extra: list[str]) -> TierResult:
    report = REPORTS / f"{name}.xml"
    print(_header(name, path, minimum), flush=True)
    started = time.monotonic()
    if not (ROOT / path).is_dir():
        print(f"{path} does not exist: the tier runs no test")
        return TierResult(name=name, minimum=minimum)
    code = subprocess.call(_command(path, report, extra), cwd=ROOT)
    return _result(name, minimum, report, code, started)


def run_concurrently(tiers: list[dict[str, Any]], extra: list[str]) -> list[TierResult]:
    """Start every tier of ``tiers`` at once, each writing to its own log; print each log whole as its tier
    ends. Results come back in ``tiers``' order."""
    running = {}
    results: dict[str, TierResult] = {}
    for tier in tiers:
        name, path, minimum = tier["name"], tier["path"], int(tier["minimum"])
        if not (ROOT / path).is_dir():
            print(f"{_header(name, path, minimum)}\n{path} does not exist: the tier runs no test", flush=True)
            results[name] = TierResult(name=name, minimum=minimum)
            continue
        report, log = REPORTS / f"{name}.xml", REPORTS / f"{name}.log"
        command = _command(path, report, extra)
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        running[name] = (process, tier, report, log, time.monotonic())
    print(f"\n===== tiers {', '.join(running)} run side by side (logs in {REPORTS}) =====", flush=True)
    while running:
        for name, (process, tier, report, log, started) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[name]
            minimum = int(tier["minimum"])
            results[name] = _result(name, minimum, report, code, started)
            print(_header(name, tier["path"], minimum), flush=True)
            sys.stdout.write(log.read_text(errors="replace"))
            sys.stdout.flush()
        time.sleep(1)
    return [results[tier["name"]] for tier in tiers]


def _batches(tiers: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive tiers marked concurrent form one batch; every other tier is a batch of its own."""
    batches: list[list[dict[str, Any]]] = []
    for tier in tiers:
        if tier.get("concurrent") and batches and batches[-1][0].get("concurrent"):
            batches[-1].append(tier)
        else:
            batches.append([tier])
    return batches


def summary(results: list[TierResult], wall_seconds: float) -> list[str]:
    """The closing table: each tier's counts and its own duration, then a total row whose seconds are the
    run's wall clock (tiers that ran side by side overlap, so it is less than the sum of their durations),
    then "N passed, N failed, N skipped"."""
    columns = f"{'tier':<12}{'tests':>7}{'passed':>8}{'failed':>8}{'skipped':>9}{'repeats':>9}{'minimum':>9}"
    lines = ["", "===== test tiers =====", f"{columns}{'seconds':>10}"]

    def row(name: str, r: TierResult, seconds: float, flag: str = "") -> str:
        return (
            f"{name:<12}{r.tests:>7}{r.passed:>8}{r.failed:>8}{r.skipped:>9}{r.repeats:>9}{r.minimum:>9}"
            f"{seconds:>10.1f}{flag}"
        )

    for r in results:
        flag = "" if r.ok else ("  BELOW MINIMUM" if r.below_minimum and r.failed == 0 else "  FAILED")
        lines.append(row(r.name, r, r.seconds, flag))
    total = TierResult(
        name="total",
        minimum=sum(r.minimum for r in results),
        tests=sum(r.tests for r in results),
        passed=sum(r.passed for r in results),
        failed=sum(r.failed for r in results),
        skipped=sum(r.skipped for r in results),
        repeats=sum(r.repeats for r in results),
    )
    lines.append(row("total", total, wall_seconds, "  (wall clock)"))
    below = sum(1 for r in results if r.below_minimum and r.failed == 0)
    lines.append(f"{total.passed} passed, {total.failed + below} failed, {total.skipped} skipped")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tier", action="append", help="run only these tiers (default: all)")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments passed to every pytest run")
    args = parser.parse_args(argv)
    started = time.monotonic()
    config = json.loads((ROOT / "tests" / "tiers.json").read_text())
    results = []
    chosen = [tier for tier in config["tiers"] if not args.tier or tier["name"] in args.tier]
    for batch in _batches(chosen):
        if len(batch) > 1:
            results.extend(run_concurrently(batch, args.pytest_args))
        else:
            (tier,) = batch
            results.append(run_tier(tier["name"], tier["path"], int(tier["minimum"]), args.pytest_args))

    count_repeats(results)
    print("\n".join(summary(results, time.monotonic() - started)))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
