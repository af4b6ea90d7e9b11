"""The collection tarball carries the collection and nothing of the update service or the tests."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GALAXY = Path(sys.executable).with_name("ansible-galaxy")


@pytest.fixture(scope="module")
def tarball_members(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("collection")
    subprocess.run(
        [str(GALAXY), "collection", "build", "--output-path", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (tarball,) = out.glob("corral-cloud-*.tar.gz")
    assert tarball.name == "corral-cloud-0.1.0.tar.gz"
    with tarfile.open(tarball) as tar:
        return set(tar.getnames())


def test_tarball_has_collection_metadata(tarball_members: set[str]) -> None:
    assert {"MANIFEST.json", "FILES.json", "meta/runtime.yml"} <= tarball_members


@pytest.mark.parametrize("directory", ["roles", "playbooks", "plugins"])
def test_tarball_has_collection_content_directories(tarball_members: set[str], directory: str) -> None:
    if not (ROOT / directory).is_dir():
        pytest.fail(f"{directory}/ is missing from the repository")
    assert any(m.startswith(f"{directory}/") for m in tarball_members)


@pytest.mark.parametrize("excluded", ["updater", "tests", ".venv", ".collections", "scripts", ".ci", "build"])
def test_tarball_leaves_out_non_collection_trees(tarball_members: set[str], excluded: str) -> None:
    leaked = sorted(m for m in tarball_members if m == excluded or m.startswith(f"{excluded}/"))
    assert leaked == []


def test_collection_is_found_by_fqcn_from_the_checkout() -> None:
    """ansible.cfg finds corral.cloud itself (through .collections) with no install step."""
    out = subprocess.run(
        [str(GALAXY), "collection", "list", "corral.cloud", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    assert "corral.cloud" in out
