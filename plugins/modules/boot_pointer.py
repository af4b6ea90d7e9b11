#!/usr/bin/python
# Copyright: Corral maintainers
# Apache-2.0
"""Documentation of the action plugin corral.cloud.boot_pointer (plugins/action/boot_pointer.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: boot_pointer
short_description: Point a node's next boot (once) or its default boot at a node image, fenced
version_added: "0.1.0"
description:
  - Records the pointer in ZooKeeper in a transaction that checks the fencing token is the newest, then sets
    it at the boot service, which keeps the highest token it accepted per node and refuses a lower one (so a
    worker that passed the ZooKeeper check and then stalled still cannot write late).
  - Backends are C(lab) (the lab's boot pointers) and, in a later issue, C(pxe).
  - Runs on the controller (an action plugin) and needs the corral-updater Python package there.
options:
  zookeeper_hosts:
    description: The ensemble's client addresses, C(host:port,host:port).
    type: str
    required: true
  root:
    description: ZooKeeper path under which Corral keeps the lock and boot pointers.
    type: str
    default: /corral/update
  token:
    description: The rollout's fencing token (from M(corral.cloud.update_lock)).
    type: int
    required: true
  node:
    description: The node (inventory hostname).
    type: str
    required: true
  mode:
    description: C(once) boots O(image) at the next start only; C(default) makes it the default and clears a
      pending one-shot; C(clear) drops a pending one-shot.
    type: str
    choices: [once, default, clear]
    required: true
  image:
    description: The image id (SHA-256 of the artifact).
    type: str
  backend:
    description: The boot service backend.
    type: str
    default: lab
  lab:
    description: The lab's name (inventory C(corral_lab)) for the C(lab) backend.
    type: str
  lab_root:
    description: Where labs live.
    type: path
    default: /var/lib/corral-lab
  timeout:
    description: Seconds to wait for a ZooKeeper session.
    type: float
    default: 10.0
notes:
  - In check mode the pointer is only read.
author:
  - Corral maintainers (@corral)
"""

EXAMPLES = r"""
- name: Boot the new image once
  corral.cloud.boot_pointer:
    zookeeper_hosts: "{{ rolling_node_zookeeper_hosts }}"
    token: "{{ rolling_node_token }}"
    node: "{{ inventory_hostname }}"
    mode: once
    image: "{{ rolling_node_image }}"
    lab: "{{ corral_lab }}"
"""

RETURN = r"""
pointer:
  description: The node's boot state afterwards (default, once, current, token).
  type: dict
  returned: success
"""
