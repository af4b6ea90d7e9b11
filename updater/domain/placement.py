"""Quorum placement: which nodes hold the ZooKeeper members and the Ceph monitors.

This is the one implementation: the roles reach it through the ``corral.cloud.quorum_members``
filter and the planner through :mod:`updater.domain.inventory`.

Rules (docs/inventory.md):
- an odd number of members: 3 by default, 5 once the cluster has 5 nodes or more, or an explicit
  list (``corral_quorum_members``) that is checked (odd, distinct, every name a node);
- spread as widely as the failure domains allow: across sites first, then across racks inside a
  site, then across hosts;
- deterministic: the answer depends only on the set of nodes and their locations, never on the
  order they are listed in. Inside a rack (or a site without racks) the first hosts in natural name
  order are preferred, so growing a cluster with higher-numbered nodes leaves the members where
  they are (a membership change is a ZooKeeper reconfiguration and a monitor move).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import zip_longest

DEFAULT_SITE = "site1"
SMALL_QUORUM = 3
LARGE_QUORUM = 5


class PlacementError(ValueError):
    """The inventory or the requested members cannot give a valid quorum."""


@dataclass(frozen=True)
class NodeLocation:
    """Where a node sits: its site and, when the cluster has racks, its rack."""

    name: str
    site: str = DEFAULT_SITE
    rack: str | None = None


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts ``node2`` before ``node10`` (numbers compare as numbers)."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(name) if part)


def natural_sorted(names: Iterable[str]) -> list[str]:
    return sorted(names, key=lambda name: (natural_key(name), name))


def default_member_count(node_count: int) -> int:
    """3 members, or 5 once there are at least 5 nodes (a 5-member quorum survives two losses)."""
    return LARGE_QUORUM if node_count >= LARGE_QUORUM else SMALL_QUORUM


def validate_locations(nodes: Sequence[NodeLocation]) -> None:
    """Names are unique and non-empty; racks are set on every node or on none."""
    seen: set[str] = set()
    duplicates: set[str] = set()
    for node in nodes:
        if not node.name:
            raise PlacementError("a node has an empty name")
        if not node.site:
            raise PlacementError(f"node {node.name!r} has an empty site (corral_site)")
        if node.name in seen:
            duplicates.add(node.name)
        seen.add(node.name)
    if duplicates:
        raise PlacementError(f"node names must be unique; repeated: {', '.join(natural_sorted(duplicates))}")
    racked = [node.name for node in nodes if node.rack]
    if racked and len(racked) != len(nodes):
        unracked = natural_sorted(node.name for node in nodes if not node.rack)
        raise PlacementError(
            "corral_rack is set on some nodes but not on "
            f"{', '.join(unracked)}: set it on every node (rack failure domain) "
            "or on none (host failure domain)"
        )


def _interleave(sequences: Iterable[Sequence[str]]) -> list[str]:
    """Round-robin: the first of each sequence, then the second of each, and so on."""
    return [name for round_ in zip_longest(*sequences) for name in round_ if name is not None]


def spread_order(nodes: Sequence[NodeLocation]) -> list[str]:
    """Every node, ordered so that any prefix is spread as widely as possible.

    Sites in natural order take turns; inside a site its racks take turns; inside a rack hosts
    come in natural name order. Without racks every host is its own domain inside its site.
    """
    validate_locations(nodes)
    by_site: dict[str, dict[str, list[str]]] = {}
    for node in nodes:
        rack = node.rack or node.name
        by_site.setdefault(node.site, {}).setdefault(rack, []).append(node.name)
    site_sequences = []
    for site in natural_sorted(by_site):
        racks = by_site[site]
        site_sequences.append(_interleave(natural_sorted(racks[rack]) for rack in natural_sorted(racks)))
    return _interleave(site_sequences)


def _check_count(count: int, node_count: int) -> None:
    if count < 1:
        raise PlacementError(f"a quorum needs at least 1 member; {count} were asked for")
    if count % 2 == 0:
        raise PlacementError(
            f"a quorum needs an odd number of members; {count} were asked for "
            "(an even count tolerates no more failures than the odd count below it)"
        )
    if count > node_count:
        raise PlacementError(
            f"{count} quorum members need at least {count} nodes; the inventory has {node_count} "
            "(for a smaller test cluster, list the members in corral_quorum_members)"
        )


def _check_override(override: Sequence[str], nodes: Sequence[NodeLocation]) -> None:
    names = {node.name for node in nodes}
    unknown = [name for name in override if name not in names]
    if unknown:
        raise PlacementError(
            f"corral_quorum_members names {', '.join(map(repr, unknown))}, which "
            f"{'is not a node' if len(unknown) == 1 else 'are not nodes'} of the inventory"
        )
    repeated = natural_sorted({name for name in override if list(override).count(name) > 1})
    if repeated:
        raise PlacementError(f"corral_quorum_members lists {', '.join(map(repr, repeated))} more than once")
    _check_count(len(override), len(nodes))


def quorum_members(
    nodes: Sequence[NodeLocation],
    *,
    count: int | None = None,
    override: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """The quorum members' names, in natural name order.

    ``override`` (``corral_quorum_members``) wins when it is non-empty; ``count`` then, if given,
    must match its length. Without an override, ``count`` defaults to :func:`default_member_count`.
    """
    validate_locations(nodes)
    if not nodes:
        raise PlacementError("the inventory has no nodes (group 'nodes' is empty)")
    if override:
        if isinstance(override, str):
            raise PlacementError("corral_quorum_members must be a list of node names, not a string")
        if count is not None and count != len(override):
            raise PlacementError(
                f"corral_quorum_members lists {len(override)} nodes but {count} members were asked for"
            )
        _check_override(override, nodes)
        return tuple(natural_sorted(override))
    wanted = default_member_count(len(nodes)) if count is None else count
    _check_count(wanted, len(nodes))
    return tuple(natural_sorted(spread_order(nodes)[:wanted]))
