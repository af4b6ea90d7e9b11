"""The rolling update's controller-side helpers that need no server: installing a release's collection offline
into its versioned path, and running the per-node plays as a child that never outlives the controller."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from updater.services.rollouts.playbook import run_release_playbook
from updater.services.rollouts.release import RolloutRunnerError, install_collection

ROOT = Path(__file__).resolve().parents[2]
GALAXY = Path(sys.executable).with_name("ansible-galaxy")


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collection")
    subprocess.run(
        [str(GALAXY), "collection", "build", "--output-path", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("corral-cloud-*.tar.gz")
    return built


def test_the_collection_is_installed_offline_into_the_versioned_path_once(
    tarball: Path, tmp_path: Path
) -> None:
    path = install_collection(tarball, tmp_path / "releases", "1.3.0")
    assert path == tmp_path / "releases/1.3.0/collections"
    installed = path / "ansible_collections/corral/cloud"
    assert (installed / "MANIFEST.json").is_file()
    assert (installed / "roles/rolling_node/tasks/main.yml").is_file()
    marker = installed / "marker"
    marker.write_text("kept")
    assert install_collection(tarball, tmp_path / "releases", "1.3.0") == path
    assert marker.read_text() == "kept"  # not installed twice
    assert sorted(p.name for p in (tmp_path / "releases/1.3.0").iterdir()) == ["collections"]


def test_a_broken_collection_tarball_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "corral-cloud-9.9.9.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(
        RolloutRunnerError, match=r"installing the collection of release 9\.9\.9 from .* failed"
    ):
        install_collection(bad, tmp_path / "releases", "9.9.9")
    assert list((tmp_path / "releases/9.9.9").iterdir()) == []


def test_the_child_run_is_streamed_logged_and_given_the_collection_path(tmp_path: Path) -> None:
    lines: list[str] = []
    script = "import os; print('first'); print(os.environ['ANSIBLE_COLLECTIONS_PATH']); raise SystemExit(3)"
    run = run_release_playbook(
        [sys.executable, "-c", script],
        collections_paths=[tmp_path / "target", "/usr/share/ansible/collections"],
        log=tmp_path / "logs/run.log",
        on_line=lines.append,
    )
    expected = ["first", f"{tmp_path / 'target'}:/usr/share/ansible/collections"]
    assert lines == expected
    assert (run.returncode, run.tail, run.orphaned) == (3, tuple(expected), False)
    assert (tmp_path / "logs/run.log").read_text().splitlines() == expected


def test_the_child_run_is_stopped_when_the_controller_goes_away(tmp_path: Path) -> None:
    """controller (killed) → worker (runs run_release_playbook) → child: the child must not live on."""
    child_pid = tmp_path / "child.pid"
    child = f"import os, time; open({str(child_pid)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    worker = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from updater.services.rollouts.playbook import run_release_playbook
        if os.fork() == 0:  # the worker, like Ansible's, in its own session
            os.setsid()
            run = run_release_playbook([sys.executable, "-c", {child!r}], collections_paths=["/x"],
                                       log=Path({str(tmp_path / "run.log")!r}), on_line=print)
            Path({str(tmp_path / "orphaned")!r}).write_text(str(run.orphaned))
            os._exit(0)
        import time; time.sleep(120)
        """
    )
    controller = subprocess.Popen([sys.executable, "-c", worker], cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not child_pid.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        pid = int(child_pid.read_text())
    finally:
        os.killpg(controller.pid, signal.SIGKILL)
        controller.wait(timeout=10)
    deadline = time.monotonic() + 20
    while not (tmp_path / "orphaned").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "orphaned").read_text() == "True"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
