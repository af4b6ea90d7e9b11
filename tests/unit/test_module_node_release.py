"""corral.cloud.node_release: the one reader of what a node runs (/etc/corral-release and its boot id)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.fixtures.module_harness import Replay, collection_module, run_main
from updater.lab.release import Release

node_release = collection_module("modules.node_release")
BOOT_ID = "5f0c2f3e-4a51-4b8e-9a9e-1f2d3c4b5a69"


def read(tmp_path: Path, text: str | None, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> dict[str, Any]:
    release, boot_id = tmp_path / "corral-release", tmp_path / "boot_id"
    if text is not None:
        release.write_text(text)
    boot_id.write_text(BOOT_ID + "\n")
    args = {"path": str(release), "boot_id_path": str(boot_id)}
    return run_main(node_release.main, args, Replay(), monkeypatch, capsys)


def test_reads_the_release_an_image_build_writes_and_the_boot_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    written = Release("1.3.0", "2026-11-02", "a" * 64, "b" * 64, base_image="c" * 64)
    result = read(tmp_path, written.render(), monkeypatch, capsys)
    assert result["changed"] is False
    assert result["release"] == "1.3.0"
    assert result["boot_id"] == BOOT_ID
    assert result["fields"] == {
        "CORRAL_VERSION": "1.3.0",
        "CORRAL_BUILD_DATE": "2026-11-02",
        "CORRAL_PACKAGES_SHA256": "a" * 64,
        "CORRAL_RECIPE_SHA256": "b" * 64,
        "CORRAL_BASE_IMAGE": "c" * 64,
    }


def test_a_file_without_a_version_is_not_a_corral_node_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = read(tmp_path, "# Corral node image\nCORRAL_BUILD_DATE=2026-11-02\n", monkeypatch, capsys)
    assert result["failed"] is True
    assert result["msg"].endswith("has no CORRAL_VERSION: not a Corral node image")


def test_a_missing_file_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = read(tmp_path, None, monkeypatch, capsys)
    assert result["failed"] is True
    assert "cannot read what the node runs" in result["msg"]
    assert str(tmp_path / "corral-release") in result["msg"]
