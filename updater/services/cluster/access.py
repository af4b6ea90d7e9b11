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

import re
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
from updater.services.cluster.ansible_env import play_environment
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
        tasks_from: health
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
    # the play itself could not do its work (a parse error, a module or role not found, no node in the
    # inventory): no verdict on any node, only this
    engine_error: str = ""


# A failed task whose own action loads other tasks failed to load them (a role or tasks file not found, a
# module in them unknown): that is the engine's error, never a health verdict of the tasks it would have run.
_INCLUDES = ("include_role", "import_role", "include_tasks", "import_tasks")
_ENGINE_MESSAGES = re.compile(
    r"couldn't resolve module/action|the role '[^']*' was not found|was not found in|unable to retrieve file"
    r"|could not find or access",
    re.IGNORECASE,
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _play_errors(event: Mapping[str, Any]) -> list[str]:
    """The engine's errors an event of no node says: ``ansible-playbook``'s own error lines in its output
    (``[ERROR]: ...``, ``ERROR! ...``), or that the play found no node."""
    if event.get("event") == "playbook_on_no_hosts_matched":
        return ["the inventory gave the play no node (is it readable, does it define the group nodes?)"]
    text = _ANSI.sub("", str(event.get("stdout") or ""))
    return [line.strip() for line in text.splitlines() if re.match(r"\s*(\[ERROR\]:|ERROR!)", line)]


def _engine_failure(data: Mapping[str, Any], message: str) -> bool:
    action = str(data.get("task_action") or "").rsplit(".", 1)[-1]
    return action in _INCLUDES or bool(_ENGINE_MESSAGES.search(message))


def _event_message(event: Mapping[str, Any]) -> str:
    data = event.get("event_data") or {}
    result = data.get("res") or {}
    message = str(result.get("msg") or result.get("stderr") or "").strip()
    task = str(data.get("task") or "")
    return f"{task}: {message}" if message else task


def observation_from_events(
    nodes: list[str], events: list[Mapping[str, Any]], *, timed_out: bool = False, failed: bool = False
) -> Observation:
    """Fold the events of the observe play into an :class:`Observation` (pure; unit-tested). A failed task
    is a node's verdict; the engine's own errors (``ansible-playbook``'s error lines, an include that could
    not load its tasks, a module or role not found, no node in the inventory, a play that ``failed`` with no
    node answering) are the observation's ``engine_error`` instead."""
    releases: dict[str, str] = {}
    unreachable: dict[str, str] = {}
    unhealthy: dict[str, str] = {}
    engine: list[str] = []
    answered = False
    for event in events:
        data = event.get("event_data") or {}
        kind = event.get("event")
        host = str(data.get("host") or "")
        if host not in nodes:
            engine.extend([] if host else _play_errors(event))
            continue
        answered = True
        if kind == "runner_on_ok" and data.get("task") == _RELEASE_TASK:
            releases[host] = str((data.get("res") or {}).get("release", "")).strip()
        elif kind == "runner_on_unreachable":
            unreachable[host] = _event_message(event)
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            message = _event_message(event)
            if _engine_failure(data, message):
                engine.append(f"{host}: {message}")
            elif data.get("task") == _RELEASE_TASK:
                unreachable[host] = message
            else:
                unhealthy.setdefault(host, message)
    if failed and not answered and not engine and not timed_out:
        engine.append("ansible-playbook failed before any node answered")
    error = "; ".join(dict.fromkeys(engine))
    for node in nodes:
        if node not in releases and node not in unreachable:
            why = f"not observed: {error}" if error else "no answer"
            unreachable[node] = why + (" before the time limit" if timed_out else "")
    return Observation(releases, unreachable, unhealthy, timed_out, error)


@dataclass(frozen=True)
class PlayRun:
    events: list[Mapping[str, Any]]
    timed_out: bool
    failed: bool = False  # ansible-playbook ended with an error of its own (not a timeout)


def run_play(
    work: Path,
    play: str,
    inventory_source: Path,
    *,
    timeout: int,
    extravars: Mapping[str, Any] | None = None,
    envvars: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> PlayRun:
    """Run the playbook text ``play`` with ansible-runner in ``work`` (a private directory the caller made and
    removes), bounded by ``timeout``; its events are kept in memory only, never written to disk. It finds the
    ``corral.cloud`` collection of this installation (``home``: the service's) itself
    (:func:`updater.services.cluster.ansible_env.play_environment`); ``envvars`` come on top."""
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
        envvars={**play_environment(work / "collections", home), **(envvars or {})},
        event_handler=keep,
        quiet=True,
        timeout=timeout,
        suppress_env_files=True,
    )
    return PlayRun(events, runner.status == "timeout", runner.status in {"failed", "error"})


def observe(
    cluster: Cluster, *, timeout: int = OBSERVE_TIMEOUT_SECONDS, home: Path | None = None
) -> Observation:
    """Each node's release and the role health checks, in one ansible-runner play bounded by ``timeout``."""
    work = Path(tempfile.mkdtemp(prefix="corral-observe-"))
    try:
        run = run_play(work, _OBSERVE_PLAY, cluster.inventory_source, timeout=timeout, home=home)
        return observation_from_events(
            list(cluster.inventory.names), run.events, timed_out=run.timed_out, failed=run.failed
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
