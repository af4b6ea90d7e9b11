"""The availability probe against a real HTTP server on loopback, including a negative control.

The negative control matters as much as the clean run: a probe that cannot report an outage proves
nothing, so stopping the server mid-run must show up as failures or a gap over target.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.net import free_port

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


def run_probe(server: HttpServer, report: Path, duration: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            str(PROBE),
            "--vip-url",
            f"http://127.0.0.1:{server.port}/",
            "--duration",
            str(duration),
            "--deadline",
            "1",
            "--report",
            str(report),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_probe_passes_when_the_service_stays_up(http_server: HttpServer, tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    proc = run_probe(http_server, report_file, duration=2)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    report = json.loads(report_file.read_text())
    vip = report["services"]["vip"]
    assert report["passed"] is True
    assert vip["failures"] == 0
    assert vip["operations"] >= 10
    assert vip["longest_gap_s"] < 1.0


def test_negative_control_an_outage_fails_the_probe(http_server: HttpServer, tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    proc = run_probe(http_server, report_file, duration=5)
    time.sleep(1.5)
    http_server.stop()
    time.sleep(2.0)  # longer than the 1 s operation deadline: operations must fail
    http_server.start()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    report = json.loads(report_file.read_text())
    vip = report["services"]["vip"]
    assert report["passed"] is False
    assert vip["failures"] >= 1
    assert vip["retries"] >= 1
    assert vip["longest_gap_s"] >= 1.9
    assert "FAILED" in out


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
