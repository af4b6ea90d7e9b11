"""The planner's inventory model, from ansible-inventory data and through the real ansible-inventory."""

from __future__ import annotations

from pathlib import Path

import pytest

from updater.domain.inventory import (
    DomainLevel,
    FailureDomain,
    InventoryError,
    build_inventory,
    inventory_from_ansible,
    inventory_from_hostvars,
)
from updater.domain.placement import NodeLocation
from updater.services.cluster.inventory import InventoryLoadError, load_inventory

LAB_INVENTORY = """\
nodes:
  vars:
    corral_cluster_name: lab
    corral_cluster_network: 10.77.0.0/24
  hosts:
    node3: {ansible_host: 10.77.0.13, corral_address: 10.77.0.13}
    node1: {ansible_host: 10.77.0.11, corral_address: 10.77.0.11}
    node2: {ansible_host: 10.77.0.12, corral_address: 10.77.0.12}
    node4: {ansible_host: 10.77.0.14, corral_address: 10.77.0.14}
"""

RACKED_INVENTORY = """\
nodes:
  vars:
    corral_quorum_members: [b1, a2, c1]
  children:
    rack_a:
      vars: {corral_rack: ra, corral_site: east}
      hosts: {a1: {}, a2: {}}
    rack_b:
      vars: {corral_rack: rb, corral_site: east}
      hosts: {b1: {}}
    rack_c:
      vars: {corral_rack: rc, corral_site: west}
      hosts: {c1: {}, c2: {}}
"""


def test_lab_inventory_through_ansible_inventory(tmp_path: Path) -> None:
    source = tmp_path / "lab.yml"
    source.write_text(LAB_INVENTORY)
    inventory = load_inventory([source])
    assert inventory.names == ("node1", "node2", "node3", "node4")
    assert inventory.cluster_name == "lab"
    assert inventory.domain_level is DomainLevel.HOST
    assert inventory.quorum == {
        "zookeeper": ("node1", "node2", "node3"),
        "ceph_mon": ("node1", "node2", "node3"),
    }
    assert inventory.node("node1").address == "10.77.0.11"
    assert inventory.node("node1").domain == FailureDomain("site1", "node1")
    assert not inventory.node("node4").holds_quorum


def test_racks_from_child_groups_and_override_through_ansible_inventory(tmp_path: Path) -> None:
    source = tmp_path / "racked.yml"
    source.write_text(RACKED_INVENTORY)
    inventory = load_inventory([source])
    assert inventory.domain_level is DomainLevel.RACK
    assert inventory.quorum["zookeeper"] == ("a2", "b1", "c1")
    assert [str(domain) for domain in inventory.domains()] == ["east/ra", "east/rb", "west/rc"]
    assert inventory.node("c2").site == "west"


def test_export_format_applies_group_vars_under_host_vars() -> None:
    data = {
        "_meta": {"hostvars": {"n1": {"corral_rack": "r9"}}},
        "nodes": {"hosts": ["n1", "n2", "n3"], "vars": {"corral_rack": "r1", "corral_site": "dc"}},
    }
    inventory = inventory_from_ansible(data)
    assert inventory.node("n1").domain == FailureDomain("dc", "r9")
    assert inventory.node("n2").domain == FailureDomain("dc", "r1")


def test_unreadable_inventory_source_is_an_error(tmp_path: Path) -> None:
    source = tmp_path / "broken.yml"
    source.write_text("nodes: [this is: not an inventory\n")
    with pytest.raises(InventoryLoadError, match="could not read the inventory"):
        load_inventory([source])


def test_missing_inventory_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryLoadError, match="inventory source not found"):
        load_inventory([tmp_path / "absent.yml"])


def test_inventory_without_nodes_group_is_an_error(tmp_path: Path) -> None:
    source = tmp_path / "other.yml"
    source.write_text("web:\n  hosts:\n    w1:\n")
    with pytest.raises(InventoryError, match="no hosts in group 'nodes'"):
        load_inventory([source])


def test_partial_racks_are_an_inventory_error() -> None:
    data = {"_meta": {"hostvars": {"n1": {"corral_rack": "r1"}}}, "nodes": {"hosts": ["n1", "n2", "n3"]}}
    with pytest.raises(
        InventoryError, match="quorum placement: corral_rack is set on some nodes but not on n2, n3"
    ):
        inventory_from_ansible(data)


def test_override_that_differs_between_nodes_is_an_error() -> None:
    data = {
        "_meta": {"hostvars": {"n1": {"corral_quorum_members": ["n1", "n2", "n3"]}}},
        "nodes": {"hosts": ["n1", "n2", "n3"]},
    }
    with pytest.raises(InventoryError, match="corral_quorum_members differs between nodes"):
        inventory_from_ansible(data)


def test_a_non_name_site_is_an_error() -> None:
    data = {"_meta": {"hostvars": {"n1": {"corral_site": ["a"]}}}, "nodes": {"hosts": ["n1", "n2", "n3"]}}
    with pytest.raises(InventoryError, match="corral_site of node 'n1' must be a name"):
        inventory_from_ansible(data)


def test_nodes_disagreeing_on_cluster_name_is_an_error() -> None:
    data = {
        "_meta": {"hostvars": {"n1": {"corral_cluster_name": "a"}, "n2": {"corral_cluster_name": "b"}}},
        "nodes": {"hosts": ["n1", "n2", "n3"]},
    }
    with pytest.raises(InventoryError, match="disagree on corral_cluster_name: a, b"):
        inventory_from_ansible(data)


def test_unknown_node_lookup_names_the_group() -> None:
    inventory = build_inventory([NodeLocation("n1"), NodeLocation("n2"), NodeLocation("n3")])
    with pytest.raises(InventoryError, match="node 'n9' is not in the inventory \\(group 'nodes'\\)"):
        inventory.node("n9")


def test_from_hostvars_reads_only_the_contract_and_names_missing_hosts() -> None:
    hostvars = {f"n{i}": {"corral_site": "dc2", "ansible_password": "not read"} for i in (1, 2, 3)}
    inventory = inventory_from_hostvars(["n3", "n1", "n2"], hostvars)
    assert inventory.names == ("n1", "n2", "n3")
    assert {node.site for node in inventory.nodes} == {"dc2"}
    with pytest.raises(InventoryError, match="no hostvars for n4"):
        inventory_from_hostvars(["n1", "n4"], hostvars)
