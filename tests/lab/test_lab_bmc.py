"""Each node's virtual BMC speaks real IPMI: ipmitool and fence_ipmilan power the node off and on."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.lab.conftest import LabSession, corral_lab
from updater.lab import containers

pytestmark = pytest.mark.lab


def _ipmitool(
    lab: LabSession, node: str, *args: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    hv = lab.hostvars(node)
    cmd = ["ipmitool", "-I", "lanplus", "-H", str(hv["corral_bmc_address"]), "-p", str(hv["corral_bmc_port"])]
    cmd += ["-U", str(hv["corral_bmc_user"]), "-P", password or str(hv["corral_bmc_password"]), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def _fence(lab: LabSession, node: str, action: str) -> subprocess.CompletedProcess[str]:
    hv = lab.hostvars(node)
    cmd = [
        "fence_ipmilan",
        "--lanplus",
        f"--ip={hv['corral_bmc_address']}",
        f"--ipport={hv['corral_bmc_port']}",
        f"--username={hv['corral_bmc_user']}",
        f"--password={hv['corral_bmc_password']}",
        f"--action={action}",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_ipmi_power_off_takes_the_node_down_and_power_on_brings_it_back(lab: LabSession) -> None:
    node = "node2"
    layout = lab.lab.layout
    try:
        started = time.monotonic()
        off = _ipmitool(lab, node, "chassis", "power", "off")
        assert off.returncode == 0, off.stderr
        containers.wait_state(layout, node, "STOPPED", 30)
        print(f"\n[lab] IPMI power off to node down: {time.monotonic() - started:.2f}s")
        assert f"{node}  off" in corral_lab("--lab", lab.name, "status").stdout
        assert "Chassis Power is off" in _ipmitool(lab, node, "chassis", "power", "status").stdout
        assert "Status: OFF" in _fence(lab, node, "status").stdout

        started = time.monotonic()
        on = _ipmitool(lab, node, "chassis", "power", "on")
        assert on.returncode == 0, on.stderr
        deadline = time.monotonic() + 60
        while lab.lab.status()[1].state != "RUNNING" or not _ssh_ok(lab, node):
            assert time.monotonic() < deadline, f"{node} not SSH-ready 60s after IPMI power on"
            time.sleep(0.1)
        print(f"[lab] IPMI power on to SSH-ready: {time.monotonic() - started:.2f}s")
        assert f"{node}  on" in corral_lab("--lab", lab.name, "status").stdout
    finally:
        lab.reset(node)


def test_fence_ipmilan_reboots_a_node(lab: LabSession) -> None:
    node = "node1"
    boot_id = lab.boot_id(node)
    result = _fence(lab, node, "reboot")
    assert result.returncode == 0, result.stdout + result.stderr
    deadline = time.monotonic() + 60
    while not _ssh_ok(lab, node):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert lab.boot_id(node) != boot_id


def test_a_wrong_bmc_password_is_refused_and_the_node_keeps_running(lab: LabSession) -> None:
    result = _ipmitool(lab, "node3", "chassis", "power", "off", password="not-the-password")
    assert result.returncode != 0
    assert lab.lab.status()[2].state == "RUNNING"


def _ssh_ok(lab: LabSession, node: str) -> bool:
    return (
        subprocess.run(
            lab.lab.ssh_command(node, "true"), capture_output=True, timeout=10, check=False
        ).returncode
        == 0
    )
