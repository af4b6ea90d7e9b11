"""The lab inventory follows the inventory contract (docs/inventory.md): playbooks run on it unchanged."""

from __future__ import annotations

from updater.lab.inventory import NodeFacts, build
from updater.lab.layout import BMC_PORT, LabLayout

HOST_KEYS = {
    "ansible_host",
    "corral_address",
    "corral_site",
    "corral_bmc_address",
    "corral_bmc_port",
    "corral_bmc_user",
    "corral_bmc_password",
    "corral_data_disks",
}
GROUP_KEYS = {"corral_cluster_name", "corral_cluster_network", "corral_vip", "corral_lab"}


def _inventory() -> dict:  # type: ignore[type-arg]
    layout = LabLayout("citest", 4)
    nodes = [NodeFacts("node1", 1, ("/dev/loop3",)), NodeFacts("node2", 2, ("/dev/loop4", "/dev/loop5"))]
    return build(layout, nodes, "admin", "s3cret")


def test_every_node_is_in_group_nodes_with_the_contract_variables() -> None:
    group = _inventory()["all"]["children"]["nodes"]
    assert set(group["hosts"]) == {"node1", "node2"}
    for host in group["hosts"].values():
        assert set(host) >= HOST_KEYS
    assert set(group["vars"]) >= GROUP_KEYS


def test_node_variables_carry_its_address_bmc_and_disks() -> None:
    hosts = _inventory()["all"]["children"]["nodes"]["hosts"]
    assert hosts["node2"]["ansible_host"] == hosts["node2"]["corral_address"] == "10.77.4.12"
    assert hosts["node2"]["corral_bmc_address"] == "127.77.4.2"
    assert hosts["node2"]["corral_bmc_port"] == BMC_PORT
    assert (hosts["node2"]["corral_bmc_user"], hosts["node2"]["corral_bmc_password"]) == ("admin", "s3cret")
    assert hosts["node2"]["corral_data_disks"] == ["/dev/loop4", "/dev/loop5"]
    assert hosts["node1"]["corral_site"] == "site1"
    assert "corral_rack" not in hosts["node1"]  # no racks: the failure domain is the host


def test_group_variables_name_the_cluster_network_vip_and_lab() -> None:
    group_vars = _inventory()["all"]["children"]["nodes"]["vars"]
    assert group_vars["corral_cluster_network"] == "10.77.4.0/24"
    assert group_vars["corral_vip"] == "10.77.4.10"
    assert group_vars["corral_lab"] == "citest"
    assert group_vars["ansible_user"] == "root"


def test_ssh_uses_the_lab_key_and_pinned_host_keys() -> None:
    group_vars = _inventory()["all"]["children"]["nodes"]["vars"]
    assert group_vars["ansible_ssh_private_key_file"] == "/var/lib/corral-lab/citest/ssh/id_ed25519"
    assert "StrictHostKeyChecking=yes" in group_vars["ansible_ssh_common_args"]
    assert (
        "UserKnownHostsFile=/var/lib/corral-lab/citest/ssh/known_hosts"
        in group_vars["ansible_ssh_common_args"]
    )


def test_racks_spread_nodes_round_robin_as_failure_domains() -> None:
    layout = LabLayout("citest", 4)
    nodes = [NodeFacts(f"node{n}", n, ()) for n in range(1, 6)]
    hosts = build(layout, nodes, "admin", "pw", racks=2)["all"]["children"]["nodes"]["hosts"]
    assert [hosts[f"node{n}"]["corral_rack"] for n in range(1, 6)] == [
        "rack1",
        "rack2",
        "rack1",
        "rack2",
        "rack1",
    ]
