#!/usr/bin/python
# Copyright: Corral maintainers
# Apache-2.0
"""Ansible module corral.cloud.ceph_ok_to_stop: would stopping these OSDs/monitors keep data available?"""

from __future__ import annotations

# Ansible modules keep their imports below the documentation blocks (ansible-test convention).
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: ceph_ok_to_stop
short_description: Ask Ceph whether OSDs and monitors can stop without losing data availability or quorum
version_added: "0.1.0"
description:
  - Runs C(ceph osd ok-to-stop) for the given OSDs (or every OSD under a CRUSH host) and
    C(ceph mon ok-to-stop) for the given monitors, and returns the answers as structured data.
  - Ceph answers "unsafe" with exit status 16 (EBUSY); the module reports that as RV(ok_to_stop=false) with
    Ceph's reason and the placement groups that would become inactive. It fails only when a command fails
    for another reason (an unknown OSD or monitor, no connection to the cluster), or, with
    O(fail_when_unsafe=true), when stopping is unsafe.
options:
  osds:
    description: OSD ids to ask about.
    type: list
    elements: int
    default: []
  host:
    description:
      - A CRUSH host bucket name; every OSD under it is asked about (C(ceph osd ls-tree)).
        Combined with O(osds).
    type: str
  mons:
    description: Monitor names to ask about.
    type: list
    elements: str
    default: []
  cluster:
    description: Ceph cluster name (C(--cluster)).
    type: str
    default: ceph
  connect_timeout:
    description: Seconds the Ceph client waits for a monitor before giving up.
    type: int
    default: 10
  fail_when_unsafe:
    description: Fail the task, with Ceph's reason, when stopping would be unsafe.
    type: bool
    default: false
notes:
  - Supports check mode; it reads only.
author:
  - Corral maintainers (@corral)
"""

EXAMPLES = r"""
- name: May this node's OSDs and its monitor stop?
  corral.cloud.ceph_ok_to_stop:
    host: "{{ ansible_facts['hostname'] }}"
    mons: ["{{ ansible_facts['hostname'] }}"]
    fail_when_unsafe: true
"""

RETURN = r"""
ok_to_stop:
  description: True when every OSD and monitor asked about may stop.
  returned: success
  type: bool
message:
  description: A one-line summary with Ceph's reasons.
  returned: success
  type: str
osd:
  description:
    - C(ok_to_stop), C(osds) (the ids asked about), C(num_ok_pgs), C(num_not_ok_pgs),
      C(pgs_would_become_inactive), C(pgs_would_become_degraded), C(message).
      C(ok_to_stop) is true when no OSD was asked about.
  returned: success
  type: dict
mon:
  description: C(ok_to_stop), C(mons), C(remaining_quorum) (names Ceph says stay in quorum), C(message).
  returned: success
  type: dict
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]
from ansible_collections.corral.cloud.plugins.module_utils.ceph_cli import (  # type: ignore[import-untyped]
    CONNECTION_OPTIONS,
    run_ceph,
)
from ansible_collections.corral.cloud.plugins.module_utils.ceph_report import (  # type: ignore[import-untyped]
    CephOutputError,
    parse_mon_ok_to_stop,
    parse_osd_ids,
    parse_osd_ok_to_stop,
)


def osds_to_ask(module: Any) -> list[int]:
    osds = set(module.params["osds"])
    host = module.params["host"]
    if host:
        rc, stdout, stderr = run_ceph(module, "osd", "ls-tree", host, "--format", "json")
        if rc != 0:
            raise CephOutputError(f"`ceph osd ls-tree {host}` failed (rc={rc}): {stderr.strip()}")
        osds.update(parse_osd_ids(stdout, f"ceph osd ls-tree {host}"))
    return sorted(osds)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "osds": {"type": "list", "elements": "int", "default": []},
            "host": {"type": "str"},
            "mons": {"type": "list", "elements": "str", "default": []},
            **CONNECTION_OPTIONS,
            "fail_when_unsafe": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    mons = module.params["mons"]
    try:
        osds = osds_to_ask(module)
        osd: dict[str, Any] = {"ok_to_stop": True, "osds": [], "message": "no OSD asked about"}
        if osds:
            ids = [str(i) for i in osds]
            osd = parse_osd_ok_to_stop(*run_ceph(module, "osd", "ok-to-stop", *ids, "--format", "json"), osds)
        mon: dict[str, Any] = {
            "ok_to_stop": True,
            "mons": [],
            "remaining_quorum": [],
            "message": "no monitor asked about",
        }
        if mons:
            mon = parse_mon_ok_to_stop(*run_ceph(module, "mon", "ok-to-stop", *mons), mons)
    except CephOutputError as exc:
        module.fail_json(msg=str(exc))
    ok = bool(osd["ok_to_stop"] and mon["ok_to_stop"])
    message = f"osds {osds or '[]'}: {osd['message']}; mons {mons or '[]'}: {mon['message']}"
    result = {"changed": False, "ok_to_stop": ok, "message": message, "osd": osd, "mon": mon}
    if not ok and module.params["fail_when_unsafe"]:
        module.fail_json(
            msg=f"stopping would make data or the monitor quorum unavailable: {message}", **result
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
