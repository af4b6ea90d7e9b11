"""Project-wide pytest policy and shared fixtures.

Skip policy: a test that does not run for real must have a reason listed in tests/SKIPS.md. That covers a
skip in a test or its fixtures, a skip of a whole module at import (``pytest.skip(allow_module_level=True)``,
``pytest.importorskip``), and an expected failure (an ``xfail`` that fails is a test that did not pass; one
that passes is a failure: its mark is stale).

Every test also carries a ``spec`` property in the JUnit report: the file and function that define it plus its
parameters, whichever module collected it. tests/run_tiers.py counts each spec once across the tiers, so a
module that imports another tier's tests adds nothing to the minimums.

The fixtures shared by several tiers live in tests/support/ (registered below).
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.fixtures"]

SKIPS_FILE = Path(__file__).with_name("SKIPS.md")


def accepted_skip_reasons(text: str) -> set[str]:
    return {line[2:].strip() for line in text.splitlines() if line.startswith("- ")}


ACCEPTED = accepted_skip_reasons(SKIPS_FILE.read_text())


def _skip_reason(longrepr: object) -> str:
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ").strip()


def _refusal(what: str, reason: str) -> str:
    return (
        f"{what} not allowed: {reason!r} is not an accepted reason in tests/SKIPS.md "
        "(install what the test needs in `make test` instead of skipping)"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if hasattr(report, "wasxfail"):
        reason = report.wasxfail.removeprefix("reason: ").removeprefix("[NOTRUN] ").strip()
        if report.passed:  # XPASS of an xfail(strict=False): the mark is stale
            report.outcome = "failed"
            report.longrepr = f"[XPASS] marked xfail ({reason!r}) but passed: remove the mark"
        elif reason not in ACCEPTED:
            report.outcome = "failed"
            report.longrepr = _refusal("xfail", reason)
    elif report.skipped:
        reason = _skip_reason(report.longrepr)
        if reason not in ACCEPTED:
            report.outcome = "failed"
            report.longrepr = _refusal("skip", reason)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A module skipped at import (``pytest.skip(allow_module_level=True)``, ``pytest.importorskip``) is a
    collection error unless its reason is accepted."""
    report = yield
    if report.skipped:
        reason = _skip_reason(report.longrepr)
        if reason not in ACCEPTED:
            report.outcome = "failed"
            report.longrepr = _refusal("module skip", reason)
    return report


def spec_id(item: pytest.Item) -> str:
    """Where the test is defined (not where it was collected) and its parameters."""
    function = getattr(item, "function", None)
    if function is None:
        return item.nodeid
    source = inspect.getsourcefile(function)
    path = Path(source).resolve() if source else Path(str(item.path))
    root = item.config.rootpath
    where = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
    callspec = getattr(item, "callspec", None)
    return f"{where}::{function.__qualname__}" + (f"[{callspec.id}]" if callspec is not None else "")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.user_properties.append(("spec", spec_id(item)))
