"""The benchmark figures table (tests/support/figures.py): one line per figure, its baseline and the ratio."""

from __future__ import annotations

from tests.support.figures import Figure, format_line, table


def test_a_figure_with_a_baseline_has_the_ratio_value_over_baseline() -> None:
    figure = Figure("test_bench_verify", "verify", 450.0, "MiB/s", "sha256sum", 300.0)
    assert figure.ratio == 1.5
    assert Figure("test_bench_plan", "plan", 7.0, "ms").ratio is None


def test_the_table_has_one_aligned_line_per_figure_with_baseline_and_ratio() -> None:
    lines = table(
        [
            Figure("test_bench_verify", "verify", 450.0, "MiB/s", "sha256sum", 300.0),
            Figure("test_bench_plan[node]", "inventory+plan, mean", 23.25, "ms"),
        ]
    )
    assert lines[0].split() == ["benchmark", "figure", "value", "unit", "baseline", "ratio"]
    assert lines[1].split() == ["test_bench_verify", "verify", "450", "MiB/s", "sha256sum", "300", "1.50x"]
    assert lines[2].split() == ["test_bench_plan[node]", "inventory+plan,", "mean", "23.2", "ms", "-", "-"]
    assert len({line.index("MiB/s") for line in lines[1:2]} | {lines[2].index("ms")}) == 1, "columns align"


def test_the_junit_line_names_benchmark_figure_baseline_and_ratio() -> None:
    figure = Figure("test_bench_channel", "download", 97.5, "MiB/s", "sha256sum", 48.1)
    assert (
        format_line(figure) == "test_bench_channel: download 97.5 MiB/s (sha256sum 48.1 MiB/s, ratio 2.03x)"
    )
