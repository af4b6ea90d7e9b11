"""The lab's Ansible inventory, shaped by the inventory contract (docs/inventory.md). Pure."""

from __future__ import annotations

from dataclasses import dataclass

from updater.lab.layout import BMC_PORT, LabLayout


@dataclass(frozen=True)
class NodeFacts:
    name: str
    number: int
    data_disks: tuple[str, ...]


def build(
    layout: LabLayout,
    nodes: list[NodeFacts],
    bmc_user: str,
    bmc_password: str,
    *,
    site: str = "site1",
    racks: int = 0,
) -> dict[str, object]:
    """The inventory; with ``racks`` > 0, node n sits in rack ``rack<(n-1) mod racks + 1>``."""
    hosts: dict[str, dict[str, object]] = {}
    for node in nodes:
        address = layout.node_address(node.number)
        hosts[node.name] = {
            "ansible_host": address,
            "corral_address": address,
            "corral_site": site,
            "corral_bmc_address": layout.bmc_address(node.number),
            "corral_bmc_port": BMC_PORT,
            "corral_bmc_user": bmc_user,
            "corral_bmc_password": bmc_password,
            "corral_data_disks": list(node.data_disks),
        }
        if racks > 0:
            hosts[node.name]["corral_rack"] = f"rack{(node.number - 1) % racks + 1}"
    ssh_args = (
        f"-o UserKnownHostsFile={layout.known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
    )
    return {
        "all": {
            "children": {
                "nodes": {
                    "hosts": hosts,
                    "vars": {
                        "ansible_user": "root",
                        "ansible_ssh_private_key_file": str(layout.ssh_key),
                        "ansible_ssh_common_args": ssh_args,
                        "ansible_python_interpreter": "/usr/bin/python3",
                        "corral_cluster_name": f"lab-{layout.name}",
                        "corral_cluster_network": str(layout.network),
                        "corral_vip": layout.vip,
                        "corral_lab": layout.name,
                    },
                }
            }
        }
    }
