"""scripts/check-collection-deps: collections/requirements.yml against what Ansible really finds here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-collection-deps"


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False, timeout=120
    )


def test_the_committed_requirements_are_met_by_the_installed_ansible_package() -> None:
    result = _check()
    assert result.returncode == 0, result.stderr
    assert "community.general" in result.stdout


def test_an_unmet_version_a_missing_collection_and_an_unlisted_one_in_use_are_each_named(
    tmp_path: Path,
) -> None:
    requirements = tmp_path / "requirements.yml"
    requirements.write_text(
        "---\ncollections:\n  - name: community.general\n    version: '>=99.0.0'\n  - name: example.absent\n"
    )
    result = _check("--requirements", str(requirements))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert any("community.general" in line and "does not satisfy '>=99.0.0'" in line for line in lines), lines
    assert any("example.absent is listed" in line and "does not find it" in line for line in lines), lines
    # ansible.posix is called by a role (FQCN) but this file does not list it.
    assert any("ansible.posix is used by a role or playbook but not listed" in line for line in lines), lines
