"""The availability probe against a real HTTP server on loopback, including a negative control.

The negative control matters as much as the clean run: a probe that cannot report an outage proves
nothing, so stopping the server mid-run must show up as failures and a gap over target.

This tier runs beside others on a shared machine, so nothing here is judged by how fast it went: the outage
lasts until the probe has recorded a failed operation (not a fixed sleep), the clean run allows operations
a deadline no load reaches, and the clean run's gap is printed, not judged (the lab tier judges gaps).
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.net import free_port
from updater.probe.clients import HttpCheck
from updater.probe.runner import Probe

PROBE = Path(sys.executable).with_name("corral-probe")


class HttpServer:
    def __init__(self, port: int, root: Path) -> None:
        self.port, self.root = port, root
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "-d",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("HTTP server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    (tmp_path / "index.html").write_text("ok")
    server = HttpServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


def run_probe(server: HttpServer, report: Path, duration: float, deadline: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            str(PROBE),
            "--vip-url",
            f"http://127.0.0.1:{server.port}/",
            "--duration",
            str(duration),
            "--deadline",
            str(deadline),
            "--report",
            str(report),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait for a condition (the timeout only stops a hang; nothing is judged by it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


def test_probe_reports_no_failure_while_the_service_stays_up(http_server: HttpServer, tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    proc = run_probe(http_server, report_file, duration=2, deadline=30)
    out, _ = proc.communicate(timeout=120)
    report = json.loads(report_file.read_text())
    vip = report["services"]["vip"]
    assert proc.returncode == (0 if report["passed"] else 1), out
    assert vip["failures"] == 0, out
    assert vip["operations"] >= 1
    assert not [reason for reason in report["verdicts"]["vip"]["reasons"] if "failed" in reason]
    print(f"\nprobe over loopback HTTP: longest gap {vip['longest_gap_s']:.3f} s in {report['duration_s']} s")


# The failed operation's deadline: retries of a refused connection go on until then, so the gap it leaves
# is at least this long less one retry delay (run_operation's 0.05 s), over the VIP's 1 s target.
OUTAGE_DEADLINE_S = 2.0


def test_negative_control_an_outage_fails_the_probe(http_server: HttpServer) -> None:
    probe = Probe(
        [HttpCheck(f"http://127.0.0.1:{http_server.port}/")], interval_s=0.05, deadline_s=OUTAGE_DEADLINE_S
    )

    def recorded(ok: bool, after: int = 0) -> bool:
        return any(op.ok is ok for op in probe.operations[after:])

    probe.start()
    try:
        wait_until(lambda: recorded(ok=True))
        http_server.stop()
        wait_until(lambda: recorded(ok=False))  # the outage lasts until an operation has failed
        failed_by = len(probe.operations)
        http_server.start()
        wait_until(lambda: recorded(ok=True, after=failed_by))  # and the probe sees the service back
    finally:
        report = probe.stop()
    vip = report.services["vip"]
    assert not report.passed
    assert vip.failures >= 1
    assert vip.retries >= 1  # a refused connection is retried within the operation's deadline
    assert vip.longest_gap_s >= OUTAGE_DEADLINE_S - 0.05
    reasons = report.verdicts["vip"].reasons
    assert any("failed operations" in reason for reason in reasons), reasons
    assert any("longest gap" in reason for reason in reasons), reasons


class FailingAfterSetup(http.server.BaseHTTPRequestHandler):
    """A service up for the probe's setup request, then answering 503 to everything: every operation fails."""

    answered = 0

    def do_GET(self) -> None:
        type(self).answered += 1
        self.send_response(200 if type(self).answered == 1 else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_probe_command_fails_and_says_so_when_operations_fail(tmp_path: Path) -> None:
    handler = type("Handler", (FailingAfterSetup,), {"answered": 0})  # a count of its own
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        report_file = tmp_path / "report.json"
        argv = [
            str(PROBE),
            "--vip-url",
            url,
            "--duration",
            "1",
            "--deadline",
            "1",
            "--report",
            str(report_file),
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED" in proc.stdout
    assert json.loads(report_file.read_text())["passed"] is False


def test_probe_refuses_to_start_without_a_service() -> None:
    proc = subprocess.run([str(PROBE), "--duration", "1"], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "name at least one service" in proc.stderr


def test_probe_reports_a_service_it_cannot_reach_at_start(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(PROBE), "--vip-url", f"http://127.0.0.1:{free_port()}/", "--duration", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "could not set up the clients" in proc.stderr
