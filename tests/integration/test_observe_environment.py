"""The preflight's observation play finds the service's collection itself (issue 19 item 4): run from a
shell without ``ANSIBLE_CONFIG`` or ``ANSIBLE_COLLECTIONS_PATH`` (and not from the checkout, so no
``ansible.cfg`` is found either), it reads the release and runs the role's health step; an installation whose
collection cannot be found gets the engine's error as its own check, never a verdict on the cluster's health.

A real ansible-runner play on a ``local`` connection. ``corral.cloud.node_release`` reads
``/etc/corral-release``: the play runs in a private mount namespace whose ``/etc`` is an overlay with that
file added (the host's ``/etc`` is not touched), so it needs root, ``unshare`` and overlayfs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

HELPER = """
import json, sys, tempfile
from pathlib import Path
from updater.services.cluster import access, ansible_env
from updater.services.rollouts.control import observation_checks

if sys.argv[2] == "installed-without-collection":
    ansible_env.SOURCE = Path("/nonexistent")  # an installed package whose collection is nowhere to be found
work = Path(tempfile.mkdtemp())
run = access.run_play(work, access._OBSERVE_PLAY, Path(sys.argv[1]), timeout=240)
observation = access.observation_from_events(
    ["node1"], run.events, timed_out=run.timed_out, failed=run.failed
)
print(json.dumps({
    "observation": observation.__dict__,
    "checks": [check.as_json() for check in observation_checks(observation)],
}))
"""


def _usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a private mount namespace with an overlay /etc)"
    if shutil.which("unshare") is None:
        return "needs unshare"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "needs overlayfs"
    return None


@pytest.fixture(autouse=True)
def _namespace_tools() -> None:
    """make test runs as root on Debian with util-linux and overlayfs: a missing one is a broken machine,
    not a reason to skip (tests/SKIPS.md accepts no skip)."""
    missing = _usable()
    if missing is not None:
        pytest.fail(f"this spec {missing}")


def _observe(tmp_path: Path, variant: str) -> dict[str, Any]:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n  children:\n    nodes:\n      hosts:\n        node1:\n"
        f"          ansible_connection: local\n          ansible_python_interpreter: {sys.executable}\n"
        "          rolling_node_roles: []\n"
    )
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    (upper / "corral-release").write_text("CORRAL_VERSION=0.1.0\n")
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS"}
    }
    environment["PATH"] = f"{Path(sys.executable).parent}:{environment.get('PATH', '/usr/bin:/bin')}"
    environment["PYTHONPATH"] = str(ROOT)
    script = tmp_path / "observe.py"
    script.write_text(HELPER)
    mount = f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc"
    done = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            f'{mount} && exec "$0" "$@"',
            sys.executable,
            str(script),
            str(inventory),
            variant,
        ],
        cwd=tmp_path,  # no ansible.cfg here
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_observation_finds_the_collection_without_ansible_config(tmp_path: Path) -> None:
    result = _observe(tmp_path, "checkout")
    observation, checks = result["observation"], {c["name"]: c for c in result["checks"]}
    assert observation["engine_error"] == ""
    assert observation["releases"] == {"node1": "0.1.0"}
    assert observation["unhealthy"] == {}
    assert checks["nodes answer"] == {"name": "nodes answer", "passed": True, "detail": "node1 runs 0.1.0"}
    assert checks["cluster health"]["passed"] is True, checks


def test_a_collection_not_found_is_the_engines_error_never_a_health_verdict(tmp_path: Path) -> None:
    result = _observe(tmp_path, "installed-without-collection")
    observation, checks = result["observation"], {c["name"]: c for c in result["checks"]}
    print(f"\nobservation play check: {checks['observation play']['detail']}")
    assert "couldn't resolve module/action 'corral.cloud.node_release'" in observation["engine_error"]
    assert observation["unhealthy"] == {}
    assert checks["observation play"]["passed"] is False
    assert "couldn't resolve module/action" in checks["observation play"]["detail"]
    assert checks["cluster health"]["detail"].startswith("not checked: the observation play could not run")
    assert "node1" not in checks["cluster health"]["detail"]
