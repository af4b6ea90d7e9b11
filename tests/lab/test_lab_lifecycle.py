"""Labs come and go cleanly: `up` twice is a no-op, two labs coexist, `down` leaves nothing, bad input is
refused with a clear message and nothing half-made."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.conftest import ROOT, VENV_BIN, LabSession, ansible_env, corral_lab, leftovers, side_lab
from updater.lab.image import cache_key
from updater.lab.lab import DEFAULT_ROLES_DIR, DEFAULT_VERSION, Lab
from updater.lab.packages import collect

pytestmark = pytest.mark.lab

SECOND, SCRATCH, NESTED, KILLED = side_lab("b"), side_lab("c"), side_lab("f"), side_lab("k")


def test_up_again_changes_nothing_and_restarts_no_node(lab: LabSession) -> None:
    boot_ids = {n: lab.boot_id(n) for n in ("node1", "node2", "node3")}
    result = lab.lab.up(nodes=3)
    assert not result.changed
    assert {n: lab.boot_id(n) for n in boot_ids} == boot_ids


def test_two_labs_run_side_by_side_and_down_of_one_leaves_the_other_untouched(lab: LabSession) -> None:
    other = Lab(SECOND)
    if (other.root / other.name).exists():
        other.down()
    try:
        result = corral_lab("--lab", SECOND, "up", "--nodes", "1", "--disks", "1", "--disk-size", "1")
        assert result.returncode == 0, result.stderr
        index = other.config().index
        assert index != lab.lab.config().index
        assert other.run_on("node1", "hostname").strip() == "node1"
        assert other.address("node1") != lab.lab.address("node1")
        boot_ids = {n: lab.boot_id(n) for n in ("node1", "node2", "node3")}
    finally:
        down = corral_lab("--lab", SECOND, "down")
    assert down.returncode == 0, down.stderr
    assert leftovers(SECOND, index) == []
    assert {n: lab.boot_id(n) for n in boot_ids} == boot_ids
    assert [s.state for s in lab.lab.status()] == ["RUNNING"] * 3
    assert all("(running)" in s.bmc for s in lab.lab.status())


def test_down_leaves_no_container_mount_loop_device_bridge_bmc_rule_or_cgroup() -> None:
    scratch = Lab(SCRATCH)
    if (scratch.root / scratch.name).exists():
        scratch.down()
    try:
        scratch.up(nodes=1, disks_per_node=2, disk_size_gib=1)
        index = scratch.config().index
        assert not scratch.up(nodes=1).changed  # settings not given are kept, not reset to defaults
        assert leftovers(SCRATCH, index) != []  # the check sees a running lab...
    finally:
        scratch.down()
    assert leftovers(SCRATCH, index) == []  # ...and nothing once it is down
    assert not scratch.down()  # a second down has nothing to do


def test_the_host_neither_forwards_nor_nats_for_the_lab(lab: LabSession) -> None:
    layout = lab.lab.layout
    nat = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=True).stdout
    for rule in nat.splitlines():
        if "MASQUERADE" in rule or "SNAT" in rule:
            # Another tool's NAT (e.g. lxc-net's lxcbr0) must at least be limited to its own sources.
            assert layout.bridge not in rule
            assert "10.77." not in rule
            assert " -s " in rule, f"an unrestricted NAT rule would cover the lab: {rule}"
    forward = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=True).stdout
    assert layout.bridge not in forward
    assert "10.77." not in forward
    assert Path(f"/proc/sys/net/ipv4/conf/{layout.bridge}/forwarding").read_text().strip() == "0"


def test_up_while_another_operation_holds_the_lab_is_refused_at_once(lab: LabSession) -> None:
    with lab.lab.locked("up"):
        result = corral_lab("--lab", lab.name, "up", "--nodes", "3", timeout=30)
    assert result.returncode == 1
    assert f"lab '{lab.name}' is busy: `corral-lab up` (pid" in result.stderr
    assert "nothing was changed" in result.stderr


@pytest.mark.parametrize("nodes", ["0", "100"])
def test_a_bad_node_count_leaves_the_running_lab_as_it_was(lab: LabSession, nodes: str) -> None:
    before = lab.lab.config()
    result = corral_lab("--lab", lab.name, "up", "--nodes", nodes)
    assert result.returncode == 1
    assert f"--nodes {nodes}: a lab has 1 to 12 nodes" in result.stderr
    assert lab.lab.config() == before


def test_changing_the_image_of_a_running_lab_is_refused(lab: LabSession) -> None:
    result = corral_lab("--lab", lab.name, "up", "--nodes", "3", "--image", "e" * 64)
    assert result.returncode == 1
    assert "`--image` cannot change a running lab" in result.stderr
    assert lab.lab.config().image == lab.base_image


def test_shrinking_a_running_lab_is_refused(lab: LabSession) -> None:
    result = corral_lab("--lab", lab.name, "up", "--nodes", "2")
    assert result.returncode == 1
    assert "cannot shrink it" in result.stderr
    assert lab.lab.config().nodes == 3


@pytest.mark.parametrize("args", [["power", "node9", "off"], ["ssh", "node0", "true"], ["boots", "web1"]])
def test_an_unknown_node_is_refused_naming_the_nodes_there_are(lab: LabSession, args: list[str]) -> None:
    result = corral_lab("--lab", lab.name, *args)
    assert result.returncode == 1
    assert "this lab has node1, node2, node3" in result.stderr


def test_an_image_build_with_an_unknown_package_fails_clearly_and_caches_nothing(lab: LabSession) -> None:
    # Other sessions may use the shared store meanwhile: look only for what this build could have left.
    store = lab.lab.images.root
    builds_before = {p.name for p in store.glob(".build-*")}
    key = cache_key(collect(DEFAULT_ROLES_DIR, ("corral-no-such-package",)), DEFAULT_VERSION)
    result = corral_lab("image", "build", "--extra-package", "corral-no-such-package")
    assert result.returncode == 1
    assert "unknown Debian package(s): corral-no-such-package (declared by extra)" in result.stderr
    assert {p.name for p in store.glob(".build-*")} <= builds_before
    assert not (store / "keys" / key).exists()
    assert not any("corral-no-such-package" in m.read_text() for m in store.glob("*/meta.json"))


FAILING_TEST = """
from tests.lab.conftest import lab  # noqa: F401 - the shared fixture, as every lab test uses it


