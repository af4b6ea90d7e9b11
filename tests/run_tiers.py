"""Run the pytest tiers of `make test` one after another and enforce their committed minimums.

Each tier runs in its own pytest process (so a lab fixture's teardown cannot leak into the next
tier), writes a JUnit report under build/test-reports/, and must run at least the number of tests
committed in tests/tiers.json. At the end a table gives every tier's counts and duration, and the
closing line sums them up as "N passed, N failed, N skipped".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

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

    @property
    def below_minimum(self) -> bool:
        return self.tests - self.skipped < self.minimum

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


def run_tier(name: str, path: str, minimum: int, extra: list[str]) -> TierResult:
    REPORTS.mkdir(parents=True, exist_ok=True)
    report = REPORTS / f"{name}.xml"
    report.unlink(missing_ok=True)
    print(f"\n===== tier {name}: {path} (minimum {minimum} tests) =====", flush=True)
    started = time.monotonic()
    if not (ROOT / path).is_dir():
        print(f"{path} does not exist: the tier runs no test")
        return TierResult(name=name, minimum=minimum)
    cmd = [sys.executable, "-m", "pytest", path, f"--junitxml={report}", *extra]
    code = subprocess.call(cmd, cwd=ROOT)
    result = TierResult(name=name, minimum=minimum, seconds=time.monotonic() - started, exit_code=code)
    result.tests, result.failed, result.skipped = read_junit(report)
    result.passed = result.tests - result.failed - result.skipped
    if code not in (0, PYTEST_NO_TESTS) and result.failed == 0:
        result.failed = 1  # pytest itself failed (collection error, internal error): count it
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tier", action="append", help="run only these tiers (default: all)")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments passed to every pytest run")
    args = parser.parse_args(argv)
    config = json.loads((ROOT / "tests" / "tiers.json").read_text())
    results = []
    for tier in config["tiers"]:
        if args.tier and tier["name"] not in args.tier:
            continue
        results.append(run_tier(tier["name"], tier["path"], int(tier["minimum"]), args.pytest_args))

    print("\n===== test tiers =====")
    print(f"{'tier':<12}{'tests':>7}{'passed':>8}{'failed':>8}{'skipped':>9}{'minimum':>9}{'seconds':>10}")
    for r in results:
        flag = "" if r.ok else ("  BELOW MINIMUM" if r.below_minimum and r.failed == 0 else "  FAILED")
        print(
            f"{r.name:<12}{r.tests:>7}{r.passed:>8}{r.failed:>8}{r.skipped:>9}{r.minimum:>9}{r.seconds:>10.1f}{flag}"
        )
    passed = sum(r.passed for r in results)
    failed = sum(r.failed for r in results) + sum(1 for r in results if r.below_minimum and r.failed == 0)
    skipped = sum(r.skipped for r in results)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
