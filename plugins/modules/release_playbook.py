#!/usr/bin/python
# Copyright: Corral maintainers
# Apache-2.0
"""Documentation of the action plugin corral.cloud.release_playbook (plugins/action/release_playbook.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: release_playbook
short_description: Run the per-node plays of a rolling update from the target release's collection
version_added: "0.1.0"
description:
  - Runs O(argv) (an C(ansible-playbook) command) with O(collections_paths) (the target release's first) as
    C(ANSIBLE_COLLECTIONS_PATH), so the per-node procedure, every role's drain, health and undrain, and the
    plugins are the target release's.
  - Streams every line of its output to the controller's output and to a log file in O(log_dir).
  - Stops the run (its whole process group) when the controller's C(ansible-playbook) goes away, so a killed
    rollout does not go on alone; a re-run takes the lock back and fences off anything left.
  - Runs on the controller (an action plugin) and needs the corral-updater Python package there.
options:
  argv:
    description: The command.
    type: list
    elements: str
    required: true
  collections_paths:
    description: The target release's collections (from M(corral.cloud.release_stage)) first, then the
      controller's usual collection paths (for the collections the roles use).
    type: list
    elements: path
    required: true
  log_dir:
    description: Where the run's log goes.
    type: path
    required: true
  name:
    description: Prefix of the log file's name.
    type: str
    default: rollout
author:
  - Corral maintainers (@corral)
"""

EXAMPLES = r"""
- name: Run the per-node plays from the target release's collection
  corral.cloud.release_playbook:
    argv: [/usr/bin/ansible-playbook, -i, inventory.yml, corral.cloud.rolling_update, -e, "@vars.json"]
    collections_paths: [/var/lib/corral/releases/1.3.0/collections, /usr/share/ansible/collections]
    log_dir: /var/lib/corral/releases/1.3.0/logs
"""

RETURN = r"""
rc:
  description: The run's exit status.
  type: int
  returned: always
log:
  description: The log file.
  type: str
  returned: always
tail:
  description: The run's last lines.
  type: list
  elements: str
  returned: always
"""
