#!/usr/bin/python
# Copyright: Corral maintainers
# Apache-2.0
"""Documentation of the action plugin corral.cloud.rollout_progress (plugins/action/rollout_progress.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollout_progress
short_description: Plan and begin a rollout, record each node's progress, finish it; fenced in ZooKeeper
version_added: "0.1.0"
description:
  - C(begin) plans with the one planner from the progress kept in ZooKeeper (so a re-run continues where the
    last one stopped and never redoes a finished node) and creates or takes back the rollout record.
  - C(node) records a node's transition; the rollout's rules refuse illegal transitions, two failure
    domains at once and a quorum holder together with another node. The record keeps the order nodes
    actually began.
  - C(resume) says what a (re)started run does next with O(node) (skip, drain, boot, verify or stop) from its
    recorded progress and what it runs now (O(release), O(boot_id)), so a finished node is never redone and a
    node that already rebooted is never rebooted again.
  - C(control), before a node starts, applies an operator's request kept under the rollout in ZooKeeper
    (C(pause) - the rollout is paused and keeps the lock; C(abort) - it is aborted and the lock released) and
    returns it as C(control) (none when nobody asked), so the play can end after the node before.
  - C(finish) marks the rollout succeeded, failed (with the reason) or aborted. C(read) returns it.
  - Every write carries the fencing token and is refused when a newer token exists.
  - Runs on the controller (an action plugin) and needs the corral-updater Python package there.
options:
  zookeeper_hosts:
    description: The ensemble's client addresses, C(host:port,host:port).
    type: str
    required: true
  root:
    description: ZooKeeper path under which Corral keeps rollouts.
    type: str
    default: /corral/update
  action:
    description: What to do.
    type: str
    choices: [begin, node, resume, control, finish, read]
    required: true
  rollout_id:
    description: The rollout's id.
    type: str
    required: true
  token:
    description: The fencing token (every action but C(read)).
    type: int
  nodes:
    description: C(begin) - the cluster's nodes (hostnames; their hostvars give the failure domains).
    type: list
    elements: str
  target_release:
    description: C(begin) - the release to roll out.
    type: str
  batch_mode:
    description: C(begin) - C(node) or C(domain).
    type: str
    default: node
  observed:
    description: C(begin) - node to the release it runs now; a node already on the target is skipped.
    type: dict
    default: {}
  node:
    description: C(node) - the node.
    type: str
  state:
    description: C(node) - its new state (active, draining, drained, rebooting, verifying, failed, fenced).
    type: str
  release:
    description: C(node) - the release it runs.
    type: str
  boot_id:
    description: C(node) - its boot id before the trial reboot (so a resumed run never reboots it twice).
    type: str
  operator_override:
    description: C(node) - take a failed rollout back for this one change (the C(corral_rollback_node) path).
    type: bool
    default: false
  outcome:
    description: C(finish) - succeeded, failed or aborted.
    type: str
    choices: [succeeded, failed, aborted]
  reason:
    description: C(finish) - why (shown to the operator).
    type: str
    default: ""
  timeout:
    description: Seconds to wait for a ZooKeeper session.
    type: float
    default: 10.0
notes:
  - In check mode nothing is written; C(begin) only plans.
author:
  - Corral maintainers (@corral)
"""

EXAMPLES = r"""
- name: Record that the node is draining
  corral.cloud.rollout_progress:
    zookeeper_hosts: "{{ rolling_node_zookeeper_hosts }}"
    action: node
    rollout_id: "{{ rolling_node_rollout_id }}"
    token: "{{ rolling_node_token }}"
    node: "{{ inventory_hostname }}"
    state: draining
"""

RETURN = r"""
plan:
  description: C(begin) - the plan (steps, node_order, lines).
  type: dict
  returned: when action is begin
rollout:
  description: The rollout record (state, nodes, executed order, plan).
  type: dict
  returned: when action is begin, finish or read
next_step:
  description: C(resume) - skip, drain, boot, verify or stop.
  type: str
  returned: when action is resume
state:
  description: C(resume) - the node's recorded state.
  type: str
  returned: when action is resume
progress:
  description: The node's progress (C(node)) or every node's (C(read)).
  type: dict
  returned: when action is node or read
"""
