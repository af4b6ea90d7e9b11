"""The drive policy on a real lab node: disks holding ext4, a GPT or a foreign BlueStore label are left alone,
each reported with its reason, and the blank disk becomes an OSD.

Uses its own one-node lab (four loop disks), so the shared lab's cluster is not disturbed. The ext4 and GPT
are written from the host onto the node's loop devices; the foreign BlueStore label is written inside the node
by ceph-osd --mkfs for another cluster's fsid.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.lab.conftest import ROOT, VENV_BIN, ansible_env, side_lab
from updater.lab.lab import Lab

pytestmark = pytest.mark.lab

LAB_NAME = side_lab("d")
FOREIGN_FSID = str(uuid.uuid4())


@pytest.fixture(scope="module")
def disk_lab() -> Iterator[Lab]:
    lab = Lab(LAB_NAME)
    if (lab.root / lab.name).exists():
        lab.down()
    try:
        lab.up(nodes=1, disks_per_node=4, disk_size_gib=4)
        yield lab
    finally:
        lab.down()


def disks(lab: Lab) -> list[str]:
    inventory = yaml.safe_load(lab.layout.inventory_file.read_text())
    return list(inventory["all"]["children"]["nodes"]["hosts"]["node1"]["corral_data_disks"])


def prepare_foreign_content(lab: Lab) -> dict[str, str]:
    blank, ext4, gpt, foreign = disks(lab)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "data", ext4], check=True, capture_output=True)
    subprocess.run(["sgdisk", "-n", "1:0:+100M", "-t", "1:8300", gpt], check=True, capture_output=True)
    conf = f"[global]\\nfsid = {FOREIGN_FSID}\\n"
    lab.run_on(
        "node1",
        f"printf '{conf}' > /tmp/foreign.conf && mkdir -p /tmp/osd7 && "
        f"ceph-osd -c /tmp/foreign.conf --no-mon-config -i 7 --mkfs --osd-uuid {uuid.uuid4()} "
        f"--osd-data /tmp/osd7 --bluestore_block_path {foreign} --bluestore_block_create=false "
        ">/dev/null 2>&1; "
        f"ceph-bluestore-tool show-label --dev {foreign} >/dev/null",
        timeout=120,
    )
    return {"blank": blank, "ext4": ext4, "gpt": gpt, "foreign": foreign}


def signatures(lab: Lab, devices: list[str]) -> dict[str, str]:
    return {dev: lab.run_on("node1", f"blkid -p -o export {dev} || true") for dev in devices}


def playbook(lab: Lab, *args: str) -> Any:
    return subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(lab.layout.inventory_file), *args],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=ROOT,
        env=ansible_env(),
        check=False,
    )


# Ceph up to its OSDs only (a one-node pool cannot have the role's replication): precheck, configuration,
# keys, monitor, manager, OSDs.
ONE_NODE_CEPH = """
- name: Node base and Ceph's OSDs on one node
  hosts: nodes
  gather_facts: false
  tasks:
    - name: Fresh facts
      ansible.builtin.setup:
    - name: Node base
      ansible.builtin.include_role: {name: corral.cloud.node_base}
    - name: Ceph up to its OSDs
      ansible.builtin.include_role: {name: corral.cloud.ceph, tasks_from: "{{ item }}"}
      loop: [precheck, config, keys, mon, mgr, osd]
"""


def test_foreign_content_is_untouched_and_the_blank_disk_becomes_an_osd(disk_lab: Lab) -> None:
    kinds = prepare_foreign_content(disk_lab)
    before = signatures(disk_lab, list(kinds.values()))
    assert "TYPE=ext4" in before[kinds["ext4"]]
    assert "PTTYPE=gpt" in before[kinds["gpt"]]
    assert "TYPE=ceph_bluestore" in before[kinds["foreign"]]

    build = ROOT / "build"
    build.mkdir(exist_ok=True)
    converge = build / "rdisk-converge.yml"
    converge.write_text(ONE_NODE_CEPH)
    extra = {"corral_quorum_members": ["node1"], "ceph_pool_size": 1}
    result = playbook(disk_lab, str(converge), "-e", json.dumps(extra))
    converge.unlink()
    assert result.returncode == 0, result.stdout[-5000:]

    report = result.stdout
    assert f"{kinds['blank']}: new-osd: blank 4.0 GiB disk matching the policy" in report
    assert f"{kinds['ext4']}: skip: holds a filesystem or signature (ext4)" in report
    assert f"{kinds['gpt']}: skip: holds a partition table (gpt)" in report
    assert f"{kinds['foreign']}: skip: holds a foreign BlueStore OSD (osd.7, cluster {FOREIGN_FSID}" in report

    after = signatures(disk_lab, list(kinds.values()))
    for kind in ("ext4", "gpt", "foreign"):
        assert after[kinds[kind]] == before[kinds[kind]], kind
    assert "TYPE=ceph_bluestore" in after[kinds["blank"]]
    # `ceph osd ls`, not `ls-tree node1`: the OSD id exists from `ceph-volume prepare` on, while the host's
    # CRUSH bucket appears only once the daemon has booted (a race on a loaded machine).
    osds = json.loads(disk_lab.run_on("node1", "ceph osd ls --format json"))
    assert len(osds) == 1
    label = json.loads(disk_lab.run_on("node1", f"ceph-bluestore-tool show-label --dev {kinds['blank']}"))
    assert label[kinds["blank"]]["whoami"] == str(osds[0])
