"""The cluster as the planner sees it, built from ``ansible-inventory --list`` output (plain data).

Follows the inventory contract (docs/inventory.md): every node is in group ``nodes``; per node
``corral_site`` (default ``site1``) and optional ``corral_rack``; ``corral_quorum_members`` may
override quorum placement. Which nodes hold the ZooKeeper members and Ceph monitors is computed
with :mod:`updater.domain.placement`, exactly as the roles compute it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from updater.domain.placement import (
    DEFAULT_SITE,
    NodeLocation,
    PlacementError,
    natural_key,
    quorum_members,
)

NODES_GROUP = "nodes"
QUORUM_SERVICES: tuple[str, ...] = ("zookeeper", "ceph_mon")
DEFAULT_ZOOKEEPER_PORT = 2181


class InventoryError(ValueError):
    """The inventory does not follow the contract."""


class DomainLevel(StrEnum):
    """The unit that may fail (and be taken down) as a whole: a rack when racks are given, else a host."""

    RACK = "rack"
    HOST = "host"


@dataclass(frozen=True, order=True)
class FailureDomain:
    site: str
    name: str  # the rack, or the host when there are no racks

    def __str__(self) -> str:
        return f"{self.site}/{self.name}"


@dataclass(frozen=True)
class Node:
    name: str
    site: str
    rack: str | None
    address: str | None = None
    quorum_services: frozenset[str] = field(default_factory=frozenset)

    @property
    def domain(self) -> FailureDomain:
        return FailureDomain(self.site, self.rack or self.name)

    @property
    def holds_quorum(self) -> bool:
        return bool(self.quorum_services)


def sort_key(name: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    return (natural_key(name), name)


def domain_sort_key(domain: FailureDomain) -> tuple[Any, ...]:
    return (sort_key(domain.site), sort_key(domain.name))


@dataclass(frozen=True)
class Inventory:
    nodes: tuple[Node, ...]  # natural name order
    domain_level: DomainLevel
    quorum: Mapping[str, tuple[str, ...]]  # service -> member node names
    cluster_name: str | None = None
    _by_name: Mapping[str, Node] = field(default_factory=dict, repr=False, compare=False)

    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise InventoryError(f"node {name!r} is not in the inventory (group '{NODES_GROUP}')") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.nodes)

    def domains(self) -> dict[FailureDomain, list[Node]]:
        """Nodes by failure domain, domains in natural (site, name) order, nodes in name order."""
        grouped: dict[FailureDomain, list[Node]] = {}
        for node in self.nodes:
            grouped.setdefault(node.domain, []).append(node)
        return {domain: grouped[domain] for domain in sorted(grouped, key=domain_sort_key)}


def build_inventory(
    locations: Sequence[NodeLocation],
    *,
    quorum_override: Sequence[str] | None = None,
    addresses: Mapping[str, str] | None = None,
    cluster_name: str | None = None,
) -> Inventory:
    """The inventory of these nodes, with quorum members placed by :func:`quorum_members`."""
    try:
        members = quorum_members(locations, override=quorum_override)
    except PlacementError as error:
        raise InventoryError(f"quorum placement: {error}") from error
    member_set = set(members)
    addresses = addresses or {}
    nodes = tuple(
        Node(
            location.name,
            location.site,
            location.rack,
            addresses.get(location.name),
            frozenset(QUORUM_SERVICES) if location.name in member_set else frozenset(),
        )
        for location in sorted(locations, key=lambda location: sort_key(location.name))
    )
    level = DomainLevel.RACK if any(node.rack for node in nodes) else DomainLevel.HOST
    return Inventory(
        nodes=nodes,
        domain_level=level,
        quorum=dict.fromkeys(QUORUM_SERVICES, members),
        cluster_name=cluster_name,
        _by_name={node.name: node for node in nodes},
    )


def _group_hosts(data: Mapping[str, Any], group: str, seen: set[str]) -> list[str]:
    """Hosts of ``group`` and of its child groups, as ``ansible-inventory --list`` nests them."""
    if group in seen:
        return []
    seen.add(group)
    entry = data.get(group)
    if entry is None:
        return []
    if not isinstance(entry, Mapping):
        raise InventoryError(f"group {group!r} in the inventory data is not a mapping")
    hosts = [str(host) for host in entry.get("hosts", [])]
    for child in entry.get("children", []):
        hosts.extend(_group_hosts(data, str(child), seen))
    return hosts


def _text(value: object, variable: str, host: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InventoryError(f"{variable} of node {host!r} must be a name, got {value!r}")
    return str(value)


CONTRACT_VARIABLES = (
    "corral_site",
    "corral_rack",
    "corral_address",
    "corral_quorum_members",
    "corral_cluster_name",
)


def inventory_from_hostvars(names: Iterable[str], hostvars: Mapping[str, Mapping[str, Any]]) -> Inventory:
    """Build the inventory from a play's ``groups['nodes']`` and ``hostvars`` (controller plugins)."""
    hosts = [str(name) for name in names]
    missing = [name for name in hosts if name not in hostvars]
    if missing:
        raise InventoryError(f"no hostvars for {', '.join(missing)}")
    meta = {
        name: {variable: hostvars[name].get(variable) for variable in CONTRACT_VARIABLES} for name in hosts
    }
    return inventory_from_ansible({"_meta": {"hostvars": meta}, NODES_GROUP: {"hosts": hosts}})


