"""Filter ``corral.cloud.rolling_plan``: the rolling-update plan for the play's nodes.

A thin wrapper around ``updater.domain.plan.plan_rollout`` (the one planner, shared with the update
service); the documentation is in ``rolling_plan.yml`` beside this file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError  # type: ignore[import-untyped]

try:
    from updater.domain.inventory import InventoryError, inventory_from_hostvars
    from updater.domain.plan import PlanError, plan_rollout
    from updater.domain.states import NodeProgress, StateError
except ImportError as error:  # pragma: no cover - exercised only on a controller without the package
    IMPORT_ERROR: ImportError | None = error
else:
    IMPORT_ERROR = None


def rolling_plan_filter(
    nodes: Any,
    hostvars: Mapping[str, Any],
    target_release: str,
    *,
    batch_mode: str = "node",
    progress: Mapping[str, Mapping[str, Any]] | None = None,
    ceph_release_from: str | None = None,
    ceph_release_to: str | None = None,
) -> dict[str, Any]:
    if IMPORT_ERROR is not None:
        raise AnsibleFilterError(
            "corral.cloud.rolling_plan needs the corral-updater Python package on the controller "
            f"(pip install corral-updater): {IMPORT_ERROR}"
        )
    if isinstance(nodes, str) or not isinstance(nodes, Iterable):
        raise AnsibleFilterError(
            f"corral.cloud.rolling_plan expects a list of inventory host names, got {type(nodes).__name__}"
        )
    try:
        inventory = inventory_from_hostvars([str(name) for name in nodes], hostvars)
        records = {str(name): NodeProgress.from_dict(record) for name, record in (progress or {}).items()}
        plan = plan_rollout(
            inventory,
            str(target_release),
            batch_mode=str(batch_mode),
            progress=records,
            ceph_release_from=ceph_release_from or None,
            ceph_release_to=ceph_release_to or None,
        )
    except (InventoryError, PlanError, StateError) as error:
        raise AnsibleFilterError(f"corral.cloud.rolling_plan: {error}") from error
    return plan.to_report()


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"rolling_plan": rolling_plan_filter}
