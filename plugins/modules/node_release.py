#!/usr/bin/python
# Copyright: Corral maintainers
# Apache-2.0
"""Ansible module corral.cloud.node_release: what the node runs (/etc/corral-release) and its boot id."""

from __future__ import annotations

# Ansible modules keep their imports below the documentation blocks (ansible-test convention).
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: node_release
short_description: Read the Corral release a node runs and its boot id
version_added: "0.1.0"
description:
  - Reads O(path) (C(/etc/corral-release), C(KEY=value) lines like C(os-release), written into every Corral
    node image) and the kernel's boot id, which changes at every boot.
  - The one way Corral reads a node's release; the rolling playbook's preflight, the per-node procedure, the
    P(corral.cloud.node_base#role) role and the update service's observation of the nodes all use it.
  - Fails, naming the file, when it cannot be read or has no C(CORRAL_VERSION) (not a Corral node image).
options:
  path:
    description: The release file.
    type: path
    default: /etc/corral-release
  boot_id_path:
    description: Where the kernel says its boot id.
    type: path
    default: /proc/sys/kernel/random/boot_id
notes:
  - Supports check mode; it reads only.
author:
  - Corral maintainers (@corral)
"""

EXAMPLES = r"""
- name: Wait until the node runs the target release
  corral.cloud.node_release:
  register: release
  until: release.release | default('') == rolling_node_target_release
  retries: 10
  delay: 3
"""

RETURN = r"""
release:
  description: The release the node runs (C(CORRAL_VERSION)).
  returned: success
  type: str
  sample: 1.3.0
fields:
  description: Every C(KEY=value) line of the file (comments and blank lines left out).
  returned: success
  type: dict
  sample: {"CORRAL_VERSION": "1.3.0", "CORRAL_BUILD_DATE": "2026-11-02"}
boot_id:
  description: The kernel's boot id (a new one proves the node rebooted).
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]


def parse(text: str) -> dict[str, str]:
    """``KEY=value`` lines, as ``os-release`` has them; comments and lines without ``=`` are left out."""
    fields = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)  # "=" is in the line
            fields[key.strip()] = value.strip()
    return fields


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/corral-release"},
            "boot_id_path": {"type": "path", "default": "/proc/sys/kernel/random/boot_id"},
        },
        supports_check_mode=True,
    )
    path = module.params["path"]
    try:
        with open(path, encoding="utf-8") as handle:
            fields = parse(handle.read())
        with open(module.params["boot_id_path"], encoding="ascii") as handle:
            boot_id = handle.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        module.fail_json(msg=f"cannot read what the node runs: {error}")
    if not fields.get("CORRAL_VERSION"):
        module.fail_json(msg=f"{path} has no CORRAL_VERSION: not a Corral node image", fields=fields)
    module.exit_json(changed=False, release=fields["CORRAL_VERSION"], fields=fields, boot_id=boot_id)


if __name__ == "__main__":
    main()
