"""Filter ``corral.cloud.quorum_members``: which nodes hold the ZooKeeper members and Ceph monitors.

A thin wrapper: the choice itself is made by ``updater.domain.placement`` (the one implementation,
shared with the rolling-update planner), which must be importable on the controller. The
documentation is in ``quorum_members.yml`` beside this file, where ansible-doc looks for filters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError  # type: ignore[import-untyped]

try:
    from updater.domain.placement import NodeLocation, PlacementError, quorum_members
except ImportError as error:  # pragma: no cover - exercised only on a controller without the package
    IMPORT_ERROR: ImportError | None = error
else:
    IMPORT_ERROR = None

OVERRIDE_VARIABLE = "corral_quorum_members"
_UNSET = object()


def _override(names: list[str], hostvars: Mapping[str, Any]) -> list[str] | None:
    """``corral_quorum_members`` as the nodes see it: it must be the same on every node."""
    values = {}
    for name in names:
        value = hostvars[name].get(OVERRIDE_VARIABLE, _UNSET)
        if value is not _UNSET and value is not None and value != []:
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise AnsibleFilterError(
                    f"{OVERRIDE_VARIABLE} must be a list of node names; node {name!r} has {value!r}"
                )
            values[name] = [str(member) for member in value]
    if not values:
        return None
    distinct = {tuple(value) for value in values.values()}
    if len(distinct) > 1 or len(values) != len(names):
        raise AnsibleFilterError(
            f"{OVERRIDE_VARIABLE} differs between nodes; set it once, as a variable of group 'nodes'"
        )
    return next(iter(values.values()))


def quorum_members_filter(nodes: Any, hostvars: Mapping[str, Any]) -> list[str]:
    if IMPORT_ERROR is not None:
        raise AnsibleFilterError(
            "corral.cloud.quorum_members needs the corral-updater Python package on the controller "
            f"(pip install corral-updater): {IMPORT_ERROR}"
        )
    if isinstance(nodes, str) or not isinstance(nodes, Iterable):
        raise AnsibleFilterError(
            f"corral.cloud.quorum_members expects a list of inventory host names, got {type(nodes).__name__}"
        )
    names = [str(name) for name in nodes]
    missing = [name for name in names if name not in hostvars]
    if missing:
        raise AnsibleFilterError(f"corral.cloud.quorum_members: no hostvars for {', '.join(missing)}")
    locations = [
        NodeLocation(
            name,
            str(hostvars[name].get("corral_site") or "site1"),
            str(hostvars[name].get("corral_rack") or "") or None,
        )
        for name in names
    ]
    try:
        return list(quorum_members(locations, override=_override(names, hostvars)))
    except PlacementError as error:
        raise AnsibleFilterError(f"corral.cloud.quorum_members: {error}") from error


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"quorum_members": quorum_members_filter}
