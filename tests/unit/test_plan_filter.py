"""The corral.cloud.rolling_plan filter, run by a real ansible-playbook over an inventory file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from updater.domain.inventory import inventory_from_hostvars
from updater.domain.plan import plan_rollout

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")

PLAYBOOK = """\
- name: Write the rolling plan as the playbook sees it
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write it to a file
      ansible.builtin.copy:
        content: >-
          {{ groups['nodes'] | corral.cloud.rolling_plan(hostvars, target,
             batch_mode=corral_rolling_batch | default('node'),
             progress=progress | default({}),
             ceph_release_from=ceph_from | default(''),
             ceph_release_to=ceph_to | default('')) | to_json }}
        dest: "{{ out }}"
        mode: "0644"
"""

RACKED = """\
nodes:
  children:
    rack1: {vars: {corral_rack: r1}, hosts: {n1: {}, n2: {}, n3: {}}}
    rack2: {vars: {corral_rack: r2}, hosts: {n4: {}, n5: {}, n6: {}}}
    rack3: {vars: {corral_rack: r3}, hosts: {n7: {}, n8: {}, n9: {}}}
"""


def run_plan(tmp_path: Path, inventory: str, **extra: Any) -> tuple[int, dict[str, Any] | None, str]:
    (tmp_path / "inventory.yml").write_text(inventory)
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    out = tmp_path / "plan.json"
    variables = {"out": str(out), "ansible_python_interpreter": sys.executable, "target": "v2", **extra}
    (tmp_path / "vars.json").write_text(json.dumps(variables))
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
            f"@{tmp_path / 'vars.json'}",
            str(tmp_path / "play.yml"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    plan = json.loads(out.read_text()) if out.exists() else None
    return result.returncode, plan, result.stdout + result.stderr


def test_domain_plan_through_ansible(tmp_path: Path) -> None:
    code, plan, output = run_plan(
        tmp_path, RACKED, corral_rolling_batch="domain", ceph_from="17.2.7", ceph_to="18.2.4"
    )
    assert code == 0, output
    assert plan is not None
    assert plan["node_order"] == ["n1", "n2", "n4", "n5", "n7", "n3", "n6", "n8", "n9"]
    assert [step["kind"] for step in plan["steps"]] == ["quorum"] * 5 + ["domain"] * 3 + ["finalise"]
    assert plan["steps"][-1]["require_osd_release"] == "reef"
    assert plan["lines"][5] == "6. domain: n3 (site1/r1)"


def test_recorded_progress_is_honoured(tmp_path: Path) -> None:
    progress = {
        "n1": {"state": "active", "release": "v2"},
        "n8": {"state": "drained", "release": "v1"},
    }
    code, plan, output = run_plan(tmp_path, RACKED, progress=progress)
    assert code == 0, output
    assert plan is not None
    assert plan["node_order"][0] == "n8"
    assert "n1" not in plan["node_order"]
    assert plan["skipped"] == ["n1"]


def test_an_impossible_plan_fails_the_task_with_the_reason(tmp_path: Path) -> None:
    code, plan, output = run_plan(tmp_path, RACKED, progress={"n5": {"state": "failed", "release": "v1"}})
    assert code != 0
    assert plan is None
    assert "corral.cloud.rolling_plan: cannot continue while n5 (failed) is out of service" in output
    assert "corral_rollback_node=n5" in output


def test_an_unknown_batch_mode_fails_the_task(tmp_path: Path) -> None:
    code, _, output = run_plan(tmp_path, RACKED, corral_rolling_batch="all")
    assert code != 0
    assert "corral_rolling_batch must be 'node' or 'domain', got 'all'" in output


def test_the_filter_answers_the_planners_report(tmp_path: Path) -> None:
    """The filter, the rollout_progress action and the update service hand on one form: Plan.to_report()."""
    code, plan, output = run_plan(tmp_path, RACKED, corral_rolling_batch="domain")
    assert code == 0, output
    racks = {f"n{i}": {"corral_rack": f"r{(i - 1) // 3 + 1}"} for i in range(1, 10)}
    inventory = inventory_from_hostvars(list(racks), racks)
    assert plan == plan_rollout(inventory, "v2", batch_mode="domain").to_report()
    assert plan is not None
    assert plan["lines"][0].startswith("1. quorum: n1")
