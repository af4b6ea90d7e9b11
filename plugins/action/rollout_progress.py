"""Action ``corral.cloud.rollout_progress``: begin (plan with the one planner and take back) a rollout,
record a node's transition, apply an operator's pause or abort before a node (``control``), finish the
rollout, or read it; every write fenced by the rollout's token.

A thin wrapper (runs on the controller) around ``updater.services.rollouts.records``; the rules (legal
transitions, never two failure domains, quorum holders alone) are the domain's ``Rollout``.
Documentation: ``plugins/modules/rollout_progress.py``.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase  # type: ignore[import-untyped]

try:
    from updater.domain.inventory import InventoryError, inventory_from_hostvars
    from updater.services.cluster.lock import DEFAULT_ROOT, ClusterLock, LockError
    from updater.services.cluster.zookeeper import zookeeper
    from updater.services.rollouts.records import (
        apply_control,
        finish_rollout,
        move_node,
        next_action,
        plan_and_begin,
        plan_only,
        progress_dicts,
    )
    from updater.services.rollouts.release import RolloutRunnerError
except ImportError as error:  # pragma: no cover - exercised only on a controller without the package
    IMPORT_ERROR: ImportError | None = error
    DEFAULT_ROOT = "/corral/update"
else:
    IMPORT_ERROR = None

ARGUMENT_SPEC: dict[str, Any] = {
    "zookeeper_hosts": {"type": "str", "required": True},
    "root": {"type": "str", "default": DEFAULT_ROOT},
    "action": {
        "type": "str",
        "choices": ["begin", "node", "resume", "control", "finish", "read"],
        "required": True,
    },
    "rollout_id": {"type": "str", "required": True},
    "token": {"type": "int"},
    # begin
    "nodes": {"type": "list", "elements": "str"},
    "target_release": {"type": "str"},
    "batch_mode": {"type": "str", "default": "node"},
    "observed": {"type": "dict", "default": {}},
    # node
    "node": {"type": "str"},
    "state": {"type": "str"},
    "release": {"type": "str"},
    "boot_id": {"type": "str"},
    "operator_override": {"type": "bool", "default": False},
    # resume (also node, release, boot_id)
    # finish
    "outcome": {"type": "str", "choices": ["succeeded", "failed", "aborted"]},
    "reason": {"type": "str", "default": ""},
    "timeout": {"type": "float", "default": 10.0},
}
_NEEDS = {
    "begin": ("token", "nodes", "target_release"),
    "node": ("token", "node", "state"),
    "resume": ("node", "release", "boot_id"),
    "control": ("token",),
    "finish": ("token", "outcome"),
    "read": (),
}


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        if IMPORT_ERROR is not None:
            return {
                **result,
                "failed": True,
                "msg": f"corral.cloud.rollout_progress needs corral-updater: {IMPORT_ERROR}",
            }
        args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)[1]
        needs = _NEEDS[args["action"]]
        if self._task.check_mode and args["action"] == "begin":
            needs = tuple(name for name in needs if name != "token")  # check mode only plans
        missing = [name for name in needs if args[name] is None]
        if missing:
            return {**result, "failed": True, "msg": f"action={args['action']} needs {', '.join(missing)}"}
        action = args["action"]
        if self._task.check_mode and action in {"node", "control", "finish"}:
            action = "read"  # check mode writes nothing; begin only plans (see _do)
        try:
            with zookeeper(args["zookeeper_hosts"], args["timeout"]) as client:
                lock = ClusterLock(client, args["root"])
                result.update(self._do(action, lock, args, task_vars or {}, bool(self._task.check_mode)))
        except (LockError, RolloutRunnerError, InventoryError, ValueError) as error:
            return {**result, "failed": True, "msg": str(error)}
        return result

    @staticmethod
    def _do(  # noqa: PLR0911 (one return per action)
        action: str, lock: ClusterLock, args: dict[str, Any], task_vars: dict[str, Any], check_mode: bool
    ) -> dict[str, Any]:
        rollout_id, token = args["rollout_id"], args["token"]
        if action == "begin" and check_mode:
            inventory = inventory_from_hostvars(args["nodes"], task_vars.get("hostvars", {}))
            plan = plan_only(
                lock,
                rollout_id,
                inventory,
                args["target_release"],
                batch_mode=args["batch_mode"],
                observed={str(k): str(v) for k, v in args["observed"].items()},
            )[0]
            return {"changed": False, "plan": plan.to_report()}
        if action == "begin":
            inventory = inventory_from_hostvars(args["nodes"], task_vars.get("hostvars", {}))
            rollout, plan = plan_and_begin(
                lock,
                token,
                rollout_id,
                inventory,
                args["target_release"],
                batch_mode=args["batch_mode"],
                observed={str(k): str(v) for k, v in args["observed"].items()},
            )
            return {"changed": True, "plan": plan.to_report(), "rollout": rollout.to_dict()}
        if action == "resume":
            next_step, state = next_action(
                lock, rollout_id, args["node"], release=args["release"], boot_id=args["boot_id"]
            )
            return {"changed": False, "next_step": next_step, "state": state}
        if action == "node":
            progress = move_node(
                lock,
                token,
                rollout_id,
                args["node"],
                args["state"],
                release=args["release"],
                boot_id_before_reboot=args["boot_id"],
                operator_override=args["operator_override"],
            )
            return {"changed": True, "progress": progress.to_dict()}
        if action == "control":
            # Before a node starts: an operator's pause or abort ends the run here (the node before is whole).
            applied = apply_control(lock, token, rollout_id)
            record = lock.read_rollout(rollout_id)
            return {
                "changed": applied is not None,
                "control": applied,
                "rollout": None if record is None else record.to_dict(),
            }
        if action == "finish":
            rollout = finish_rollout(lock, token, rollout_id, args["outcome"], args["reason"])
            return {"changed": True, "rollout": rollout.to_dict()}
        record = lock.read_rollout(rollout_id)
        return {
            "changed": False,
            "rollout": None if record is None else record.to_dict(),
            "progress": progress_dicts(lock, rollout_id),
        }
