"""The tier runner counts what pytest ran and fails a tier that runs fewer tests than its minimum."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.run_tiers import ROOT, TierResult, read_junit


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_junit_counts_failures_errors_and_skips(tmp_path: Path) -> None:
    report = write(
        tmp_path / "r.xml",
        '<testsuites><testsuite tests="7" failures="1" errors="1" skipped="2"/></testsuites>',
    )
    assert read_junit(report) == (7, 2, 2)


def test_missing_report_counts_as_nothing_run(tmp_path: Path) -> None:
    assert read_junit(tmp_path / "absent.xml") == (0, 0, 0)


def test_tier_below_minimum_fails_even_when_nothing_failed() -> None:
    result = TierResult(name="lab", minimum=5, tests=4, passed=4)
    assert result.below_minimum
    assert not result.ok


def test_skipped_tests_do_not_count_towards_the_minimum() -> None:
    result = TierResult(name="unit", minimum=3, tests=3, passed=2, skipped=1)
    assert not result.ok


def test_pytest_no_tests_exit_code_is_ok_when_minimum_is_zero() -> None:
    assert TierResult(name="browser", minimum=0, exit_code=5).ok


def test_committed_tiers_cover_every_directory_holding_tests() -> None:
    config = json.loads((ROOT / "tests" / "tiers.json").read_text())
    paths = {Path(t["path"]).name for t in config["tiers"]}
    dirs = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and any(p.rglob("test_*.py"))}
    assert dirs <= paths


def test_a_missing_tier_directory_runs_no_test_and_fails_a_nonzero_minimum() -> None:
    from tests.run_tiers import run_tier

    assert run_tier("x", "tests/does-not-exist", 0, []).ok
    assert not run_tier("x", "tests/does-not-exist", 1, []).ok


def test_consecutive_concurrent_tiers_form_one_batch_and_the_rest_run_alone() -> None:
    from tests.run_tiers import _batches

    tiers = [
        {"name": "unit", "concurrent": True},
        {"name": "integration", "concurrent": True},
        {"name": "lab"},
        {"name": "browser", "concurrent": True},
        {"name": "bench"},
    ]
    assert [[t["name"] for t in batch] for batch in _batches(tiers)] == [
        ["unit", "integration"],
        ["lab"],
        ["browser"],
        ["bench"],
    ]


def test_concurrent_tiers_run_side_by_side_and_each_is_counted_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tests.run_tiers as runner

    monkeypatch.setattr(runner, "REPORTS", tmp_path / "reports")
    marker = tmp_path / "two-is-running"
    # Tier one passes only if tier two runs while it waits: run one after the other, one would fail.
    waits = (
        "import pathlib, time\n"
        "def test_waits_for_the_other_tier():\n"
        f"    marker = pathlib.Path({str(marker)!r})\n"
        "    deadline = time.monotonic() + 60\n"
        "    while not marker.exists():\n"
        "        assert time.monotonic() < deadline\n"
        "        time.sleep(0.1)\n"
    )
    other = (
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "def test_ok():\n    pass\n\n\ndef test_fails():\n    assert False\n"
    )
    for name, body in (("one", waits), ("two", other)):
        (tmp_path / name).mkdir()
        write(tmp_path / name / f"test_{name}.py", body)
    results = runner.run_concurrently(
        [
            {"name": "one", "path": str(tmp_path / "one"), "minimum": 1},
            {"name": "two", "path": str(tmp_path / "two"), "minimum": 2},
        ],
        ["-p", "no:cacheprovider", "-q"],
    )
    assert [(r.name, r.tests, r.passed, r.failed, r.ok) for r in results] == [
        ("one", 1, 1, 0, True),
        ("two", 2, 1, 1, False),
    ]
    out = capsys.readouterr().out
    assert "===== tier one:" in out
    assert "===== tier two:" in out
    assert "1 failed, 1 passed" in out  # each tier's own output, printed whole


def test_a_test_another_tier_already_ran_does_not_count_towards_the_minimum(tmp_path: Path) -> None:
    from tests.run_tiers import count_repeats, read_specs

    spec = '<properties><property name="spec" value="{}"/></properties>'
    report = write(
        tmp_path / "integration.xml",
        "<testsuites><testsuite>"
        f'<testcase classname="i.test_store_pg" name="test_a">{spec.format("u.py::test_a")}'
        "</testcase>"
        f'<testcase classname="i.test_store_pg" name="test_b">{spec.format("u.py::test_b[pg]")}'
        "</testcase>"
        f'<testcase classname="i.test_x" name="test_c">{spec.format("s")}<skipped/></testcase>'
        + '<testcase classname="i.test_y" name="test_d"/>'
        + "</testsuite></testsuites>",
    )
    assert read_specs(report) == [
        "u.py::test_a",
        "u.py::test_b[pg]",
        "i.test_y::test_d",
    ]
    unit = TierResult(name="unit", minimum=1, tests=1, passed=1, specs=["u.py::test_a"])
    integration = TierResult(name="integration", minimum=3, tests=4, passed=3, skipped=1)
    integration.specs = read_specs(report)
    count_repeats([unit, integration])
    assert (unit.repeats, integration.repeats) == (0, 1)
    assert unit.ok
    assert not integration.ok  # 4 tests, 1 skipped, 1 already counted by the unit tier: 2 < 3


def test_the_closing_table_gives_each_tier_its_time_and_the_run_its_wall_clock_total() -> None:
    from tests.run_tiers import summary

    results = [
        TierResult(name="unit", minimum=2, tests=3, passed=3, seconds=250.0),
        TierResult(name="browser", minimum=1, tests=2, passed=1, failed=1, seconds=120.0, exit_code=1),
        TierResult(name="bench", minimum=1, tests=1, passed=1, seconds=60.5),
    ]
    lines = summary(results, wall_seconds=310.5)
    rows = {
        line.split()[0]: line.split()
        for line in lines
        if line and line.split()[0] in {"unit", "browser", "bench", "total"}
    }
    assert rows["unit"][-1] == "250.0"
    assert rows["browser"][-2:] == ["120.0", "FAILED"]
    assert rows["bench"][-1] == "60.5"
    # side-by-side tiers overlap: the total is the run's wall clock, not the sum of the tiers' times
    assert rows["total"][1:] == ["6", "5", "1", "0", "0", "4", "310.5", "(wall", "clock)"]
    assert lines[-1] == "5 passed, 1 failed, 0 skipped"
