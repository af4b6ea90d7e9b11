#!/usr/bin/python
# Copyright: Corral maintainers
# Apache-2.0
"""Ansible module corral.cloud.zookeeper_status: a ZooKeeper member's role and quorum (AdminServer)."""

from __future__ import annotations

# Ansible modules keep their imports below the documentation blocks (ansible-test convention).
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: zookeeper_status
short_description: Report a ZooKeeper member's mode, whether it serves, and its ensemble's voting members
version_added: "0.1.0"
description:
  - Reads the member's AdminServer (HTTP, bound to 127.0.0.1 on Corral nodes) commands C(stat), C(monitor)
    and C(voting_view) and returns whether the member serves requests, its mode (C(leader),
    C(follower), C(observer), C(standalone)), the ensemble's voting members and, on the leader, how many
    followers are in sync.
  - A member that is up but has no quorum answers C(stat) with an error; the module reports it as
    RV(serving=false), RV(mode=not serving). A member that does not answer at all is RV(reachable=false). The
    module fails only on a response that is not ZooKeeper's, never because the member is unhealthy.
  - Written against ZooKeeper 3.8 (Debian bookworm).
options:
  url:
    description: Base URL of the AdminServer, without C(/commands).
    type: str
    default: http://127.0.0.1:8080
  timeout:
    description: Seconds to wait for each HTTP answer.
    type: int
    default: 5
notes:
  - Supports check mode; it reads only.
author:
  - Corral maintainers (@corral)
"""

EXAMPLES = r"""
- name: Wait until this member serves as part of a full ensemble
  corral.cloud.zookeeper_status:
    url: "http://127.0.0.1:{{ zookeeper_admin_port }}"
  register: zk
  until: zk.serving
  retries: 30
  delay: 2
"""

RETURN = r"""
reachable:
  description: Whether the AdminServer answered at all.
  returned: always
  type: bool
serving:
  description: Whether the member serves client requests (it is part of a quorum).
  returned: always
  type: bool
mode:
  description: C(leader), C(follower), C(observer), C(standalone), or C(not serving) / C(unreachable).
  returned: always
  type: str
voting_members:
  description: Server ids of the ensemble's voting members (as strings), from C(voting_view).
  returned: always
  type: list
  elements: str
quorum_size:
  description: Number of voting members (from the leader's C(monitor), else from C(voting_view)).
  returned: always
  type: int
synced_followers:
  description: On the leader, the number of followers in sync; null elsewhere.
  returned: always
  type: int
zxid:
  description: The last processed transaction id.
  returned: always
  type: int
error:
  description: Why the member does not serve or cannot be reached; null otherwise.
  returned: always
  type: str
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]
from ansible.module_utils.urls import open_url  # type: ignore[import-untyped]
from ansible_collections.corral.cloud.plugins.module_utils.zookeeper_report import (  # type: ignore[import-untyped]
    ZooKeeperOutputError,
    summarize,
)

COMMANDS = ("stat", "monitor", "voting_view")


def fetch(url: str, timeout: int) -> tuple[int, str]:
    """(HTTP status, body); HTTP errors are answers too (a member without quorum answers monitor with 500)."""
    try:
        response = open_url(url, timeout=timeout, validate_certs=False, follow_redirects="none")
        return int(response.status), response.read().decode("utf-8", "replace")
    except Exception as exc:  # urllib's HTTPError carries the answer; anything else means no answer
        code = getattr(exc, "code", None)
        if code is not None and hasattr(exc, "read"):
            return int(code), exc.read().decode("utf-8", "replace")
        raise ConnectionError(f"{url}: {exc}") from exc


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "default": "http://127.0.0.1:8080"},
            "timeout": {"type": "int", "default": 5},
        },
        supports_check_mode=True,
    )
    base = module.params["url"].rstrip("/")
    responses: dict[str, tuple[int, str]] = {}
    try:
        for command in COMMANDS:
            responses[command] = fetch(f"{base}/commands/{command}", module.params["timeout"])
    except ConnectionError as exc:
        module.exit_json(
            changed=False,
            reachable=False,
            serving=False,
            mode="unreachable",
            voting_members=[],
            quorum_size=None,
            synced_followers=None,
            zxid=None,
            error=str(exc),
        )
    try:
        status: dict[str, Any] = summarize(responses)
    except ZooKeeperOutputError as exc:
        module.fail_json(msg=f"{base}: {exc}")
    status.pop("version", None)
    module.exit_json(changed=False, reachable=True, **status)


if __name__ == "__main__":
    main()
