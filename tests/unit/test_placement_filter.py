"""The corral.cloud.quorum_members filter, run by a real ansible-playbook over an inventory file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")

PLAYBOOK = """\
- name: Write the quorum members as the roles see them
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write them to a file
      ansible.builtin.copy:
        content: "{{ groups['nodes'] | corral.cloud.quorum_members(hostvars) | to_json }}"
        dest: "{{ out }}"
        mode: "0644"
"""


def run_filter(tmp_path: Path, inventory: str) -> tuple[int, list[str] | None, str]:
    (tmp_path / "inventory.yml").write_text(inventory)
    (tmp_path / "play.yml").write_text(PLAYBOOK)
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
