#!/usr/bin/python
# Copyright: Corral maintainers
# Apache-2.0
"""Ansible module corral.cloud.ceph_status: Ceph health, quorum, OSDs and PGs as structured data."""

from __future__ import annotations

# Ansible modules keep their imports below the documentation blocks (ansible-test convention).
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: ceph_status
short_description: Report a Ceph cluster's health, monitor quorum, OSD and PG states as structured data
version_added: "0.1.0"
description:
  - Runs C(ceph status --format json) (and, with O(detail=true), C(ceph health detail --format json)) on the
    node and returns the cluster's health with every health-check code, the monitor quorum, OSD up/in
    counts and PG states, so that roles and the rolling engine never parse Ceph's text output.
  - With O(accepted_checks) it also says whether the cluster counts as healthy, that is HEALTH_OK or only
    accepted warning codes raised. It never changes anything and never fails because the cluster is
    unhealthy; it fails only when the cluster cannot be queried.
  - Written against Ceph 16.2 (Pacific), the version Debian bookworm ships.
options:
  cluster:
    description: Ceph cluster name (C(--cluster)); selects C(/etc/ceph/<cluster>.conf).
    type: str
    default: ceph
  detail:
    description: Also run C(ceph health detail) and return each check's detail lines.
    type: bool
    default: false
  accepted_checks:
    description:
      - Health-check codes (for example C(MON_DISK_LOW)) that do not make the cluster unhealthy when raised
        with warning severity. An error-severity check is never accepted.
    type: list
    elements: str
    default: []
  connect_timeout:
    description: Seconds the Ceph client waits for a monitor before giving up.
    type: int
    default: 10
  wait:
    description:
      - Seconds to keep looking, every O(poll_interval) seconds, until the cluster is whole (healthy as
        O(accepted_checks) says, every monitor in quorum, every OSD up and in, every PG active+clean); the
        module returns the first whole look, or the last one when the time is up (RV(looks) counts them).
        A look that fails while waiting (a monitor election, a timeout) counts as not whole yet; only a
        failing last look fails the module. C(0) looks once.
      - One module run that reacts within O(poll_interval) replaces an Ansible C(until) loop, whose every
        retry is a new connection, a new module run and the retry's delay.
    type: float
    default: 0
  poll_interval:
    description: Seconds between two looks while waiting (O(wait)).
    type: float
    default: 1
notes:
  - Needs the C(ceph) CLI and a keyring allowed to read the cluster status (the admin keyring on a
    Corral node).
  - Supports check mode; it reads only.
author:
  - Corral maintainers (@corral)
"""

EXAMPLES = r"""
- name: Wait until the cluster is healthy, accepting only the low-disk warning of a shared lab disk
  corral.cloud.ceph_status:
    accepted_checks: [MON_DISK_LOW]
  register: ceph
  until: ceph.healthy and ceph.mons.all_in_quorum and ceph.pgs.all_active_clean
  retries: 30
  delay: 5

- name: Show which checks are raised
  ansible.builtin.debug:
    msg: "{{ ceph.health.codes }}"
"""

RETURN = r"""
fsid:
  description: The cluster's fsid.
  returned: success
  type: str
health:
  description: Overall status and every raised health check.
  returned: success
  type: dict
  contains:
    status:
      description: C(HEALTH_OK), C(HEALTH_WARN) or C(HEALTH_ERR).
      type: str
    codes:
      description: The raised health-check codes, sorted.
      type: list
      elements: str
    checks:
      description: By code, C(severity), C(message), C(count), C(detail) (lines, with O(detail)) and C(muted).
      type: dict
healthy:
  description: True when the status is HEALTH_OK or every unmuted raised check is an accepted warning.
  returned: success
  type: bool
unaccepted_checks:
  description: Raised codes that make the cluster unhealthy.
  returned: success
  type: list
  elements: str
accepted_checks_raised:
  description: Raised codes excused by O(accepted_checks).
  returned: success
  type: list
  elements: str
message:
  description: "One line for an operator, for example C(HEALTH_WARN (OSD_DOWN: 1 osds down))."
  returned: success
  type: str
mons:
  description: C(num), C(quorum) (names), C(in_quorum), C(all_in_quorum), C(quorum_age).
  returned: success
  type: dict
osds:
  description: C(num), C(up), C(in), C(all_up_in), C(remapped_pgs).
  returned: success
  type: dict
pgs:
  description:
    - C(num), C(by_state) (state name to count), C(active_clean), C(all_active_clean), C(inactive),
      C(num_pools).
  returned: success
  type: dict
mgr:
  description: C(available) and C(num_standbys).
  returned: success
  type: dict
whole:
  description: Healthy, every monitor in quorum, every OSD up and in, every PG active+clean.
  returned: success
  type: bool
looks:
  description: How many times C(ceph status) was asked (1 without O(wait)).
  returned: success
  type: int
"""


import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]
from ansible_collections.corral.cloud.plugins.module_utils.ceph_cli import (  # type: ignore[import-untyped]
    CONNECTION_OPTIONS,
    ceph_json,
)
from ansible_collections.corral.cloud.plugins.module_utils.ceph_report import (  # type: ignore[import-untyped]
    CephOutputError,
    describe_unhealthy,
    health_verdict,
    parse_health,
    summarize_status,
)


def look(module: Any) -> dict[str, Any]:
    """One look at the cluster: its summary, the verdict on its health and whether it is whole."""
    summary: dict[str, Any] = summarize_status(ceph_json(module, "status"))
    verdict = health_verdict(summary["health"], module.params["accepted_checks"])
    whole = bool(
        verdict["healthy"]
        and summary["mons"]["all_in_quorum"]
        and summary["osds"]["all_up_in"]
        and summary["pgs"]["all_active_clean"]
    )
    return {"summary": summary, "verdict": verdict, "whole": whole}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CONNECTION_OPTIONS,
            "detail": {"type": "bool", "default": False},
            "accepted_checks": {"type": "list", "elements": "str", "default": []},
            "wait": {"type": "float", "default": 0},
            "poll_interval": {"type": "float", "default": 1},
        },
        supports_check_mode=True,
    )
    deadline = time.monotonic() + max(module.params["wait"], 0)
    looks = 0
    while True:
        looks += 1
        last_chance = time.monotonic() + module.params["poll_interval"] > deadline
        try:
            seen = look(module)
        except CephOutputError as exc:
            if last_chance:
                module.fail_json(msg=str(exc), looks=looks)
            time.sleep(module.params["poll_interval"])
            continue
        if seen["whole"] or last_chance:
            break
        time.sleep(module.params["poll_interval"])
    summary, verdict = seen["summary"], seen["verdict"]
    if module.params["detail"]:  # the detail lines explain the last look; asked once, not at every look
        try:
            summary["health"] = parse_health(ceph_json(module, "health", "detail"))
        except CephOutputError as exc:
            module.fail_json(msg=str(exc), looks=looks)
        verdict = health_verdict(summary["health"], module.params["accepted_checks"])
    message = summary["health"]["status"]
    if verdict["unaccepted"]:
        message = describe_unhealthy(summary["health"], verdict["unaccepted"])
    module.exit_json(
        changed=False,
        healthy=verdict["healthy"],
        unaccepted_checks=verdict["unaccepted"],
        accepted_checks_raised=verdict["accepted"],
        message=message,
        whole=seen["whole"],
        looks=looks,
        **summary,
    )


if __name__ == "__main__":
    main()
