"""The lab tier's story (DESIGN.md §7c): corral.cloud.site deployed ONCE on the session's shared lab, then
used, broken, healed and rolled by the chapters that follow (test_site_deploy, test_site_rolling, ...), each
starting from the state the last one left and restoring what it changes.

The ``deployed`` fixture (tests/lab/conftest.py, session scope) runs the site twice, the customer's first two
days: a fresh deployment, then a second run that must change nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.lab.conftest import ROOT, VENV_BIN, LabSession, ansible_env

RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def site(lab: LabSession, *args: str, inventory: Path | None = None, timeout: float = 1200) -> Any:
    return subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(inventory or lab.inventory),
            "corral.cloud.site",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=ansible_env(),
        check=False,
    )


def recap(output: str) -> dict[str, dict[str, int]]:
    return {
        m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "failed": int(m.group(5))}
        for m in RECAP.finditer(output)
    }


@dataclass
class Deployment:
    lab: LabSession
    first_seconds: float
    second_seconds: float
    first: Any
    second: Any
    figures: dict[str, Any] = field(default_factory=dict)

    def vip(self) -> str:
        data = yaml.safe_load(self.lab.inventory.read_text())
        return str(data["all"]["children"]["nodes"]["vars"]["corral_vip"])

    def module(self, node: str, module: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        arguments = ["-a", json.dumps(args)] if args else []
        result = self.lab.ansible(node, "-m", module, *arguments, "-o")
        line = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        payload = line.split("=>", 1)[1].strip() if "=>" in line else "{}"
        data: dict[str, Any] = json.loads(payload)
        assert "SUCCESS" in line, result.stdout + result.stderr
        return data

    def health(self, timeout: float = 900) -> Any:
        return self.lab.playbook(HEALTH_PLAYBOOK, timeout=timeout)


HEALTH_PLAYBOOK = """
- name: Health of every foundation service
  hosts: nodes
  gather_facts: false
  tasks:
    - name: ZooKeeper
      ansible.builtin.include_role: {name: corral.cloud.zookeeper, tasks_from: health}
    - name: Ceph
      ansible.builtin.include_role: {name: corral.cloud.ceph, tasks_from: health}
    - name: Endpoint
      ansible.builtin.include_role: {name: corral.cloud.endpoint, tasks_from: health}
"""


def deploy(lab: LabSession) -> Deployment:
    """The story's first chapter: a fresh deployment, then a second run (test_site_deploy checks it changed
    nothing)."""
    started = time.monotonic()
    first = site(lab)
    first_seconds = time.monotonic() - started
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
    started = time.monotonic()
    second = site(lab)
    second_seconds = time.monotonic() - started
    deployment = Deployment(lab, first_seconds, second_seconds, first, second)
    print(
        f"\n[site] fresh deployment on 3 nodes: {first_seconds:.1f}s; second run: {second_seconds:.1f}s",
        flush=True,
    )
    return deployment
