"""The lab's virtual BMC as fencing code sees it: the real BMC process on a loopback address, driven by the
real ``ipmitool -I lanplus`` and ``fence_ipmilan``, powering a real process (a ``SubprocessPower`` node; the
lab tier drives LXC containers end to end)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from updater.lab.bmc import (
    BmcConfigError,
    BmcStartError,
    SubprocessPower,
    running_bmc_pid,
    start_bmc_process,
    stop_bmc_process,
)

USER = "fencer"
PASSWORD = "Corral-lab-2026!"
NODE_COMMAND = "sh -c 'sleep 3600 & wait'"  # two processes in the node's group


def free_loopback_address() -> str:
    """A 127.77.251-254.x address whose port 623/udp is free (above the lab's 127.77.1-250 range)."""
    for _ in range(200):
        address = f"127.77.{251 + secrets.randbelow(4)}.{1 + secrets.randbelow(254)}"
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((address, 623))
        except OSError:
            continue
        finally:
            probe.close()
        return address
    raise AssertionError("no free 127.77.25x.y:623")


def secret_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


@dataclass
class Bmc:
    address: str
    pid: int
    pidfile: Path
    log: Path
    password_file: Path
    node: SubprocessPower
    tmp: Path

    def ipmitool(
        self, *args: str, user: str = USER, password_file: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = ["ipmitool", "-I", "lanplus", "-H", self.address, "-p", "623", "-U", user]
        argv += ["-f", str(password_file or self.password_file), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    def power(self, action: str) -> str:
        result = self.ipmitool("chassis", "power", action)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def fence(self, action: str, **extra: str) -> subprocess.CompletedProcess[str]:
        # Options on stdin, as pacemaker passes them: the password is not on our command line.
        options = {"ip": self.address, "ipport": "623", "lanplus": "1", "username": USER, "action": action}
        options |= {"password": PASSWORD, **extra}
        stdin = "".join(f"{key}={value}\n" for key, value in options.items())
        return subprocess.run(
            ["fence_ipmilan"], input=stdin, capture_output=True, text=True, timeout=120, check=False
        )

    def log_text(self) -> str:
        return self.log.read_text()


def start(tmp: Path, address: str | None = None, **extra: object) -> Bmc:
    address = address or free_loopback_address()
    password_file = secret_file(tmp / "bmc-password", PASSWORD)
    node_pidfile = tmp / "node.pid"
    pidfile, log = tmp / "bmc.pid", tmp / "bmc.log"
    pid = start_bmc_process(
        address=address,
        user=USER,
        password_file=password_file,
        pidfile=pidfile,
        log_file=log,
        process_command=NODE_COMMAND,
        process_pidfile=node_pidfile,
        **extra,  # type: ignore[arg-type]
    )
    node = SubprocessPower(["unused"], node_pidfile)  # reads the node's state the BMC keeps in node_pidfile
    return Bmc(address, pid, pidfile, log, password_file, node, tmp)


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[Bmc]:
    running = start(tmp_path)
    yield running
    stop_bmc_process(running.pidfile)
    running.node.power_off()


def node_processes(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                found.append(int(entry.name))
    return found


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Wait for a condition; the timeout only stops a hang (this tier shares the machine with others)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def port_is_free(address: str) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((address, 623))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def test_binds_a_127_77_address_that_no_interface_carries(bmc: Bmc) -> None:
    addresses = subprocess.run(
        ["ip", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    assert bmc.address not in addresses
    assert not port_is_free(bmc.address)
    assert bmc.power("status") == "Chassis Power is off"


def test_power_on_starts_the_node_and_status_reports_it(bmc: Bmc) -> None:
    assert bmc.power("on") == "Chassis Power Control: Up/On"
    pid = bmc.node.pid()
    assert pid is not None
    assert wait_until(lambda: len(node_processes(pid)) == 2)
    assert bmc.power("status") == "Chassis Power is on"
    assert bmc.power("on") == "Chassis Power Control: Up/On"  # already on: a no-op
    assert bmc.node.pid() == pid


def test_power_off_is_a_hard_off_of_the_whole_node(bmc: Bmc) -> None:
    bmc.power("on")
    pid = bmc.node.pid()
    assert pid is not None
    assert wait_until(lambda: len(node_processes(pid)) == 2)
    assert bmc.power("off") == "Chassis Power Control: Down/Off"
    assert node_processes(pid) == []
    assert bmc.power("status") == "Chassis Power is off"
    assert bmc.power("off") == "Chassis Power Control: Down/Off"  # already off: a no-op


def test_power_cycle_restarts_the_node_once_even_when_ipmitool_retransmits(tmp_path: Path) -> None:
    # A 2.5 s off time with a 1 s retransmit interval: ipmitool sends the request again while it runs.
    bmc = start(tmp_path, cycle_off_seconds=2.5)
    try:
        bmc.power("on")
        before = bmc.node.pid()
        result = bmc.ipmitool("-N", "1", "-R", "5", "chassis", "power", "cycle")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "Chassis Power Control: Cycle"
        after = bmc.node.pid()
        assert after is not None
        assert after != before
        log = bmc.log_text()
        assert log.count("power cycle (node was on)") == 1
        assert "retransmitted request" in log
    finally:
        stop_bmc_process(bmc.pidfile)
        bmc.node.power_off()


def test_reset_restarts_the_node(bmc: Bmc) -> None:
    bmc.power("on")
    before = bmc.node.pid()
    assert bmc.power("reset") == "Chassis Power Control: Reset"
    assert bmc.node.pid() not in (None, before)


def test_soft_off_asks_the_node_to_shut_down(bmc: Bmc) -> None:
    bmc.power("on")
    assert bmc.power("soft") == "Chassis Power Control: Soft"
    assert wait_until(lambda: not bmc.node.is_on())
    assert bmc.power("status") == "Chassis Power is off"


@pytest.mark.parametrize("action", ["cycle", "reset"])
def test_cycle_or_reset_of_a_node_that_is_off_is_refused_and_leaves_it_off(bmc: Bmc, action: str) -> None:
    result = bmc.ipmitool("chassis", "power", action)
    assert result.returncode != 0
    assert "Command not supported in present state" in result.stderr
    assert not bmc.node.is_on()


def test_wrong_password_is_refused_by_the_protocol(bmc: Bmc) -> None:
    bmc.power("on")
    wrong = secret_file(bmc.tmp / "wrong-password", "not-the-password")
    result = bmc.ipmitool("-v", "chassis", "power", "off", password_file=wrong)
    assert result.returncode != 0
    assert "RAKP 2 HMAC is invalid" in result.stderr
    assert "Unable to establish IPMI v2 / RMCP+ session" in result.stderr
    assert bmc.node.is_on()


def test_unknown_user_is_refused_at_once(bmc: Bmc) -> None:
    bmc.power("on")
    result = bmc.ipmitool("-v", "chassis", "power", "off", user="intruder")
    assert result.returncode != 0
    # The BMC's own RAKP 2 status: a silent BMC (pyghmi's way) leaves ipmitool to time out without one.
    assert "unauthorized name" in result.stderr
    assert bmc.node.is_on()
    assert "login refused from 127.0.0.1" in bmc.log_text()
    assert "unknown user b'intruder'" in bmc.log_text()


@pytest.mark.parametrize(
    ("raw", "answer"),
    [
        (["0x30", "0x01"], "rsp=0xc1): Invalid command"),  # an OEM netfn
        (["0x06", "0x04"], "rsp=0xc1): Invalid command"),  # Get Self Test Results: not served
        (["0x00", "0x02", "0x09"], "rsp=0xcc): Invalid data field in request"),
        (["0x00", "0x02", "0x04"], "rsp=0xcc): Invalid data field in request"),  # NMI
        (["0x00", "0x02"], "rsp=0xc7): Request data length invalid"),
    ],
)
def test_unknown_or_malformed_commands_get_an_ipmi_error_and_the_bmc_keeps_serving(
    bmc: Bmc, raw: list[str], answer: str
) -> None:
    result = bmc.ipmitool("raw", *raw)
    assert result.returncode != 0
    assert answer in result.stderr
    assert bmc.power("status") == "Chassis Power is off"


def test_garbage_datagrams_do_not_take_the_bmc_down(bmc: Bmc) -> None:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for datagram in [
            b"",
            b"\x06",
            os.urandom(64),
            b"\x06\x00\xff\x07\x06\x10" + b"\x00" * 16,  # open session request, truncated
            b"\x06\x00\xff\x07\x06\x12" + b"\x00" * 40,  # RAKP 1 outside any session
            b"\x06\x00\xff\x07\x06\x14" + b"\x00" * 10,  # RAKP 3 outside any session
            b"\x06\x00\xff\x07\x00" + os.urandom(40),  # IPMI 1.5 noise
        ]:
            sender.sendto(datagram, (bmc.address, 623))
    finally:
        sender.close()
    assert bmc.power("status") == "Chassis Power is off"
    assert running_bmc_pid(bmc.pidfile) == bmc.pid


def test_device_id_and_guid_are_served(bmc: Bmc) -> None:
    info = bmc.ipmitool("mc", "info")
    assert info.returncode == 0, info.stderr
    assert "IPMI Version              : 2.0" in info.stdout
    assert "Chassis Device" in info.stdout
    guid = bmc.ipmitool("mc", "guid")
    assert guid.returncode == 0, guid.stderr
    assert "GUID Encoding : IPMI" in guid.stdout


def test_fence_ipmilan_reads_status_and_fences_off_and_on(bmc: Bmc) -> None:
    status = bmc.fence("status")
    assert status.returncode == 2, status.stderr  # fence agents: 2 = off
    assert "Status: OFF" in status.stdout
    on = bmc.fence("on")
    assert on.returncode == 0, on.stderr
    assert bmc.node.is_on()
    assert bmc.fence("status").returncode == 0
    pid = bmc.node.pid()
    assert pid is not None
    off = bmc.fence("off")
    assert off.returncode == 0, off.stderr
    assert "Success: Powered OFF" in off.stdout
    assert node_processes(pid) == []


@pytest.mark.parametrize("method", ["onoff", "cycle"])
def test_fence_ipmilan_reboot_restarts_the_node(bmc: Bmc, method: str) -> None:
    bmc.power("on")
    before = bmc.node.pid()
    result = bmc.fence("reboot", method=method, power_wait="1")
    assert result.returncode == 0, result.stderr
    assert "Success: Rebooted" in result.stdout
    assert bmc.node.pid() not in (None, before)


def test_fence_ipmilan_with_a_wrong_password_fails(bmc: Bmc) -> None:
    bmc.power("on")
    result = bmc.fence("off", password="wrong-password")
    assert result.returncode != 0
    assert bmc.node.is_on()


def test_the_password_is_neither_on_the_command_line_nor_in_the_log(bmc: Bmc) -> None:
    bmc.power("on")
    bmc.ipmitool("chassis", "power", "status", password_file=secret_file(bmc.tmp / "wrong", "guess"))
    cmdline = Path(f"/proc/{bmc.pid}/cmdline").read_bytes()
    assert PASSWORD.encode() not in cmdline
    assert b"--password-file" in cmdline
    assert PASSWORD not in bmc.log_text()
    assert "guess" not in bmc.log_text()


def test_each_power_command_is_logged(bmc: Bmc) -> None:
    bmc.power("on")
    bmc.power("off")
    log = bmc.log_text()
    assert "chassis control from 127.0.0.1:" in log
    assert "power on (node was off)" in log
    assert "power off (node was on)" in log


def test_sigterm_stops_the_bmc_cleanly_and_leaves_the_node_running(tmp_path: Path) -> None:
    address = free_loopback_address()
    password_file = secret_file(tmp_path / "pw", PASSWORD)
    node_pidfile, pidfile = tmp_path / "node.pid", tmp_path / "bmc.pid"
    argv = [sys.executable, "-m", "updater.lab.bmc", "--address", address, "--user", USER]
    argv += ["--password-file", str(password_file), "--process-command", NODE_COMMAND]
    argv += ["--process-pidfile", str(node_pidfile), "--pidfile", str(pidfile)]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    node = SubprocessPower(["unused"], node_pidfile)
    try:
        assert wait_until(lambda: running_bmc_pid(pidfile) == process.pid)
        bmc = Bmc(address, process.pid, pidfile, tmp_path / "unused.log", password_file, node, tmp_path)
        bmc.power("on")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0  # a bound on a hang, not a measure of how fast it stops
        assert "SIGTERM received: stopping" in process.stderr.read()  # type: ignore[union-attr]
        assert not pidfile.exists()
        assert port_is_free(address)
        assert node.is_on()  # a BMC going away does not power the node off
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()  # type: ignore[union-attr]
        node.power_off()


def test_sessions_abandoned_after_a_wrong_password_are_dropped(tmp_path: Path) -> None:
    address = free_loopback_address()
    password_file = secret_file(tmp_path / "pw", PASSWORD)
    log = tmp_path / "bmc.log"
    argv = [sys.executable, "-m", "updater.lab.bmc", "--address", address, "--user", USER]
    argv += ["--password-file", str(password_file), "--process-command", NODE_COMMAND]
    argv += ["--process-pidfile", str(tmp_path / "node.pid"), "--pidfile", str(tmp_path / "bmc.pid")]
    argv += ["--session-idle-seconds", "1"]
    with log.open("wb") as log_out:
        process = subprocess.Popen(argv, stderr=log_out)
    bmc = Bmc(
        address,
        process.pid,
        tmp_path / "bmc.pid",
        log,
        password_file,
        SubprocessPower(["x"], tmp_path / "n"),
        tmp_path,
    )
    try:
        assert wait_until(lambda: running_bmc_pid(bmc.pidfile) == process.pid)
        wrong = secret_file(tmp_path / "wrong", "not-it")
        for _ in range(10):
            assert bmc.ipmitool("chassis", "power", "status", password_file=wrong).returncode != 0

        def dropped() -> int:
            return sum(
                int(line.split("dropped ")[1].split()[0])
                for line in log.read_text().splitlines()
                if "dropped " in line
            )

        assert wait_until(lambda: dropped() >= 10), log.read_text()
        assert bmc.power("status") == "Chassis Power is off"
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0


def test_a_restarted_bmc_finds_the_node_as_it_was(bmc: Bmc) -> None:
    bmc.power("on")
    pid = bmc.node.pid()
    assert stop_bmc_process(bmc.pidfile) is True
    assert stop_bmc_process(bmc.pidfile) is False  # nothing left to stop
    assert bmc.node.pid() == pid
    again = start(bmc.tmp, address=bmc.address)
    assert again.power("status") == "Chassis Power is on"
    assert again.power("off") == "Chassis Power Control: Down/Off"
    assert pid is not None
    assert node_processes(pid) == []


def test_start_refuses_a_password_file_others_can_read_and_starts_nothing(tmp_path: Path) -> None:
    address = free_loopback_address()
    password_file = secret_file(tmp_path / "pw", PASSWORD)
    password_file.chmod(0o644)
    with pytest.raises(BmcConfigError, match="mode 0644"):
        start_bmc_process(
            address=address,
            user=USER,
            password_file=password_file,
            pidfile=tmp_path / "bmc.pid",
            log_file=tmp_path / "bmc.log",
            process_command=NODE_COMMAND,
            process_pidfile=tmp_path / "node.pid",
        )
    assert not (tmp_path / "bmc.pid").exists()
    assert not (tmp_path / "bmc.log").exists()
    assert port_is_free(address)


def test_start_with_a_log_in_a_missing_directory_fails_and_starts_nothing(tmp_path: Path) -> None:
    address = free_loopback_address()
    with pytest.raises(BmcStartError, match=r"cannot open the BMC log .*No such file or directory"):
        start_bmc_process(
            address=address,
            user=USER,
            password_file=secret_file(tmp_path / "pw", PASSWORD),
            pidfile=tmp_path / "bmc.pid",
            log_file=tmp_path / "missing" / "bmc.log",
            process_command=NODE_COMMAND,
            process_pidfile=tmp_path / "node.pid",
        )
    assert not (tmp_path / "bmc.pid").exists()
    assert port_is_free(address)


def test_start_on_a_taken_address_fails_with_the_reason_and_leaves_nothing(bmc: Bmc, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(BmcStartError, match="Address already in use"):
        start(other, address=bmc.address)
    assert not (other / "bmc.pid").exists()
    assert running_bmc_pid(bmc.pidfile) == bmc.pid


def test_a_second_bmc_on_the_same_pid_file_is_refused(bmc: Bmc) -> None:
    with pytest.raises(BmcStartError, match=f"already running from .* \\(pid {bmc.pid}\\)"):
        start(bmc.tmp)
    assert running_bmc_pid(bmc.pidfile) == bmc.pid


def test_lxc_tool_errors_are_answered_with_a_completion_code_not_a_crash(tmp_path: Path) -> None:
    password_file = secret_file(tmp_path / "pw", PASSWORD)
    lxcpath = tmp_path / "lxc"
    lxcpath.mkdir()
    pidfile = tmp_path / "bmc.pid"
    address = free_loopback_address()
    pid = start_bmc_process(
        address=address,
        user=USER,
        password_file=password_file,
        pidfile=pidfile,
        log_file=tmp_path / "bmc.log",
        lxcpath=lxcpath,
        name="ghost",
    )
    bmc = Bmc(
        address,
        pid,
        pidfile,
        tmp_path / "bmc.log",
        password_file,
        SubprocessPower(["unused"], tmp_path / "unused.pid"),
        tmp_path,
    )
    try:
        status = bmc.ipmitool("chassis", "power", "status")
        assert status.returncode != 0
        assert "Unspecified error" in status.stderr
        on = bmc.ipmitool("chassis", "power", "on")
        assert on.returncode != 0
        assert "Unspecified error" in on.stderr
        assert "ghost doesn't exist" in bmc.log_text()
        assert bmc.ipmitool("mc", "info").returncode == 0
        assert running_bmc_pid(pidfile) == pid
    finally:
        stop_bmc_process(pidfile)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_figures_status_round_trip_startup_and_bmc_memory(bmc: Bmc, tmp_path: Path) -> None:
    """Prints figures (run with -s); asserts only that every request succeeded."""
    rss_start = rss_kib(bmc.pid)
    samples = []
    for _ in range(50):
        started = time.perf_counter()
        bmc.power("status")
        samples.append(time.perf_counter() - started)
    for _ in range(150):
        bmc.power("status")
    rss_after = rss_kib(bmc.pid)
    samples.sort()
    median, p95 = statistics.median(samples) * 1000, samples[int(len(samples) * 0.95)] * 1000

    # The same request 200 times inside one session (ipmitool exec): the BMC's share of the round trip.
    script = tmp_path / "commands"
    script.write_text("chassis power status\n" * 200)
    started = time.perf_counter()
    batch = bmc.ipmitool("exec", str(script))
    in_session = (time.perf_counter() - started) / 200
    assert batch.returncode == 0, batch.stderr
    assert batch.stdout.count("Chassis Power is off") == 200

    other = tmp_path / "startup"
    other.mkdir()
    started = time.perf_counter()
    second = start(other)
    startup = time.perf_counter() - started
    stop_bmc_process(second.pidfile)
    print(
        f"\nBMC figures: ipmitool lanplus chassis power status, new RMCP+ session each (n={len(samples)}): "
        f"median {median:.1f} ms, p95 {p95:.1f} ms, max {samples[-1] * 1000:.1f} ms; "
        f"in one session: {in_session * 1000:.2f} ms per request (n=200); "
        f"start_bmc_process until listening: {startup:.2f} s; "
        f"BMC RSS {rss_start} KiB at start, {rss_after} KiB after 200 sessions"
    )
