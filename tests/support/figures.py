"""Benchmark figures printed in the console at the end of the run, not only in the JUnit report.

A benchmark records each figure it measures through the ``figures`` fixture, with the baseline it ran side by
side where it has one::

    figures.record("verify throughput", 812.0, "MiB/s", baseline=("sha256sum", 254.0))

and the terminal summary ends with one line per figure: benchmark, figure, value, unit, baseline and the
ratio value / baseline (what the figure is worth next to the baseline, whichever way is better). A
benchmark that prints its figures instead of recording them gets its printed lines shown under its name, so
nothing measured stays hidden in ``build/test-reports/<tier>.xml``. Figures are shown, never judged: no
benchmark asserts a time or a ratio.

A tier's conftest.py enables this by importing the fixture and both hooks (tests/bench/conftest.py).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import pytest


@dataclass(frozen=True)
class Figure:
    benchmark: str
    name: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline


@dataclass
class _Board:
    figures: list[Figure] = field(default_factory=list)
    printed: dict[str, list[str]] = field(default_factory=dict)  # benchmark -> its printed lines
    shown: bool = False


_BOARD = pytest.StashKey[_Board]()


def _board(config: pytest.Config) -> _Board:
    if _BOARD not in config.stash:
        config.stash[_BOARD] = _Board()
    return config.stash[_BOARD]


class Figures:
    """The ``figures`` fixture: what one benchmark measured."""

    def __init__(self, board: _Board, benchmark: str, item: pytest.Item) -> None:
        self._board = board
        self._benchmark = benchmark
        self._item = item

    def record(
        self, name: str, value: float, unit: str, *, baseline: tuple[str, float] | None = None
    ) -> Figure:
        """Record one figure; ``baseline`` is (what ran side by side, its figure in the same unit)."""
        baseline_name, baseline_value = baseline if baseline is not None else (None, None)
        figure = Figure(self._benchmark, name, value, unit, baseline_name, baseline_value)
        self._board.figures.append(figure)
        # Also in the JUnit report, next to the test's spec, for whoever compares runs.
        self._item.user_properties.append(("figure", format_line(figure)))
        return figure


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(_board(request.config), request.node.name, request.node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep what each benchmark printed (shown only for benchmarks that recorded no figure)."""
    report = yield
    if report.when == "call" and report.capstdout.strip():
        lines = [line.rstrip() for line in report.capstdout.splitlines() if line.strip()]
        _board(item.config).printed.setdefault(item.name, []).extend(lines)
    return report


def _number(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def format_line(figure: Figure) -> str:
    baseline = (
        f"{figure.baseline_name} {_number(figure.baseline)} {figure.unit}"
        if figure.baseline is not None
        else ""
    )
    ratio = f"{figure.ratio:.2f}x" if figure.ratio is not None else ""
    return f"{figure.benchmark}: {figure.name} {_number(figure.value)} {figure.unit}" + (
        f" ({baseline}, ratio {ratio})" if baseline else ""
    )


def table(figures: list[Figure]) -> list[str]:
    """One aligned line per figure: benchmark, figure, value, unit, baseline, ratio."""
    rows = [("benchmark", "figure", "value", "unit", "baseline", "ratio")]
    for f in figures:
        baseline = f"{f.baseline_name} {_number(f.baseline)}" if f.baseline is not None else "-"
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        rows.append((f.benchmark, f.name, _number(f.value), f.unit, baseline, ratio))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {2, 5}  # numbers line up on the right
    return [
        "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own table: the last thing before the outcome line
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    board = _board(config)
    if board.shown or not (board.figures or board.printed):
        return
    board.shown = True  # several conftests may import this hook: one table per run
    terminalreporter.section("benchmark figures")
    if board.figures:
        for line in table(board.figures):
            terminalreporter.write_line(line)
    recorded = {f.benchmark for f in board.figures}
    for benchmark, lines in board.printed.items():
        if benchmark in recorded:
            continue
        terminalreporter.write_line(f"{benchmark} (printed):")
        for line in lines:
            terminalreporter.write_line(f"  {line}")
