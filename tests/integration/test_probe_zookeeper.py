"""The probe's ZooKeeper client against a real ZooKeeper: clean run, and an outage it must report."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.zookeeper_server import ZooKeeperServer
from updater.probe.clients import ZooKeeperWriter
from updater.probe.runner import Probe


def test_zookeeper_writes_pass_while_the_server_is_up(tmp_path: Path) -> None:
    with ZooKeeperServer(tmp_path / "zk") as server:
        probe = Probe([ZooKeeperWriter(server.hosts)], interval_s=0.05, deadline_s=2.0)
        probe.start()
        time.sleep(2.0)
        report = probe.stop()
    stats = report.services["zookeeper"]
    assert report.passed, report.verdicts
    assert stats.operations >= 10
    assert stats.failures == 0


def test_negative_control_a_zookeeper_outage_fails_the_probe_and_it_still_stops(tmp_path: Path) -> None:
    with ZooKeeperServer(tmp_path / "zk") as server:
        probe = Probe([ZooKeeperWriter(server.hosts)], interval_s=0.05, deadline_s=1.0)
        probe.start()
        time.sleep(1.0)
        server.stop()
        time.sleep(2.5)  # longer than the 1 s deadline: operations fail while it is down
        stopping = time.monotonic()
        report = probe.stop()  # with the server still down: stopping must stay bounded
        stop_seconds = time.monotonic() - stopping
    stats = report.services["zookeeper"]
    assert not report.passed
    assert stats.failures >= 1
    assert stats.longest_gap_s >= 2.0
    assert stop_seconds < 60, f"the probe hung for {stop_seconds:.1f} s on stop with ZooKeeper down"
