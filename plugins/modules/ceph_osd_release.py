#!/usr/bin/python
# Copyright: Corral maintainers
# Apache-2.0
"""Ansible module corral.cloud.ceph_osd_release: raise require-osd-release once every OSD runs a new major."""

from __future__ import annotations

# Ansible modules keep their imports below the documentation blocks (ansible-test convention).
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: ceph_osd_release
short_description: Raise Ceph's require-osd-release after a rollout moved every OSD to a new major
version_added: "0.1.0"
description:
  - Reads which releases the OSDs run (C(ceph versions --format json)) and the cluster's minimum
    (C(require_osd_release) of C(ceph osd dump --format json)). When every OSD runs a newer major than the
    minimum, sets the minimum to it with C(ceph osd require-osd-release NAME), the last step of a Ceph major
    upgrade (as ceph-ansible's rolling_update and cephadm's upgrade finish). Otherwise it changes nothing.
  - Fails, changing nothing, while the OSDs run several majors (a node has not been updated yet), or when
    O(release) is given and the OSDs do not run it.
options:
  cluster:
    description: Ceph cluster name (C(--cluster)).
    type: str
    default: ceph
  release:
    description:
      - The release name the rollout's plan expects the OSDs to run now (for example C(quincy)); empty to
        take whatever single release the OSDs run.
    type: str
    default: ""
  connect_timeout:
    description: Seconds the Ceph client waits for a monitor before giving up.
    type: int
    default: 10
notes:
  - Run it on one monitor node, once per rollout, after the last node. Supports check mode (reports what it
    would set).
author:
  - Corral maintainers (@corral)
"""

EXAMPLES = r"""
- name: Require the release the OSDs now run (nothing to do when the major did not change)
  corral.cloud.ceph_osd_release:
  register: osd_release
"""

RETURN = r"""
running:
  description: The release name every OSD runs (for example C(pacific)).
  returned: success
  type: str
required:
  description: The cluster's require_osd_release before this run.
  returned: success
  type: str
set_to:
  description: The release name set (or that would be set, in check mode); null when nothing changed.
  returned: success
  type: str
"""


from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]
from ansible_collections.corral.cloud.plugins.module_utils.ceph_cli import (  # type: ignore[import-untyped]
    CONNECTION_OPTIONS,
    ceph_json,
    run_ceph,
)
from ansible_collections.corral.cloud.plugins.module_utils.ceph_report import (  # type: ignore[import-untyped]
    CephOutputError,
    osd_release_step,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={**CONNECTION_OPTIONS, "release": {"type": "str", "default": ""}},
        supports_check_mode=True,
    )
    try:
        osd_dump = ceph_json(module, "osd", "dump")
        step = osd_release_step(ceph_json(module, "versions"), str(osd_dump.get("require_osd_release", "")))
        expected = module.params["release"]
        if expected and step["running"] != expected:
            raise CephOutputError(
                f"the plan expects the OSDs on {expected} after the last node, but they run "
                f"{step['running']}: check the node image's Ceph packages and `ceph versions`"
            )
        if step["set_to"] and not module.check_mode:
            rc, stdout, stderr = run_ceph(module, "osd", "require-osd-release", step["set_to"])
            if rc != 0:
                raise CephOutputError(
                    f"`ceph osd require-osd-release {step['set_to']}` failed (rc={rc}): "
                    f"{stderr.strip() or stdout.strip()}"
                )
    except CephOutputError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=step["set_to"] is not None, **step)


if __name__ == "__main__":
    main()
