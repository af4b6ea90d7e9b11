"""Molecule's delegated driver runs on lab nodes: the shared create/destroy playbooks work end to end."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.lab.conftest import ROOT, VENV_BIN, leftovers, side_lab
from updater.lab.lab import Lab

pytestmark = pytest.mark.lab

MOLECULE_LAB = side_lab("m")
SCENARIO = ROOT / "tests" / "molecule" / "selftest"


def test_molecule_test_converges_and_verifies_on_a_lab_node_then_destroys_it() -> None:
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "CORRAL_MOLECULE_LAB": MOLECULE_LAB,
        "NO_COLOR": "1",
    }
    result = subprocess.run(
        [str(VENV_BIN / "molecule"), "test"],
        cwd=SCENARIO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert f"{step}: Executed: Successful" in output
    assert not Lab(MOLECULE_LAB).exists()
    assert leftovers(MOLECULE_LAB, None) == []
