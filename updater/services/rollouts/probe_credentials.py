"""The S3 access of the availability probe beside a rollout (DESIGN.md §6: Ceph object I/O through the VIP).

When the rollout rolls Ceph (``ceph`` in the inventory's ``rolling_node_roles``, whose default includes it)
and the endpoint (the cluster has a VIP to probe), ``corral-probe`` also PUTs and GETs fresh objects and reads
objects written before, through RGW behind the VIP, as the S3 user the ``ceph`` role creates (``corral``,
``ceph_rgw_users``). Its keys are read when the probe starts by one bounded ansible-runner play on the first
Ceph monitor (``radosgw-admin user info --uid corral``, where the admin keyring is):

- both tasks are ``no_log: true``, so the keys reach no event, artifact, log or output; the second task hands
  the answer over in a ``0600`` file of the play's private temp directory (``0700``), which is removed as soon
  as it has been read;
- the keys go to the probe through its environment only (``CORRAL_S3_ACCESS_KEY``/``CORRAL_S3_SECRET_KEY``),
  never its argv; :class:`S3Keys` never shows them in a ``repr``.

Reading the play's outcome (:func:`keys_from_run`) and deciding whether to probe S3 (:func:`ceph_rolled`,
:func:`bucket_name`) are pure and unit-tested; :func:`s3_access` is the one that reads the cluster.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from updater.services.cluster.access import Cluster, run_play
from updater.services.cluster.inventory import InventoryLoadError, ansible_inventory_data

S3_USER = "corral"  # roles/ceph defaults, ceph_rgw_users
CEPH_ROLE = "ceph"
MONITOR_SERVICE = "ceph_mon"
KEYS_TIMEOUT_SECONDS = 60
BUCKET_PREFIX = "corral-probe-"
ACCESS_KEY_ENV = "CORRAL_S3_ACCESS_KEY"
SECRET_KEY_ENV = "CORRAL_S3_SECRET_KEY"  # noqa: S105 (the variable's name, not a secret)

_KEYS_FILE = "s3-user.json"
_KEYS_PLAY = """\
- name: Read the S3 keys of the availability probe
  hosts: "{{ corral_probe_node }}"
  gather_facts: false
  tasks:
    - name: Read the S3 user
      ansible.builtin.command:
        argv: [radosgw-admin, user, info, --uid, "{{ corral_probe_uid }}"]
      register: corral_probe_user
      changed_when: false
      failed_when: false
      no_log: true

    - name: Hand the S3 user over to the update service
      ansible.builtin.copy:
        content: >-
          {{ {'rc': corral_probe_user.rc | default(-1), 'stdout': corral_probe_user.stdout | default(''),
              'stderr': corral_probe_user.stderr | default(''), 'msg': corral_probe_user.msg | default('')}
             | to_json }}
        dest: "{{ corral_probe_keys_file }}"
        mode: "0600"
      delegate_to: localhost
      become: false
      no_log: true
"""
_READ_TASK = "Read the S3 user"


class ProbeCredentialsError(RuntimeError):
    """The probe's S3 keys could not be read; the message says why (it never holds a key)."""


@dataclass(frozen=True)
class S3Keys:
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)


@dataclass(frozen=True)
class S3Access:
    """What ``corral-probe`` needs to probe S3: endpoint and bucket (argv), keys (environment only)."""

    endpoint: str
    bucket: str
    keys: S3Keys
    node: str  # where the keys were read

    def arguments(self) -> list[str]:
        return ["--s3-endpoint", self.endpoint, "--s3-bucket", self.bucket]

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        return {**base, ACCESS_KEY_ENV: self.keys.access_key, SECRET_KEY_ENV: self.keys.secret_key}

    @property
    def secrets(self) -> tuple[str, str]:
        return self.keys.access_key, self.keys.secret_key