def inventory_from_ansible(data: Mapping[str, Any]) -> Inventory:
    """Build the inventory from ``ansible-inventory --list`` output (with or without ``--export``).

    Without ``--export`` group variables are already merged into each host's hostvars; with it,
    the ``nodes`` group's ``vars`` are applied under the host's own variables.
    """
    if not isinstance(data, Mapping):
        raise InventoryError("inventory data must be a mapping (the JSON of ansible-inventory --list)")
    hosts = list(dict.fromkeys(_group_hosts(data, NODES_GROUP, set())))
    if not hosts:
        raise InventoryError(f"the inventory has no hosts in group '{NODES_GROUP}'")
    hostvars_all = data.get("_meta", {}).get("hostvars", {})
    group_vars = data.get(NODES_GROUP, {}).get("vars", {}) or {}
    locations: list[NodeLocation] = []
    addresses: dict[str, str] = {}
    overrides: dict[str, tuple[str, ...]] = {}
    cluster_names: set[str] = set()
    for host in hosts:
        hostvars = {**group_vars, **(hostvars_all.get(host) or {})}
        site = _text(hostvars.get("corral_site"), "corral_site", host) or DEFAULT_SITE
        rack = _text(hostvars.get("corral_rack"), "corral_rack", host)
        locations.append(NodeLocation(host, site, rack))
        address = _text(hostvars.get("corral_address"), "corral_address", host)
        if address:
            addresses[host] = address
        override = hostvars.get("corral_quorum_members")
        if override:
            if isinstance(override, str) or not isinstance(override, Iterable):
                raise InventoryError(
                    f"corral_quorum_members must be a list of node names; node {host!r} has {override!r}"
                )
            overrides[host] = tuple(str(member) for member in override)
        cluster_name = _text(hostvars.get("corral_cluster_name"), "corral_cluster_name", host)
        if cluster_name:
            cluster_names.add(cluster_name)
    if overrides and (len(set(overrides.values())) > 1 or len(overrides) != len(hosts)):
        raise InventoryError(
            "corral_quorum_members differs between nodes; set it once, as a variable of group 'nodes'"
        )
    if len(cluster_names) > 1:
        raise InventoryError(f"nodes disagree on corral_cluster_name: {', '.join(sorted(cluster_names))}")
    return build_inventory(
        locations,
        quorum_override=next(iter(overrides.values())) if overrides else None,
        addresses=addresses,
        cluster_name=next(iter(cluster_names)) if cluster_names else None,
    )


def zookeeper_hosts(inventory: Inventory, settings: Mapping[str, Any]) -> str:
    """``host:port,...`` of the ZooKeeper ensemble that holds the update lock and the rollouts.

    ``settings`` are the nodes' variables (the first node's hostvars): ``corral_rolling_zookeeper_hosts`` when
    set (an ensemble that is not the cluster's own), else the ZooKeeper quorum members' ``corral_address`` on
    ``corral_rolling_zookeeper_port`` (2181). The one rule for the update service and, through the
    ``corral.cloud.zookeeper_hosts`` filter, the rolling playbook.
    """
    explicit = settings.get("corral_rolling_zookeeper_hosts")
    if explicit:
        return str(explicit)
    port_setting = settings.get("corral_rolling_zookeeper_port")
    try:
        port = int(port_setting) if port_setting not in (None, "") else DEFAULT_ZOOKEEPER_PORT
    except (TypeError, ValueError):
        raise InventoryError(
            f"corral_rolling_zookeeper_port must be a port number, not {port_setting!r}"
        ) from None
    members = inventory.quorum.get("zookeeper", ())
    addresses = [inventory.node(name).address for name in members]
    if not members or any(address is None for address in addresses):
        raise InventoryError(
            "cannot tell where the cluster's ZooKeeper is: every ZooKeeper member needs corral_address in "
            "the inventory (or set corral_rolling_zookeeper_hosts)"
        )
    return ",".join(f"{address}:{port}" for address in addresses)
