"""Quorum placement: odd member count, widest spread, deterministic, validated overrides."""

from __future__ import annotations

from collections import Counter

import pytest

from updater.domain.placement import (
    NodeLocation,
    PlacementError,
    default_member_count,
    natural_sorted,
    quorum_members,
    spread_order,
)


def hosts(*names: str, site: str = "site1", rack: str | None = None) -> list[NodeLocation]:
    return [NodeLocation(name, site, rack) for name in names]


def test_three_nodes_all_become_members() -> None:
    assert quorum_members(hosts("node1", "node2", "node3")) == ("node1", "node2", "node3")


def test_four_nodes_give_three_members_in_natural_order() -> None:
    assert quorum_members(hosts("node10", "node2", "node1", "node3")) == ("node1", "node2", "node3")


def test_five_or_more_nodes_give_five_members() -> None:
    nodes = hosts(*(f"node{i}" for i in range(1, 9)))
    assert quorum_members(nodes) == ("node1", "node2", "node3", "node4", "node5")
    assert default_member_count(4) == 3
    assert default_member_count(5) == 5


def test_natural_sort_puts_numbers_in_numeric_order() -> None:
    assert natural_sorted(["n10", "n9", "n1", "m2"]) == ["m2", "n1", "n9", "n10"]


def test_members_spread_one_per_rack() -> None:
    nodes = hosts("a1", "a2", rack="r1") + hosts("b1", rack="r2") + hosts("c1", rack="r3")
    assert quorum_members(nodes) == ("a1", "b1", "c1")


def test_members_spread_across_sites_before_racks() -> None:
    nodes = (
        hosts("a1", rack="r1", site="east")
        + hosts("a2", rack="r2", site="east")
        + hosts("a3", rack="r3", site="east")
        + hosts("w1", rack="r1", site="west")
        + hosts("x1", rack="r1", site="x")
    )
    members = quorum_members(nodes, count=3)
    assert members == ("a1", "w1", "x1")


def test_five_members_over_three_sites_are_balanced() -> None:
    nodes = [NodeLocation(f"{site}-n{i}", site) for site in ("s1", "s2", "s3") for i in range(1, 5)]
    members = quorum_members(nodes)
    per_site = Counter(name.split("-")[0] for name in members)
    assert sorted(per_site.values()) == [1, 2, 2]


def test_same_inventory_in_any_order_gives_same_members() -> None:
    nodes = hosts("a1", "a2", rack="r1") + hosts("b1", "b2", rack="r2") + hosts("c1", "c2", rack="r3")
    assert quorum_members(nodes) == quorum_members(list(reversed(nodes)))


def test_adding_higher_numbered_nodes_keeps_the_members() -> None:
    before = quorum_members(hosts(*(f"node{i}" for i in range(1, 6))))
    after = quorum_members(hosts(*(f"node{i}" for i in range(1, 40))))
    assert before == after


def test_spread_order_lists_every_node_once() -> None:
    nodes = hosts("a1", "a2", rack="r1") + hosts("b1", rack="r2")
    assert spread_order(nodes) == ["a1", "b1", "a2"]


def test_override_is_returned_sorted() -> None:
    nodes = hosts("n1", "n2", "n3", "n4", "n5")
    assert quorum_members(nodes, override=["n5", "n1", "n3"]) == ("n1", "n3", "n5")


def test_single_member_override_for_a_one_node_test_cluster() -> None:
    assert quorum_members(hosts("solo"), override=["solo"]) == ("solo",)


def test_override_with_even_count_is_refused() -> None:
    with pytest.raises(PlacementError, match="odd number of members; 2 were asked for"):
        quorum_members(hosts("n1", "n2", "n3"), override=["n1", "n2"])


def test_override_with_unknown_node_is_refused() -> None:
    with pytest.raises(PlacementError, match=r"'n9', which is not a node of the inventory"):
        quorum_members(hosts("n1", "n2", "n3"), override=["n1", "n2", "n9"])


def test_override_with_repeated_node_is_refused() -> None:
    with pytest.raises(PlacementError, match="lists 'n1' more than once"):
        quorum_members(hosts("n1", "n2", "n3"), override=["n1", "n1", "n2"])


def test_override_as_string_is_refused() -> None:
    with pytest.raises(PlacementError, match="must be a list of node names"):
        quorum_members(hosts("n1", "n2", "n3"), override="n1")


def test_override_length_must_match_an_explicit_count() -> None:
    with pytest.raises(PlacementError, match="lists 3 nodes but 5 members were asked for"):
        quorum_members(hosts("n1", "n2", "n3"), override=["n1", "n2", "n3"], count=5)


def test_even_count_is_refused() -> None:
    with pytest.raises(PlacementError, match="odd number of members; 4 were asked for"):
        quorum_members(hosts("n1", "n2", "n3", "n4", "n5"), count=4)


def test_zero_count_is_refused() -> None:
    with pytest.raises(PlacementError, match="at least 1 member"):
        quorum_members(hosts("n1"), count=0)


def test_fewer_nodes_than_members_is_refused() -> None:
    with pytest.raises(PlacementError, match="3 quorum members need at least 3 nodes; the inventory has 2"):
        quorum_members(hosts("n1", "n2"))


def test_empty_inventory_is_refused() -> None:
    with pytest.raises(PlacementError, match="no nodes"):
        quorum_members([])


def test_duplicate_node_names_are_refused() -> None:
    with pytest.raises(PlacementError, match="repeated: n1"):
        quorum_members(hosts("n1", "n1", "n2"))


def test_racks_on_some_nodes_only_are_refused() -> None:
    nodes = hosts("a1", rack="r1") + hosts("b1", "b2")
    with pytest.raises(PlacementError, match="corral_rack is set on some nodes but not on b1, b2"):
        quorum_members(nodes)
