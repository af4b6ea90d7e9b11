"""A skip whose reason is not listed in tests/SKIPS.md is reported as a failure: in a test, of a whole module
at import, or as an xfail; and every test carries the spec tests/run_tiers.py counts once."""

from __future__ import annotations

import tomllib
import xml.etree.ElementTree as ET
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


def policy(pytester: pytest.Pytester) -> None:
    """The project's conftest and a SKIPS.md that accepts one reason, in pytester's directory (no ini: so
    ``xfail_strict`` is off, as it would be if pyproject.toml lost it)."""
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makefile(".md", SKIPS="- an accepted reason\n")


def test_an_xfail_that_fails_for_an_unlisted_reason_fails(pytester: pytest.Pytester) -> None:
    policy(pytester)
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.xfail(reason="flaky on CI")
        def test_marked():
            assert False
        def test_imperative():
            pytest.xfail("not done yet")
        @pytest.mark.xfail(reason="an accepted reason")
        def test_listed():
            assert False
        @pytest.mark.xfail(run=False, reason="an accepted reason")
        def test_listed_not_run():
            assert False
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=2, xfailed=2)
    result.stdout.fnmatch_lines(["*xfail not allowed*flaky on CI*", "*xfail not allowed*not done yet*"])


def test_an_xfail_that_passes_fails_even_when_not_strict(pytester: pytest.Pytester) -> None:
    policy(pytester)
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.xfail(reason="an accepted reason", strict=False)
        def test_passes():
            pass
        """
    )
    result = pytester.runpytest("-rA")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*XPASS*marked xfail*an accepted reason*but passed*"])


def test_a_module_level_skip_for_an_unlisted_reason_is_a_collection_error(pytester: pytest.Pytester) -> None:
    policy(pytester)
    pytester.makepyfile(
        test_unlisted="""
        import pytest
        pytest.skip("no GPU here", allow_module_level=True)
        def test_never_counted():
            pass
        """,
        test_listed="""
        import pytest
        pytest.skip("an accepted reason", allow_module_level=True)
        def test_skipped():
            pass
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1, skipped=1)
    result.stdout.fnmatch_lines(["*module skip not allowed*no GPU here*"])
    assert result.ret != 0


def test_an_importorskip_of_a_missing_module_is_a_collection_error(pytester: pytest.Pytester) -> None:
    policy(pytester)
    pytester.makepyfile(
        """
        import pytest
        pytest.importorskip("corral_no_such_module")
        def test_never_counted():
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*module skip not allowed*corral_no_such_module*"])


def test_a_test_imported_into_another_module_keeps_the_spec_of_where_it_is_defined(
    pytester: pytest.Pytester,
) -> None:
    policy(pytester)
    pytester.makepyfile(
        test_spec="""
        import pytest
        @pytest.fixture
        def backend():
            return "a"
        def test_one(backend):
            pass
        """,
        test_again="""
        import pytest
        from test_spec import test_one
        @pytest.fixture(params=["b"])
        def backend(request):
            return request.param
        """,
    )
    report = pytester.path / "report.xml"
    pytester.runpytest(f"--junitxml={report}").assert_outcomes(passed=2)
    specs = sorted(p.get("value", "") for p in ET.parse(report).getroot().iter("property"))  # noqa: S314
    assert specs == ["test_spec.py::test_one", "test_spec.py::test_one[b]"]


def test_the_project_makes_xfail_strict() -> None:
    pyproject = tomllib.loads((CONFTEST.parents[1] / "pyproject.toml").read_text())
    assert pyproject["tool"]["pytest"]["ini_options"]["xfail_strict"] is True
