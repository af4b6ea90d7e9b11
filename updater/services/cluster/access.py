"""What the update service knows of the cluster it rolls: the inventory, where its ZooKeeper is, and what the
nodes run and how healthy they are right now.

- The inventory is read through ``ansible-inventory`` (:mod:`updater.services.cluster.inventory`), exactly as
  the rolling playbook reads it.
- ZooKeeper (the authority for the update lock and per-node progress, DESIGN.md §7) is found by the rule
  ``corral.cloud.rolling_update`` uses too (:func:`updater.domain.inventory.zookeeper_hosts`, its
  ``corral.cloud.zookeeper_hosts`` filter): ``corral_rolling_zookeeper_hosts`` when the inventory sets it,
  else the ZooKeeper quorum members' ``corral_address`` on ``corral_rolling_zookeeper_port`` (2181).
- :func:`observe` runs one bounded ansible-runner play over every node: it reads ``/etc/corral-release``
  with ``corral.cloud.node_release``, as the playbook and the per-node procedure do, then takes a quick look
  (``corral_health_quick``) with the procedure's health step (``corral.cloud.rolling_node`` ``health.yml``,
  every role of ``rolling_node_roles``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from updater.config import ServiceConfig
from updater.domain.inventory import Inventory, InventoryError, inventory_from_ansible
from updater.domain.inventory import zookeeper_hosts as domain_zookeeper_hosts
from updater.services.cluster.inventory import InventoryLoadError, ansible_inventory_data

OBSERVE_TIMEOUT_SECONDS = 120
ENDPOINT_ROLE = "endpoint"  # the role serving the VIP (corral_vip)

# Read every node's release, then run the health checks of every service role the procedure drains.
_OBSERVE_PLAY = """\
- name: Observe the nodes before a rollout
  hosts: nodes
  gather_facts: false
  tasks:
    - name: Read the node's release
      corral.cloud.node_release:

    - name: Check every service role is healthy
      ansible.builtin.include_role:
        name: corral.cloud.rolling_node
        tasks_from: health.yml
      vars:
        # Say how the cluster is now: a quick look per check, no waiting for it to heal (the procedure's
        # verify step waits; a preflight must not pass because it gave up waiting).
        corral_health_quick: true
