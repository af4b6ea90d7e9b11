#!/usr/bin/python
# Copyright: Corral maintainers
# Apache-2.0
"""Ansible module corral.cloud.ceph_disk_policy: decide, per offered disk, OSD or not, and why."""

from __future__ import annotations

# Ansible modules keep their imports below the documentation blocks (ansible-test convention).
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: ceph_disk_policy
short_description: Decide which offered disks become Ceph OSDs, reporting every disk with its reason
version_added: "0.1.0"
description:
  - Looks at each offered device with C(lsblk --json -O -b), C(blkid -p) (a low-level probe that needs no
    udev database) and, for a BlueStore signature, C(ceph-bluestore-tool show-label), then applies the
    drive policy.
  - Safety first, whatever the policy says - a device that is mounted, holds a partition table, a
    filesystem or any other signature, is an LVM physical volume, has partitions or holders, or carries a
    BlueStore OSD of another cluster is never selected. A device already holding an OSD of this cluster
    (its label's C(ceph_fsid) equals O(cluster_fsid)) is reported as C(existing-osd) so that it is
    activated, never prepared again.
  - The policy then filters blank devices by rotational, size range, model and serial patterns and
    exclusions.
  - It only reads; the role prepares the devices the module selected.
options:
  devices:
    description:
      - Block device paths offered for storage (the inventory's C(corral_data_disks)).
      - Only these are ever considered.
    type: list
    elements: path
    required: true
  policy:
    description:
      - The drive policy (the ceph role's C(ceph_osd_policy)). Keys, each optional -
        C(rotational) (true for HDDs only, false for SSD/NVMe only, null for any),
        C(min_size) and C(max_size) (bytes or sizes such as C(100G), C(2T); binary units),
        C(model) and C(serial) (regular expressions searched in the device's model and serial),
        C(exclude) (device paths, kernel names, serials or WWNs never to use).
    type: dict
    default: {}
  cluster_fsid:
    description: This cluster's fsid, to tell its own OSDs from foreign ones.
    type: str
notes:
  - Supports check mode; it reads only.
  - Loop devices are considered like disks when offered (the lab's data disks are loop devices).
author:
  - Corral maintainers (@corral)
"""

EXAMPLES = r"""
- name: Which offered disks become OSDs (SSDs of at least 100 GiB, never the boot disk's twin)
  corral.cloud.ceph_disk_policy:
    devices: "{{ corral_data_disks }}"
    cluster_fsid: "{{ ceph_fsid }}"
    policy:
      rotational: false
      min_size: 100G
      exclude: [/dev/sdz]
  register: disks
"""

RETURN = r"""
disks:
  description: One entry per offered device, in the order offered.
  returned: success
  type: list
  elements: dict
  contains:
    path:
      description: The device path.
      type: str
    decision:
      description: C(new-osd), C(existing-osd) or C(skip).
      type: str
    reason:
      description: Why, for example C(holds a partition table (gpt)).
      type: str
    size:
      description: Size in bytes (null when the device does not exist).
      type: int
    rotational:
      description: Whether the kernel reports the device as rotational.
      type: bool
    model:
      description: Model string, if any.
      type: str
    serial:
      description: Serial number, if any.
      type: str
    osd_id:
      description: For C(existing-osd), the OSD id from the label.
      type: int
new_osds:
  description: Paths to prepare as new OSDs.
  returned: success
  type: list
  elements: str
existing_osds:
  description: Paths that already hold an OSD of this cluster.
  returned: success
  type: list
  elements: str
skipped:
  description: Paths left untouched.
  returned: success
  type: list
  elements: str
"""

import os
import stat
from typing import Any

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]
from ansible_collections.corral.cloud.plugins.module_utils.disk_policy import (  # type: ignore[import-untyped]
    EXISTING_OSD,
    NEW_OSD,
    SKIP,
    BluestoreLabel,
    DeviceDataError,
    Inventory,
    OsdPolicy,
    PolicyError,
    decide,
    needs_label,
    parse_blkid_export,
    parse_bluestore_label,
    parse_lsblk,
)

BLKID_NOTHING_FOUND = 2  # blkid -p exits 2 when the device carries no signature


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def gather(
    module: Any, devices: list[str]
) -> tuple[Inventory, dict[str, dict[str, str]], dict[str, BluestoreLabel]]:
    present = [d for d in devices if is_block_device(d)]
    inventory = Inventory()
    signatures: dict[str, dict[str, str]] = {}
    labels: dict[str, BluestoreLabel] = {}
    if not present:
        return inventory, signatures, labels
    rc, stdout, stderr = module.run_command(["lsblk", "--json", "-O", "-b", *present])
    if rc != 0:
        raise DeviceDataError(f"lsblk failed (rc={rc}): {stderr.strip()}")
    inventory = parse_lsblk(stdout)
    for path in present:
        rc, stdout, stderr = module.run_command(["blkid", "-p", "-o", "export", path])
        if rc not in (0, BLKID_NOTHING_FOUND):
            raise DeviceDataError(f"blkid -p {path} failed (rc={rc}): {stderr.strip()}")
        signatures[path] = parse_blkid_export(stdout)
        if needs_label(inventory, path, signatures[path]):
            rc, stdout, stderr = module.run_command(["ceph-bluestore-tool", "show-label", "--dev", path])
            if rc == 0:
                labels[path] = parse_bluestore_label(stdout, path)
    return inventory, signatures, labels


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "devices": {"type": "list", "elements": "path", "required": True},
            "policy": {"type": "dict", "default": {}},
            "cluster_fsid": {"type": "str"},
        },
        supports_check_mode=True,
    )
    try:
        policy = OsdPolicy.from_mapping(module.params["policy"])
        inventory, signatures, labels = gather(module, module.params["devices"])
        decisions = decide(
            inventory, module.params["devices"], policy, signatures, labels, module.params["cluster_fsid"]
        )
    except (PolicyError, DeviceDataError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(
        changed=False,
        disks=[d.as_dict() for d in decisions],
        new_osds=[d.path for d in decisions if d.decision == NEW_OSD],
        existing_osds=[d.path for d in decisions if d.decision == EXISTING_OSD],
        skipped=[d.path for d in decisions if d.decision == SKIP],
    )


if __name__ == "__main__":
    main()
