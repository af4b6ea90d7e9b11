"""The benchmarks' figures, with their side-by-side baselines and ratios, end the tier's console output
(tests/support/figures.py)."""

from tests.support.figures import figures, pytest_runtest_makereport, pytest_terminal_summary

__all__ = ["figures", "pytest_runtest_makereport", "pytest_terminal_summary"]