def environment_without_keys(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` without any S3 keys the service's own environment may hold (a probe without S3)."""
    return {name: value for name, value in base.items() if name not in (ACCESS_KEY_ENV, SECRET_KEY_ENV)}


# --- pure decisions ---------------------------------------------------------------------------------------
def ceph_rolled(hostvars: Mapping[str, Any]) -> bool:
    """Whether the per-node procedure handles Ceph: ``rolling_node_roles`` lists ``ceph``, or is not a list
    the inventory sets (its default in ``roles/rolling_node`` includes ``ceph``), as ``load_cluster`` reads it
    for the endpoint."""
    roles = hostvars.get("rolling_node_roles")
    return not isinstance(roles, list) or CEPH_ROLE in roles


def bucket_name(rollout_id: str) -> str:
    """A valid S3 bucket name for the rollout's probe objects: 3 to 63 of ``a-z0-9-``, starting and ending
    with a letter or digit (``update-to-0.2.0-20261121T130509Z`` becomes
    ``corral-probe-update-to-0-2-0-20261121t130509z``).
    A name cut to fit ends with a hash of the whole id, so two long ids never share a bucket."""
    safe = re.sub(r"[^a-z0-9]+", "-", rollout_id.lower()).strip("-") or "rollout"
    name = BUCKET_PREFIX + safe
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(rollout_id.encode()).hexdigest()[:8]
    return f"{name[: 63 - 9].rstrip('-')}-{digest}"


def user_keys(user_info: str, uid: str = S3_USER) -> S3Keys:
    """The S3 key pair in the JSON ``radosgw-admin user info`` prints (the user's own key first)."""
    try:
        info = json.loads(user_info)
    except json.JSONDecodeError:
        raise ProbeCredentialsError("radosgw-admin printed something that is not JSON") from None
    keys = info.get("keys") if isinstance(info, dict) else None
    pairs = [
        key
        for key in (keys if isinstance(keys, list) else [])
        if isinstance(key, dict) and key.get("access_key") and key.get("secret_key")
    ]
    pairs.sort(key=lambda key: key.get("user") != uid)
    if not pairs:
        raise ProbeCredentialsError(f"the RGW user {uid} has no S3 key")
    return S3Keys(str(pairs[0]["access_key"]), str(pairs[0]["secret_key"]))


def _last_line(text: object) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _play_failure(events: Sequence[Mapping[str, Any]], node: str) -> str | None:
    for event in events:
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind == "playbook_on_no_hosts_matched":
            return f"{node} is not a host of the inventory"
        if data.get("host") != node:
            continue
        if kind == "runner_on_unreachable":
            return f"{node} is unreachable"  # the message is hidden (no_log)
        if kind == "runner_on_failed" and not data.get("ignore_errors"):
            if data.get("task") == _READ_TASK:
                return f"radosgw-admin could not be run on {node}"
            return "the update service could not take the S3 keys over from the play"
    return None


def keys_from_run(
    events: Sequence[Mapping[str, Any]],
    answer: str | None,
    *,
    node: str,
    uid: str = S3_USER,
    timed_out: bool = False,
    timeout: float = KEYS_TIMEOUT_SECONDS,
) -> S3Keys:
    """The keys from the play's events and the answer file it left (``None``: none), else
    :class:`ProbeCredentialsError` saying why. Pure: the events are those ansible-runner hands over."""
    command = f"radosgw-admin user info --uid {uid}"
    if answer is None:
        if timed_out:
            raise ProbeCredentialsError(f"{command} on {node} gave no answer within {timeout:g} s")
        why = _play_failure(events, node) or "the play ended without an answer"
        raise ProbeCredentialsError(f"{command} on {node}: {why}")
    try:
        result = json.loads(answer)
    except json.JSONDecodeError:
        raise ProbeCredentialsError(f"{command} on {node}: the play's answer is not JSON") from None
    if not isinstance(result, dict):
        raise ProbeCredentialsError(f"{command} on {node}: the play's answer is not an object")
    rc = result.get("rc")
    if rc != 0:
        detail = _last_line(result.get("stderr")) or _last_line(result.get("msg")) or "no message"
        raise ProbeCredentialsError(f"{command} failed on {node} (exit {rc}): {detail}")
    try:
        return user_keys(str(result.get("stdout") or ""), uid)
    except ProbeCredentialsError as error:
        raise ProbeCredentialsError(f"{command} on {node}: {error}") from None


# --- reading the cluster ----------------------------------------------------------------------------------
def fetch_keys(
    inventory_source: Path, node: str, *, uid: str = S3_USER, timeout: int = KEYS_TIMEOUT_SECONDS
) -> S3Keys:
    """Run ``radosgw-admin user info --uid UID`` on ``node`` (one play, both tasks ``no_log``) and return the
    user's S3 keys; nothing of the run is kept."""
    work = Path(tempfile.mkdtemp(prefix="corral-probe-keys-"))  # 0700
    try:
        answer_file = work / _KEYS_FILE
        run = run_play(
            work,
            _KEYS_PLAY,
            inventory_source,
            timeout=timeout,
            extravars={
                "corral_probe_node": node,
                "corral_probe_uid": uid,
                "corral_probe_keys_file": str(answer_file),
            },
            envvars={"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
        )
        try:
            answer: str | None = answer_file.read_text()
        except OSError:
            answer = None
        return keys_from_run(run.events, answer, node=node, uid=uid, timed_out=run.timed_out, timeout=timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def s3_access(
    cluster: Cluster,
    rollout_id: str,
    *,
    hostvars: Mapping[str, Any] | None = None,
    timeout: int = KEYS_TIMEOUT_SECONDS,
) -> S3Access | None:
    """The probe's S3 access for this rollout, or ``None`` when there is no S3 to probe (no VIP, or the
    rollout does not roll Ceph). Raises :class:`ProbeCredentialsError` when S3 is there but its keys cannot be
    read. ``hostvars`` (the first node's) are read from the inventory when not given."""
    if not cluster.vip:
        return None  # the endpoint is not rolled (engine-only runs): nothing to reach S3 through
    if hostvars is None:
        try:
            data = ansible_inventory_data([cluster.inventory_source])
        except InventoryLoadError as error:
            raise ProbeCredentialsError(f"the inventory cannot be read: {error}") from None
        first = (data.get("_meta", {}).get("hostvars", {}) or {}).get(cluster.inventory.nodes[0].name) or {}
        hostvars = first if isinstance(first, Mapping) else {}
    if not ceph_rolled(hostvars):
        return None
    monitors = cluster.inventory.quorum.get(MONITOR_SERVICE, ())
    if not monitors:
        raise ProbeCredentialsError("the inventory places no Ceph monitor to read the S3 keys on")
    keys = fetch_keys(cluster.inventory_source, monitors[0], timeout=timeout)
    return S3Access(f"http://{cluster.vip}", bucket_name(rollout_id), keys, monitors[0])
