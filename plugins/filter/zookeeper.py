"""Filter ``corral.cloud.zookeeper_hosts``: where the ZooKeeper ensemble holding the update lock answers.

A thin wrapper around ``updater.domain.inventory.zookeeper_hosts`` (the one rule, which the update service
uses too); the documentation is in ``zookeeper_hosts.yml`` beside this file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError  # type: ignore[import-untyped]

try:
    from updater.domain.inventory import InventoryError, inventory_from_hostvars, zookeeper_hosts
except ImportError as error:  # pragma: no cover - exercised only on a controller without the package
    IMPORT_ERROR: ImportError | None = error
else:
    IMPORT_ERROR = None


def zookeeper_hosts_filter(nodes: Any, hostvars: Mapping[str, Any]) -> str:
    if IMPORT_ERROR is not None:
        raise AnsibleFilterError(
            "corral.cloud.zookeeper_hosts needs the corral-updater Python package on the controller "
            f"(pip install corral-updater): {IMPORT_ERROR}"
        )
    if isinstance(nodes, str) or not isinstance(nodes, Iterable):
        raise AnsibleFilterError(
            f"corral.cloud.zookeeper_hosts expects a list of inventory host names, got {type(nodes).__name__}"
        )
    names = [str(name) for name in nodes]
    try:
        inventory = inventory_from_hostvars(names, hostvars)
        return zookeeper_hosts(inventory, hostvars[inventory.nodes[0].name])
    except InventoryError as error:
        raise AnsibleFilterError(f"corral.cloud.zookeeper_hosts: {error}") from error


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"zookeeper_hosts": zookeeper_hosts_filter}
