"""Lab naming, sizing and addressing rules: what `up` accepts and what it gives each lab."""

from __future__ import annotations

import ipaddress

import pytest

from updater.lab.errors import LabError
from updater.lab.layout import (
    LabLayout,
    free_index,
    node_number,
    validate_disks,
    validate_lab_name,
    validate_node_count,
    validate_racks,
)


@pytest.mark.parametrize("count", [1, 3, 12])
def test_node_counts_from_one_to_twelve_are_accepted(count: int) -> None:
    assert validate_node_count(count) == count


@pytest.mark.parametrize("count", [0, -1, 13, 100])
def test_node_counts_outside_one_to_twelve_are_refused_with_the_range(count: int) -> None:
    with pytest.raises(LabError, match=rf"--nodes {count}: a lab has 1 to 12 nodes"):
        validate_node_count(count)


@pytest.mark.parametrize("name", ["demo", "citest", "a", "lab2x", "abcdefghij"])
def test_short_lowercase_lab_names_are_accepted(name: str) -> None:
    assert validate_lab_name(name) == name


@pytest.mark.parametrize("name", ["", "Demo", "2lab", "my-lab", "abcdefghijk", "../x", "images"])
def test_lab_names_that_cannot_name_a_bridge_or_clash_are_refused(name: str) -> None:
    with pytest.raises(LabError, match="lab name"):
        validate_lab_name(name)


def test_unknown_node_names_list_the_nodes_the_lab_has() -> None:
    assert node_number("node3", 3) == 3
    for bad in ("node4", "node0", "node01", "web1", ""):
        with pytest.raises(LabError, match=r"unknown node .*: this lab has node1, node2, node3"):
            node_number(bad, 3)


def test_disk_count_and_size_are_bounded() -> None:
    validate_disks(0, 1)
    validate_disks(8, 12)
    with pytest.raises(LabError, match="--disks 9"):
        validate_disks(9, 1)
    with pytest.raises(LabError, match="--disk-size 0"):
        validate_disks(1, 0)


def test_the_lowest_free_index_is_taken_and_exhaustion_is_reported() -> None:
    assert free_index(set()) == 1
    assert free_index({1, 2, 4}) == 3
    with pytest.raises(LabError, match="no free lab index"):
        free_index(set(range(1, 251)))


def test_two_labs_never_share_a_bridge_network_mac_or_bmc_address() -> None:
    a, b = LabLayout("demo", 1), LabLayout("citest", 2)
    assert a.bridge != b.bridge
    assert not a.network.overlaps(b.network)
    assert {a.node_mac(n) for n in range(1, 13)}.isdisjoint({b.node_mac(n) for n in range(1, 13)})
    assert {a.bmc_address(n) for n in range(1, 13)}.isdisjoint({b.bmc_address(n) for n in range(1, 13)})


def test_lab_addresses_stay_inside_the_private_lab_range_and_bmcs_on_loopback() -> None:
    lab = LabLayout("demo", 7)
    assert lab.network == ipaddress.IPv4Network("10.77.7.0/24")
    assert ipaddress.IPv4Address(lab.host_address) in lab.network
    assert ipaddress.IPv4Address(lab.vip) in lab.network
    addresses = {lab.node_address(n) for n in range(1, 13)}
    assert len(addresses) == 12
    assert lab.host_address not in addresses
    assert lab.vip not in addresses
    assert all(ipaddress.IPv4Address(lab.bmc_address(n)).is_loopback for n in range(1, 13))


def test_macs_are_fixed_locally_administered_unicast() -> None:
    mac = LabLayout("demo", 9).node_mac(12)
    assert mac == LabLayout("demo", 9).node_mac(12)
    first = int(mac.split(":")[0], 16)
    assert first & 0b10
    assert not first & 0b1


def test_bridge_and_veth_names_fit_the_kernel_limit() -> None:
    lab = LabLayout("abcdefghij", 250)
    assert len(lab.bridge) <= 15
    assert all(len(lab.veth(n)) <= 15 for n in range(1, 13))


def test_racks_range_from_none_to_one_per_node() -> None:
    validate_racks(0, 3)
    validate_racks(3, 3)
    with pytest.raises(LabError, match="--racks 4: give 0"):
        validate_racks(4, 3)