def test_that_fails_while_the_lab_is_up(lab):
    assert lab.lab.status()[0].state == "RUNNING"
    raise AssertionError("deliberate failure")
"""


def test_the_shared_lab_is_torn_down_even_when_a_test_fails(tmp_path: Path) -> None:
    (tmp_path / "test_fails.py").write_text(FAILING_TEST)
    env = {**os.environ, "CORRAL_TEST_LAB_NAME": NESTED, "CORRAL_TEST_LAB_NODES": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_fails.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 1, result.stdout[-3000:]
    assert "deliberate failure" in result.stdout
    assert "1 failed" in result.stdout
    assert leftovers(NESTED, None) == []


def test_a_second_session_refuses_to_take_over_a_lab_in_use(lab: LabSession, tmp_path: Path) -> None:
    (tmp_path / "test_second.py").write_text(FAILING_TEST)
    env = {**os.environ, "CORRAL_TEST_LAB_NAME": lab.name}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_second.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    assert f"lab '{lab.name}' is in use by another test session (pid {os.getpid()})" in result.stdout
    assert [s.state for s in lab.lab.status()] == ["RUNNING"] * 3


HANGING_TEST = """
import time

from tests.lab.conftest import lab  # noqa: F401 - the shared fixture, as every lab test uses it


def test_that_hangs_while_the_lab_is_up(lab):
    print("LAB-IS-UP", flush=True)
    time.sleep(600)
"""


def test_the_shared_lab_is_torn_down_when_the_run_is_killed_with_sigterm(tmp_path: Path) -> None:
    (tmp_path / "test_hangs.py").write_text(HANGING_TEST)
    env = {**os.environ, "CORRAL_TEST_LAB_NAME": KILLED, "CORRAL_TEST_LAB_NODES": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_hangs.py"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if "LAB-IS-UP" in line:
                break
        assert Lab(KILLED).exists()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert leftovers(KILLED, None) == []


PLAYBOOK_LAB = side_lab("p")


def _lab_playbook(*extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "corral.cloud.lab",
            "-e",
            f"lab_name={PLAYBOOK_LAB}",
            "-e",
            "lab_nodes=1",
            "-e",
            "lab_disk_size_gib=1",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=ansible_env(),
        check=False,
    )


def test_the_lab_playbook_brings_a_lab_up_idempotently_and_removes_all_of_it(lab: LabSession) -> None:
    """``ansible-playbook corral.cloud.lab`` (role ``lab``) as ops run it: up, up again (no change), a node
    that answers Ansible through the inventory it wrote, then ``lab_state=absent`` leaving nothing."""
    image = ("-e", f"lab_image={lab.base_image}")
    try:
        first = _lab_playbook(*image)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
        assert re.search(r"localhost\s*:.*changed=[1-9]", first.stdout), first.stdout[-2000:]
        inventory = re.search(rf"lab {PLAYBOOK_LAB}: inventory (\S+), image {lab.base_image}", first.stdout)
        assert inventory, first.stdout[-2000:]
        again = _lab_playbook(*image)
        assert again.returncode == 0, again.stdout[-3000:]
        assert re.search(r"localhost\s*:.*changed=0", again.stdout), again.stdout[-2000:]
        ping = subprocess.run(
            [str(VENV_BIN / "ansible"), "-i", inventory.group(1), "nodes", "-m", "ansible.builtin.ping"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env=ansible_env(),
            check=False,
        )
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert re.search(r'ping"?: "?pong', ping.stdout), ping.stdout  # JSON or YAML result format
    finally:
        gone = _lab_playbook("-e", "lab_state=absent")
    assert gone.returncode == 0, gone.stdout[-3000:] + gone.stderr[-2000:]
    assert leftovers(PLAYBOOK_LAB, None) == []
