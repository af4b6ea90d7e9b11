"""Lab nodes are real Linux nodes: Ansible reaches them, they reboot like servers, and the persistence
contract keeps exactly the persisted paths across a reboot."""

from __future__ import annotations

import pytest

from tests.lab.conftest import LabSession

pytestmark = pytest.mark.lab

UNIT = """[Unit]
Description=Corral lab test: a unit a role enabled
[Service]
ExecStart=/bin/sleep infinity
[Install]
WantedBy=multi-user.target
"""

REBOOT_PLAY = """---
- name: Reboot one lab node the way every rolling update will
  hosts: node2
  gather_facts: false
  tasks:
    - name: Reboot
      ansible.builtin.reboot:
        reboot_timeout: 120
"""


def test_every_node_answers_ansible_ping(lab: LabSession) -> None:
    result = lab.ansible("nodes", "-m", "ansible.builtin.ping")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 3


def test_a_reboot_keeps_identity_keys_units_and_persisted_dirs_and_drops_everything_else(
    lab: LabSession,
) -> None:
    node = "node2"
    lab.ssh(
        node,
        f"cat > /etc/systemd/system/corral-labtest.service <<'EOF'\n{UNIT}EOF\n"
        "systemctl daemon-reload && systemctl enable --now corral-labtest.service >/dev/null 2>&1 && "
        "echo scratch > /root/outside-persisted-paths && "
        "mkdir -p /etc/corral-labtest && echo before > /etc/corral-labtest/written-before-add && "
        "/usr/lib/corral/corral-persist add /etc/corral-labtest && "
        "echo after > /etc/corral-labtest/written-after",
    )
    try:
        boot_id = lab.boot_id(node)
        machine_id = lab.ssh(node, "cat /etc/machine-id")
        host_key = lab.ssh(node, "ssh-keygen -lf /var/lib/corral/persist/ssh/ssh_host_ed25519_key.pub")
        boots_before = len(lab.boots(node))

        result = lab.playbook(REBOOT_PLAY)
        print(f"\n[lab] ansible.builtin.reboot of {node}: {result.stdout.splitlines()[-2:]}")

        assert result.returncode == 0, result.stdout + result.stderr
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" not in result.stdout + result.stderr
        assert lab.boot_id(node) != boot_id
        assert len(lab.boots(node)) == boots_before + 1
        assert lab.ssh(node, "cat /etc/machine-id") == machine_id
        assert (
            lab.ssh(node, "ssh-keygen -lf /var/lib/corral/persist/ssh/ssh_host_ed25519_key.pub") == host_key
        )
        assert lab.ssh(node, "systemctl is-active corral-labtest.service").strip() == "active"
        assert (
            lab.ssh(node, "test -e /root/outside-persisted-paths && echo kept || echo gone").strip() == "gone"
        )
        persisted = lab.ssh(
            node, "cat /etc/corral-labtest/written-before-add /etc/corral-labtest/written-after"
        )
        assert persisted == "before\nafter\n"
    finally:
        lab.ssh(
            node,
            "systemctl disable --now corral-labtest.service >/dev/null 2>&1; "
            "rm -f /etc/systemd/system/corral-labtest.service; systemctl daemon-reload; "
            "umount /etc/corral-labtest; rm -rf /var/lib/corral/persist/dirs/etc/corral-labtest; "
            "sed -i '/^[/]etc[/]corral-labtest$/d' /var/lib/corral/persist.d/local.list",
        )


def test_a_file_in_a_persisted_directory_survives_a_reboot(lab: LabSession) -> None:
    lab.ssh("node1", "echo kept > /etc/ceph/corral-labtest")
    try:
        lab.reboot_inside("node1")
        assert lab.ssh("node1", "cat /etc/ceph/corral-labtest").strip() == "kept"
    finally:
        lab.ssh("node1", "rm -f /etc/ceph/corral-labtest")


def test_data_on_a_data_disk_survives_a_reboot(lab: LabSession) -> None:
    disks = lab.hostvars("node1")["corral_data_disks"]
    assert isinstance(disks, list)
    assert len(disks) == 1
    disk = disks[0]
    assert lab.ssh("node1", f"test -b {disk} && echo block").strip() == "block"
    marker = "corral-lab-data-disk-marker"
    lab.ssh("node1", f"printf {marker} | dd of={disk} bs=4096 seek=100 conv=fsync,notrunc status=none")
    seconds = lab.reboot_inside("node1")
    print(f"\n[lab] node1 reboot (systemctl reboot) to SSH-ready with a new boot id: {seconds:.2f}s")
    read = lab.ssh(
        "node1", f"dd if={disk} bs=4096 skip=100 count=1 iflag=direct status=none | head -c {len(marker)}"
    )
    assert read == marker


def test_nodes_have_no_default_route_and_cannot_route_off_the_bridge(lab: LabSession) -> None:
    for node in ("node1", "node2", "node3"):
        assert "default" not in lab.ssh(node, "ip -4 route; ip -6 route")
        out = lab.ssh(node, "ip route get 192.0.2.1 2>&1 || true")
        assert "unreachable" in out.lower()
    # They do reach each other and the host on the bridge.
    assert (
        lab.ssh(
            "node1", f"ping -c1 -W2 {lab.hostvars('node3')['ansible_host']} >/dev/null && echo ok"
        ).strip()
        == "ok"
    )