"""
_RELEASE_TASK = "Read the node's release"


class ClusterAccessError(RuntimeError):
    """The cluster cannot be read (inventory, ZooKeeper settings); the message says what to fix."""


@dataclass(frozen=True)
class Cluster:
    inventory: Inventory
    zookeeper_hosts: str
    lab: str | None  # the lab's name when the cluster is a lab (its boot service)
    inventory_source: Path
    vip: str | None = None  # the endpoint's virtual IP (corral_vip), probed during a rollout when set
    secrets: tuple[str, ...] = ()  # inventory values never to show (BMC passwords, keys), for redaction


def _hostvars(data: Mapping[str, Any], node: str) -> Mapping[str, Any]:
    hostvars = data.get("_meta", {}).get("hostvars", {}).get(node) or {}
    return hostvars if isinstance(hostvars, Mapping) else {}


def zookeeper_hosts(data: Mapping[str, Any], inventory: Inventory) -> str:
    """``host:port,...`` of the ensemble holding the lock (the domain's rule, the first node's variables)."""
    try:
        return domain_zookeeper_hosts(inventory, _hostvars(data, inventory.nodes[0].name))
    except InventoryError as error:
        raise ClusterAccessError(str(error)) from None


# ansible-inventory takes about a second: the pages ask for the lock's holder on every view, so a cluster read
# is kept this long, and read again at once when the inventory file (or directory) changes.
CLUSTER_CACHE_SECONDS = 30.0
_cache: dict[str, tuple[float, int, Cluster]] = {}


def _mtime(source: Path) -> int:
    try:
        return source.stat().st_mtime_ns
    except OSError:
        return -1


def load_cluster(config: ServiceConfig) -> Cluster:
    """The cluster of the configured inventory (cached for :data:`CLUSTER_CACHE_SECONDS`)."""
    source = Path(config.inventory_path) if config.inventory_path else None
    if source is not None:
        cached = _cache.get(str(source))
        if cached and time.monotonic() - cached[0] < CLUSTER_CACHE_SECONDS and cached[1] == _mtime(source):
            return cached[2]
    cluster = _read_cluster(config)
    if source is not None:
        _cache[str(source)] = (time.monotonic(), _mtime(source), cluster)
    return cluster


def _read_cluster(config: ServiceConfig) -> Cluster:
    if not config.inventory_path:
        raise ClusterAccessError(
            "no inventory is configured: set inventory_path (corral-updater init --inventory FILE)"
        )
    source = Path(config.inventory_path)
    try:
        data = ansible_inventory_data([source])
        inventory = inventory_from_ansible(data)
    except (InventoryLoadError, InventoryError) as error:
        raise ClusterAccessError(f"the inventory {source} cannot be used: {error}") from None
    first = _hostvars(data, inventory.nodes[0].name)
    lab, vip = first.get("corral_lab"), first.get("corral_vip")
    roles = first.get("rolling_node_roles")
    if isinstance(roles, list) and ENDPOINT_ROLE not in roles:
        vip = None  # the procedure does not touch the endpoint here (engine-only runs): nothing to probe
    return Cluster(
        inventory,
        zookeeper_hosts(data, inventory),
        str(lab) if lab else None,
        source,
        str(vip) if vip else None,
        _secrets(data),
    )


def _secrets(data: Mapping[str, Any]) -> tuple[str, ...]:
    """Inventory values whose variable name says they are secret (``*password*``, ``*secret*``, ``*_key``)."""
    found: set[str] = set()
    for hostvars in (data.get("_meta", {}).get("hostvars") or {}).values():
        for name, value in (hostvars or {}).items():
            lowered = str(name).lower()
            secret = "password" in lowered or "secret" in lowered or lowered.endswith("_key")
            if secret and isinstance(value, str | int) and not str(value).startswith("/"):
                found.add(str(value))
    return tuple(sorted(found))


@dataclass(frozen=True)
class Observation:
    """What every node answered: its release, or why it did not; health failures by node."""

    releases: dict[str, str]
    unreachable: dict[str, str] = field(default_factory=dict)
    unhealthy: dict[str, str] = field(default_factory=dict)
    timed_out: bool = False


def _event_message(event: Mapping[str, Any]) -> str:
    data = event.get("event_data") or {}
    result = data.get("res") or {}
    message = str(result.get("msg") or result.get("stderr") or "").strip()
    task = str(data.get("task") or "")
    return f"{task}: {message}" if message else task


def observation_from_events(
    nodes: list[str], events: list[Mapping[str, Any]], *, timed_out: bool = False
) -> Observation:
    """Fold the events of the observe play into an :class:`Observation` (pure; unit-tested)."""
    releases: dict[str, str] = {}
    unreachable: dict[str, str] = {}
    unhealthy: dict[str, str] = {}
    for event in events:
        data = event.get("event_data") or {}
        host = str(data.get("host") or "")
        if host not in nodes:
            continue
        kind = event.get("event")
        if kind == "runner_on_ok" and data.get("task") == _RELEASE_TASK:
            releases[host] = str((data.get("res") or {}).get("release", "")).strip()
        elif kind == "runner_on_unreachable":
            unreachable[host] = _event_message(event)
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            if data.get("task") == _RELEASE_TASK:
                unreachable[host] = _event_message(event)
            else:
                unhealthy.setdefault(host, _event_message(event))
    for node in nodes:
        if node not in releases and node not in unreachable:
            unreachable[node] = "no answer" + (" before the time limit" if timed_out else "")
    return Observation(releases, unreachable, unhealthy, timed_out)


@dataclass(frozen=True)
class PlayRun:
    events: list[Mapping[str, Any]]
    timed_out: bool


def run_play(
    work: Path,
    play: str,
    inventory_source: Path,
    *,
    timeout: int,
    extravars: Mapping[str, Any] | None = None,
    envvars: Mapping[str, str] | None = None,
) -> PlayRun:
    """Run the playbook text ``play`` with ansible-runner in ``work`` (a private directory the caller made and
    removes), bounded by ``timeout``; its events are kept in memory only, never written to disk."""
    (work / "project").mkdir()
    (work / "project" / "play.yml").write_text(play)
    events: list[Mapping[str, Any]] = []

    def keep(event: Mapping[str, Any]) -> bool:
        events.append(event)
        return False  # nothing to keep on disk

    runner = ansible_runner.run(
        private_data_dir=str(work),
        playbook="play.yml",
        inventory=str(inventory_source),
        extravars=dict(extravars or {}),
        envvars=dict(envvars or {}),
        event_handler=keep,
        quiet=True,
        timeout=timeout,
        suppress_env_files=True,
    )
    return PlayRun(events, runner.status == "timeout")


def observe(cluster: Cluster, *, timeout: int = OBSERVE_TIMEOUT_SECONDS) -> Observation:
    """Each node's release and the role health checks, in one ansible-runner play bounded by ``timeout``."""
    work = Path(tempfile.mkdtemp(prefix="corral-observe-"))
    try:
        run = run_play(work, _OBSERVE_PLAY, cluster.inventory_source, timeout=timeout)
        return observation_from_events(list(cluster.inventory.names), run.events, timed_out=run.timed_out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
