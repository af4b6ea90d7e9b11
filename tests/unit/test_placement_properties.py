"""Hypothesis properties of quorum placement over random inventories."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from updater.domain.placement import NodeLocation, default_member_count, quorum_members, spread_order


@st.composite
def inventories(draw: st.DrawFn, min_nodes: int = 3, racked: bool | None = None) -> list[NodeLocation]:
    site_count = draw(st.integers(1, 4))
    if racked is None:
        racked = draw(st.booleans())
    nodes: list[NodeLocation] = []
    for site_index in range(site_count):
        rack_count = draw(st.integers(1, 4)) if racked else 1
        for rack_index in range(rack_count):
            for host_index in range(draw(st.integers(0 if nodes else 1, 5))):
                nodes.append(
                    NodeLocation(
                        f"s{site_index}r{rack_index}n{host_index}",
                        f"site{site_index}",
                        f"rack{rack_index}" if racked else None,
                    )
                )
    while len(nodes) < min_nodes:
        nodes.append(NodeLocation(f"extra{len(nodes)}", "site0", "rack0" if racked else None))
    return nodes


def domain(node: NodeLocation) -> tuple[str, str]:
    return (node.site, node.rack or node.name)


@given(inventories())
def test_member_count_is_odd_distinct_and_from_the_inventory(nodes: list[NodeLocation]) -> None:
    members = quorum_members(nodes)
    assert len(members) == default_member_count(len(nodes))
    assert len(members) % 2 == 1
    assert len(set(members)) == len(members)
    assert set(members) <= {node.name for node in nodes}


@given(inventories(), st.randoms(use_true_random=False))
def test_members_do_not_depend_on_inventory_order(nodes: list[NodeLocation], rng: random.Random) -> None:
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    assert quorum_members(shuffled) == quorum_members(nodes)


@given(inventories())
def test_sites_are_balanced_unless_a_site_runs_out_of_nodes(nodes: list[NodeLocation]) -> None:
    by_name = {node.name: node for node in nodes}
    members = quorum_members(nodes)
    site_sizes = Counter(node.site for node in nodes)
    per_site = Counter(by_name[name].site for name in members)
    # A site with fewer members than another has given every node it has.
    most = max(per_site.values())
    for site, size in site_sizes.items():
        assert per_site[site] >= most - 1 or per_site[site] == size


@given(inventories())
def test_no_domain_holds_two_members_while_a_domain_of_its_site_holds_none(nodes: list[NodeLocation]) -> None:
    by_name = {node.name: node for node in nodes}
    members = quorum_members(nodes)
    used = Counter(domain(by_name[name]) for name in members)
    for site in {node.site for node in nodes}:
        domains = {domain(node) for node in nodes if node.site == site}
        if any(used[d] >= 2 for d in domains):
            assert all(used[d] >= 1 for d in domains)


@given(inventories(min_nodes=5, racked=True), st.integers(0, 3))
def test_adding_a_node_behind_a_full_rack_keeps_the_members(nodes: list[NodeLocation], pick: int) -> None:
    # A new node that sorts last in a domain that already has at least as many nodes as there are
    # members can never be needed to spread the quorum.
    members = quorum_members(nodes)
    domains = Counter(domain(node) for node in nodes)
    full = sorted(d for d, size in domains.items() if size >= len(members))
    assume(full)
    site, rack = full[pick % len(full)]
    assert quorum_members([*nodes, NodeLocation("zz-new", site, rack)]) == members


@given(inventories())
def test_spread_order_is_a_permutation_of_the_nodes(nodes: list[NodeLocation]) -> None:
    assert sorted(spread_order(nodes)) == sorted(node.name for node in nodes)


@settings(max_examples=30)
@given(inventories(min_nodes=5))
def test_explicit_count_three_is_a_prefix_choice_of_count_five(nodes: list[NodeLocation]) -> None:
    assert set(quorum_members(nodes, count=3)) <= set(quorum_members(nodes, count=5))
