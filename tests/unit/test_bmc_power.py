"""Power backends of the virtual BMC, on real processes and the real lxc tools (no servers)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from updater.lab.bmc import CompletionCode, LxcPower, PowerControl, PowerError, SubprocessPower
from updater.lab.bmc.power import lxc_state_is_on, parse_lxc_state

# A node whose process group has two members, so a hard off must kill the whole group.
NODE = ["sh", "-c", "sleep 300 & wait"]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[SubprocessPower]:
    power = SubprocessPower(NODE, tmp_path / "node.pid", cycle_off_seconds=0.2)
    yield power
    power.power_off()


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait for a condition; the timeout only stops a hang (this tier shares the machine with others)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_both_backends_implement_the_protocol(tmp_path: Path) -> None:
    assert isinstance(SubprocessPower(["true"], tmp_path / "p"), PowerControl)
    assert isinstance(LxcPower(tmp_path, "node1"), PowerControl)


def test_node_is_off_until_powered_on(node: SubprocessPower) -> None:
    assert not node.is_on()
    assert not node.pidfile.exists()


def test_power_on_starts_the_node_in_its_own_session(node: SubprocessPower) -> None:
    node.power_on()
    pid = node.pid()
    assert pid is not None
    assert node.is_on()
    assert os.getpgid(pid) == pid
    assert os.getsid(pid) == pid
    wait_for(lambda: len(group_members(pid)) == 2)
    assert node.pidfile.read_text().split()[0] == str(pid)


def test_power_on_of_a_running_node_is_a_no_op(node: SubprocessPower) -> None:
    node.power_on()
    first = node.pid()
    node.power_on()
    assert node.pid() == first


def test_power_off_kills_the_whole_process_group(node: SubprocessPower) -> None:
    node.power_on()
    pid = node.pid()
    assert pid is not None
    wait_for(lambda: len(group_members(pid)) == 2)
    node.power_off()
    assert not node.is_on()
    assert group_members(pid) == []
    assert not node.pidfile.exists()


def test_power_off_of_a_stopped_node_is_a_no_op(node: SubprocessPower) -> None:
    node.power_off()
    assert not node.is_on()


def test_power_cycle_restarts_after_the_off_interval(tmp_path: Path) -> None:
    off_intervals: list[tuple[float, bool]] = []
    node = SubprocessPower(
        NODE,
        tmp_path / "node.pid",
        cycle_off_seconds=0.2,
        sleep=lambda seconds: off_intervals.append((seconds, node.is_on())),
    )
    node.power_on()
    before = node.pid()
    node.power_cycle()
    assert off_intervals == [(0.2, False)]  # off for the whole interval, then on again
    assert node.is_on()
    assert node.pid() != before
    node.power_off()


def test_reset_restarts_the_node(node: SubprocessPower) -> None:
    node.power_on()
    before = node.pid()
    node.reset()
    assert node.is_on()
    assert node.pid() != before


def test_shutdown_asks_the_node_to_stop_and_returns_at_once(tmp_path: Path) -> None:
    # A node that shuts down on SIGTERM only once the test lets it finish, as an OS takes its time: if
    # shutdown() waited for the node to stop it would never return.
    ready, finish = tmp_path / "ready", tmp_path / "finish"
    node = (
        f"trap 'while [ ! -e {finish} ]; do sleep 0.01; done; kill $!; exit 0' TERM; "
        f"sleep 300 & touch {ready}; wait"
    )
    power = SubprocessPower(["sh", "-c", node], tmp_path / "n.pid")
    power.power_on()
    wait_for(ready.exists)  # the trap is installed
    power.shutdown()
    assert power.is_on()  # still shutting down: shutdown() did not wait for it
    finish.touch()
    wait_for(lambda: not power.is_on())
    power.power_off()


def test_a_node_that_died_by_itself_is_off(node: SubprocessPower) -> None:
    node.power_on()
    pid = node.pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not node.is_on())


def test_a_restarted_bmc_sees_the_node_and_can_power_it_off(node: SubprocessPower) -> None:
    node.power_on()
    pid = node.pid()
    other_bmc = SubprocessPower(NODE, node.pidfile)
    assert other_bmc.is_on()
    assert other_bmc.pid() == pid
    other_bmc.power_off()
    assert not node.is_on()


def test_a_reused_pid_is_not_the_node(tmp_path: Path) -> None:
    pidfile = tmp_path / "node.pid"
    pidfile.write_text(f"{os.getpid()} 1\n")  # our pid, but not our start time
    power = SubprocessPower(NODE, pidfile)
    assert not power.is_on()
    power.power_off()  # must not kill the test process
    assert power.pid() is None


def test_a_corrupt_pid_file_is_an_error(tmp_path: Path) -> None:
    pidfile = tmp_path / "node.pid"
    pidfile.write_text("garbage\n")
    with pytest.raises(PowerError, match="is not '<pid> <start time>'") as failed:
        SubprocessPower(NODE, pidfile).is_on()
    assert failed.value.completion_code is CompletionCode.UNSPECIFIED_ERROR


def test_a_node_command_that_cannot_run_is_an_error_and_leaves_it_off(tmp_path: Path) -> None:
    power = SubprocessPower([str(tmp_path / "no-such-program")], tmp_path / "node.pid")
    with pytest.raises(PowerError, match="cannot start"):
        power.power_on()
    assert not power.is_on()
    assert not power.pidfile.exists()


def test_subprocess_power_validates_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        SubprocessPower([], tmp_path / "p")
    with pytest.raises(ValueError, match="must be absolute"):
        SubprocessPower(["sleep", "1"], Path("node.pid"))


@pytest.mark.parametrize(
    ("output", "state"),
    [
        ("State:          RUNNING\n", "RUNNING"),
        ("State:          STOPPED\n", "STOPPED"),
        ("State: FROZEN", "FROZEN"),
    ],
)
def test_lxc_info_state_is_parsed(output: str, state: str) -> None:
    assert parse_lxc_state(output) == state


@pytest.mark.parametrize("output", ["", "node1 doesn't exist\n", "State: EXPLODED\n"])
def test_unexpected_lxc_info_output_is_an_error(output: str) -> None:
    with pytest.raises(PowerError, match="unexpected lxc-info output"):
        parse_lxc_state(output)


@pytest.mark.parametrize(
    ("state", "on"),
    [("STOPPED", False), ("RUNNING", True), ("STARTING", True), ("STOPPING", True), ("FROZEN", True)],
)
def test_every_lxc_state_but_stopped_is_power_on(state: str, on: bool) -> None:
    assert lxc_state_is_on(state) is on


def test_lxc_power_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="must be absolute"):
        LxcPower(Path("lxc"), "node1")
    with pytest.raises(ValueError, match="container name"):
        LxcPower(Path("/srv/lxc"), "node1; reboot")
    with pytest.raises(ValueError, match="container name"):
        LxcPower(Path("/srv/lxc"), "node1\n")


def test_lxc_tool_errors_become_completion_codes(tmp_path: Path) -> None:
    # The real lxc tools, asked about a container that does not exist.
    power = LxcPower(tmp_path, "ghost")
    with pytest.raises(PowerError, match="lxc-info ghost failed: ghost doesn't exist") as failed:
        power.is_on()
    assert failed.value.completion_code is CompletionCode.UNSPECIFIED_ERROR
    for action in (power.power_on, power.power_off, power.power_cycle, power.reset, power.shutdown):
        with pytest.raises(PowerError, match="doesn't exist"):
            action()
    assert list(tmp_path.iterdir()) == []
