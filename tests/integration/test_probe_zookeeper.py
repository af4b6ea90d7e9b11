"""The probe's ZooKeeper client against a real ZooKeeper: clean run, and an outage it must report.

Judged by what the probe recorded, never by how fast it went (this tier runs beside others): each phase lasts
until the probe has recorded what it is waiting for, and the clean run's gap verdict is the lab tier's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.support.zookeeper_server import ZooKeeperServer
from updater.probe.clients import ZooKeeperWriter
from updater.probe.runner import Probe


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait for a condition (the timeout only stops a hang; nothing is judged by it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


def test_zookeeper_writes_succeed_while_the_server_is_up(tmp_path: Path) -> None:
    with ZooKeeperServer(tmp_path / "zk") as server:
        # A deadline no load on a shared machine reaches: a failure here is the client's, not the clock's.
        probe = Probe([ZooKeeperWriter(server.hosts)], interval_s=0.05, deadline_s=30.0)
        probe.start()
        wait_until(lambda: len(probe.operations) >= 10)
        report = probe.stop()
    stats = report.services["zookeeper"]
    assert stats.operations >= 10
    assert stats.failures == 0, stats.errors
    assert not [reason for reason in report.verdicts["zookeeper"].reasons if "failed" in reason]


# A failed operation's retries go on until its deadline, so the gap it leaves is at least this long less one
# retry delay (run_operation's 0.05 s): over ZooKeeper's 1 s target.
OUTAGE_DEADLINE_S = 2.0


def test_negative_control_a_zookeeper_outage_fails_the_probe_and_it_still_stops(tmp_path: Path) -> None:
    with ZooKeeperServer(tmp_path / "zk") as server:
        probe = Probe([ZooKeeperWriter(server.hosts)], interval_s=0.05, deadline_s=OUTAGE_DEADLINE_S)
        probe.start()
        wait_until(lambda: any(op.ok for op in probe.operations))
        server.stop()
        wait_until(lambda: any(not op.ok for op in probe.operations))  # down until an operation failed
        report = probe.stop()  # with the server still down: it must stop (a hang is the test's timeout)
    stats = report.services["zookeeper"]
    assert not report.passed
    assert stats.failures >= 1
    assert stats.longest_gap_s >= OUTAGE_DEADLINE_S - 0.05
    assert any("longest gap" in reason for reason in report.verdicts["zookeeper"].reasons)
