#!/usr/bin/python
# Copyright: Corral maintainers
# Apache-2.0
"""Documentation of the action plugin corral.cloud.release_stage (plugins/action/release_stage.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: release_stage
short_description: Verify and stage an update bundle, install its collection, publish its node image
version_added: "0.1.0"
description:
  - Verifies O(bundle) with the one bundle verifier (the update service uses the same), stages it atomically
    under O(staging_root)/<version>, installs the release's C(corral.cloud) collection offline into
    O(releases_root)/<version>/collections and publishes the node image to the boot service.
  - With O(release) instead, uses a release staged earlier (the image's SHA-256 is checked again on publish).
  - A bundle whose version is already staged is accepted only if its signed manifest is the staged one.
  - Runs on the controller (an action plugin) and needs the corral-updater Python package there. The
    entitlement key never appears in the result.
options:
  bundle:
    description: The bundle file.
    type: path
  release:
    description: An already staged version.
    type: str
  trust_dir:
    description: Directory with trust-root.json, keyring.json, license.json and entitlement-key.
    type: path
    default: /var/lib/corral-updater/trust
  staging_root:
    description: Where releases are staged.
    type: path
    default: /var/lib/corral/staging
  releases_root:
    description: Where each release's collection is installed.
    type: path
    default: /var/lib/corral/releases
  installed_version:
    description: The cluster's installed release (for the upgrade-path check); omit to skip that check.
    type: str
  node_count:
    description: The cluster's node count (checked against the license).
    type: int
    required: true
  backend:
    description: The boot service backend.
    type: str
    default: lab
  lab:
    description: The lab's name for the C(lab) backend.
    type: str
  lab_root:
    description: Where labs live.
    type: path
    default: /var/lib/corral-lab
notes:
  - In check mode only the bundle's manifest is read (nothing verified or kept).
author:
  - Corral maintainers (@corral)
"""

EXAMPLES = r"""
- name: Stage the bundle
  corral.cloud.release_stage:
    bundle: /srv/corral-1.3.0.bundle
    node_count: "{{ groups['nodes'] | length }}"
    lab: "{{ corral_lab | default(omit) }}"
  register: staged
"""

RETURN = r"""
release:
  description: version, staged_path, image_id, collections_path, newly_staged.
  type: dict
  returned: success
"""
