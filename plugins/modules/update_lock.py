#!/usr/bin/python
# Copyright: Corral maintainers
# Apache-2.0
"""Documentation of the action plugin corral.cloud.update_lock (plugins/action/update_lock.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: update_lock
short_description: Take, take back, release, break or read the cluster update lock in ZooKeeper
version_added: "0.1.0"
description:
  - The cluster update lock (DESIGN.md section 7) is held by a rollout id from preflight to the last node.
    Taking it with the rollout id that holds it takes it back (a re-run of the same rollout) and issues a
    newer fencing token, which fences off the interrupted run's writes. Another rollout is refused with the
    holder's identity and the token to break it with.
  - Runs on the controller (an action plugin) and needs the corral-updater Python package there.
options:
  zookeeper_hosts:
    description: The ensemble's client addresses, C(host:port,host:port).
    type: str
    required: true
  root:
    description: ZooKeeper path under which Corral keeps the lock, token and rollouts.
    type: str
    default: /corral/update
  state:
    description:
      - C(acquired) takes or takes back the lock for O(rollout_id); C(released) gives it up (needs the current
        O(token)); C(broken) removes a stale lock (needs the holder's O(token), as C(-e corral_lock_break));
        C(query) only reads it; C(checked) fails unless O(token) is still the newest fencing token (a run
        checks it before each step that changes a node, so a run a newer one took over from changes nothing).
    type: str
    choices: [acquired, released, broken, query, checked]
    default: acquired
  rollout_id:
    description: The rollout's id.
    type: str
  owner:
    description: Who holds the lock (shown to anyone refused).
    type: str
    default: ansible-playbook
  token:
    description: The fencing token (for C(released), C(broken) and C(checked)).
    type: int
  timeout:
    description: Seconds to wait for a ZooKeeper session.
    type: float
    default: 10.0
notes:
  - In check mode the lock is only read.
author:
  - Corral maintainers (@corral)
"""

EXAMPLES = r"""
- name: Take the cluster update lock
  corral.cloud.update_lock:
    zookeeper_hosts: 10.77.1.11:2181,10.77.1.12:2181,10.77.1.13:2181
    rollout_id: update-to-1.3.0
    owner: ops@controller
  register: lock
"""

RETURN = r"""
token:
  description: The fencing token issued (C(acquired)) or the newest token (C(query)).
  type: int
  returned: when state is acquired, query or checked
holder:
  description: The lock holder (rollout_id, token, owner, acquired_at), or null.
  type: dict
  returned: always
"""
