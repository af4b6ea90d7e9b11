"""The corral.cloud.quorum_members and zookeeper_hosts filters, run by a real ansible-playbook over an
inventory file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from updater.domain.inventory import inventory_from_ansible
from updater.services.cluster.access import zookeeper_hosts
from updater.services.cluster.inventory import ansible_inventory_data

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")

PLAYBOOK = """\
- name: Write the quorum members as the roles see them
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write them to a file
      ansible.builtin.copy:
        content: "{{ groups['nodes'] | corral.cloud.%s(hostvars) | to_json }}"
        dest: "{{ out }}"
        mode: "0644"
"""


def run_filter(
    tmp_path: Path, inventory: str, name: str = "quorum_members", *extra: str
) -> tuple[int, Any, str]:
    (tmp_path / "inventory.yml").write_text(inventory)
    (tmp_path / "play.yml").write_text(PLAYBOOK % name)
    out = tmp_path / "members.json"
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_CACHE_PLUGIN="memory")
    result = subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            str(tmp_path / "inventory.yml"),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"out={out}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            *extra,
            str(tmp_path / "play.yml"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    members = json.loads(out.read_text()) if out.exists() else None
    return result.returncode, members, result.stdout + result.stderr


def test_filter_spreads_members_over_racks(tmp_path: Path) -> None:
    code, members, output = run_filter(
        tmp_path,
        """\
nodes:
  hosts:
    node1: {corral_rack: r1}
    node2: {corral_rack: r1}
    node3: {corral_rack: r2}
    node4: {corral_rack: r3}
""",
    )
    assert code == 0, output
    assert members == ["node1", "node3", "node4"]


def test_filter_gives_five_members_from_five_nodes_with_default_site(tmp_path: Path) -> None:
    code, members, output = run_filter(
        tmp_path,
        "nodes:\n  hosts:\n" + "".join(f"    node{i}:\n" for i in (10, 2, 1, 3, 4, 5)),
    )
    assert code == 0, output
    assert members == ["node1", "node2", "node3", "node4", "node5"]


def test_filter_honours_the_group_override(tmp_path: Path) -> None:
    code, members, output = run_filter(
        tmp_path,
        """\
nodes:
  vars:
    corral_quorum_members: [node4, node2, node1]
  hosts:
    node1:
    node2:
    node3:
    node4:
""",
    )
    assert code == 0, output
    assert members == ["node1", "node2", "node4"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("[node1, node2]", "odd number of members; 2 were asked for"),
        ("[node1, node2, ghost]", "'ghost', which is not a node of the inventory"),
        ("node1", "must be a list of node names"),
    ],
)
def test_filter_refuses_a_bad_override_with_a_clear_message(
    tmp_path: Path, override: str, message: str
) -> None:
    code, members, output = run_filter(
        tmp_path,
        f"nodes:\n  vars:\n    corral_quorum_members: {override}\n"
        "  hosts:\n    node1:\n    node2:\n    node3:\n",
    )
    assert code != 0
    assert members is None
    assert message in output


def test_filter_refuses_an_override_set_differently_per_node(tmp_path: Path) -> None:
    code, _, output = run_filter(
        tmp_path,
        """\
nodes:
  hosts:
    node1: {corral_quorum_members: [node1]}
    node2:
    node3:
""",
    )
    assert code != 0
    assert "corral_quorum_members differs between nodes" in output


ADDRESSED = """\
nodes:
  hosts:
    node1: {corral_address: 10.0.0.1}
    node2: {corral_address: 10.0.0.2}
    node3: {corral_address: 10.0.0.3}
    node4: {corral_address: 10.0.0.4}
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ((), "10.0.0.1:2181,10.0.0.2:2181,10.0.0.3:2181"),
        (("-e", "corral_rolling_zookeeper_port=2281"), "10.0.0.1:2281,10.0.0.2:2281,10.0.0.3:2281"),
        (("-e", "corral_rolling_zookeeper_hosts=127.0.0.1:3000"), "127.0.0.1:3000"),
    ],
)
def test_the_playbook_finds_zookeeper_where_the_update_service_finds_it(
    tmp_path: Path, extra: tuple[str, ...], expected: str
) -> None:
    code, hosts, output = run_filter(tmp_path, ADDRESSED, "zookeeper_hosts", *extra)
    assert code == 0, output
    assert hosts == expected
    if not extra:  # the service reads the same inventory file through ansible-inventory
        data = ansible_inventory_data([tmp_path / "inventory.yml"])
        assert zookeeper_hosts(data, inventory_from_ansible(data)) == expected


def test_zookeeper_hosts_refuses_a_member_without_an_address(tmp_path: Path) -> None:
    code, hosts, output = run_filter(
        tmp_path, "nodes:\n  hosts:\n    node1:\n    node2:\n    node3:\n", "zookeeper_hosts"
    )
    assert code != 0
    assert hosts is None
    assert "every ZooKeeper member needs corral_address" in output
