"""A skip whose reason is not listed in tests/SKIPS.md is reported as a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import accepted_skip_reasons

pytest_plugins = ["pytester"]
CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def test_accepted_reasons_are_the_bullet_lines() -> None:
    text = "# title\n\n- needs two NUMA nodes\nprose\n- another reason\n"
    assert accepted_skip_reasons(text) == {"needs two NUMA nodes", "another reason"}


def test_unlisted_skip_fails(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makefile(".md", SKIPS="- an accepted reason\n")
    pytester.makepyfile(
        """
        import pytest
        def test_unlisted():
            pytest.skip("redis is not installed")
        def test_listed():
            pytest.skip("an accepted reason")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*skip not allowed*redis is not installed*"])
