"""Project-wide pytest policy (a skip must have a reason listed in tests/SKIPS.md) and the fixtures several
tiers share (tests/support/fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.support.fixtures"]

SKIPS_FILE = Path(__file__).with_name("SKIPS.md")


def accepted_skip_reasons(text: str) -> set[str]:
    return {line[2:].strip() for line in text.splitlines() if line.startswith("- ")}


ACCEPTED = accepted_skip_reasons(SKIPS_FILE.read_text())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ").strip()
        if reason not in ACCEPTED:
            report.outcome = "failed"
            report.longrepr = (
                f"skip not allowed: {reason!r} is not an accepted reason in tests/SKIPS.md "
                "(install what the test needs in `make test` instead of skipping)"
            )
