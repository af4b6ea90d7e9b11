"""/etc/corral-release: rendered and read back without loss."""

from __future__ import annotations

import pytest

from updater.lab.release import Release, parse


def test_a_release_reads_back_as_written() -> None:
    rel = Release("1.2.0", "2026-11-21T10:00:00Z", "a" * 64, "b" * 64, base_image="c" * 64, note="trial")
    assert parse(rel.render()) == rel
    assert "CORRAL_VERSION=1.2.0\n" in rel.render()


def test_a_release_without_a_version_is_refused() -> None:
    with pytest.raises(ValueError, match="CORRAL_VERSION"):
        parse("CORRAL_BUILD_DATE=x\n")
