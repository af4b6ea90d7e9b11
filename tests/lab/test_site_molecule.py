"""The foundation roles' Molecule scenarios on lab nodes: converge, idempotence (a second converge changes
nothing), verify (the roles' own health.yml), through the shared delegated create/destroy.

``make test`` runs two of the four: ``endpoint``'s scenario converges node_base, ceph and endpoint (HAProxy
fronts the RGWs), so its idempotence and verify cover all three roles, and ``zookeeper``'s covers the last
one. The node_base and ceph scenarios stay for a role's developer (``cd roles/ceph && molecule test``);
running them here too repeated the same converges for seven minutes of CI's ninety."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.lab.conftest import ROOT, VENV_BIN, leftovers, side_lab
from updater.lab.lab import Lab

pytestmark = pytest.mark.lab


@pytest.mark.parametrize(("role", "suffix"), [("zookeeper", "mz"), ("endpoint", "me")])
def test_role_scenario_converges_idempotently_and_verifies(role: str, suffix: str) -> None:
    lab = side_lab(suffix)
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "CORRAL_MOLECULE_LAB": lab,
        "NO_COLOR": "1",
    }
    result = subprocess.run(
        [str(VENV_BIN / "molecule"), "test"],
        cwd=ROOT / "roles" / role,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert f"{step}: Executed: Successful" in output
    assert not Lab(lab).exists()
    assert leftovers(lab, None) == []
