"""Action ``corral.cloud.update_lock``: take, take back, release, break or read the cluster update lock.

A thin wrapper (runs on the controller) around ``updater.services.cluster.lock.ClusterLock``, the one
implementation the update service uses too; the documentation is ``plugins/modules/update_lock.py``.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase  # type: ignore[import-untyped]

try:
    from updater.services.cluster.lock import DEFAULT_ROOT, ClusterLock, LockError, LockHeld
    from updater.services.cluster.zookeeper import lock_holder_dict, zookeeper
    from updater.services.rollouts.release import RolloutRunnerError
except ImportError as error:  # pragma: no cover - exercised only on a controller without the package
    IMPORT_ERROR: ImportError | None = error
    DEFAULT_ROOT = "/corral/update"
else:
    IMPORT_ERROR = None

ARGUMENT_SPEC: dict[str, Any] = {
    "zookeeper_hosts": {"type": "str", "required": True},
    "root": {"type": "str", "default": DEFAULT_ROOT},
    "state": {
        "type": "str",
        "choices": ["acquired", "released", "broken", "query", "checked"],
        "default": "acquired",
    },
    "rollout_id": {"type": "str"},
    "owner": {"type": "str", "default": "ansible-playbook"},
    "token": {"type": "int"},
    "timeout": {"type": "float", "default": 10.0},
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
                "msg": f"corral.cloud.update_lock needs corral-updater: {IMPORT_ERROR}",
            }
        args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)[1]
        state = args["state"]
        needs = {
            "acquired": ["rollout_id"],
            "released": ["rollout_id", "token"],
            "broken": ["token"],
            "checked": ["token"],
        }
        missing = [name for name in needs.get(state, []) if args[name] is None]
        if missing:
            return {**result, "failed": True, "msg": f"state={state} needs {', '.join(missing)}"}
        if self._task.check_mode and state not in {"query", "checked"}:
            state = "query"
            result["msg"] = "check mode: the lock was only read"
        try:
            with zookeeper(args["zookeeper_hosts"], args["timeout"]) as client:
                lock = ClusterLock(client, args["root"])
                if state == "acquired":
                    holder = lock.acquire(args["rollout_id"], args["owner"])
                    result.update(changed=True, token=holder.token, holder=lock_holder_dict(holder))
                elif state == "released":
                    lock.release(args["rollout_id"], args["token"])
                    result.update(changed=True, holder=None)
                elif state == "checked":
                    lock.check(args["token"])  # StaleToken (a LockError) when a newer token exists
                    result.update(changed=False, token=args["token"])
                elif state == "broken":
                    broken = lock.break_lock(args["token"])
                    result.update(changed=True, broken=lock_holder_dict(broken), holder=None)
                else:
                    holder_now = lock.holder()
                    result.update(
                        changed=False, holder=lock_holder_dict(holder_now), token=lock.current_token()
                    )
        except LockHeld as error:
            return {**result, "failed": True, "msg": str(error), "holder": lock_holder_dict(error.holder)}
        except (LockError, RolloutRunnerError, ValueError) as error:
            return {**result, "failed": True, "msg": str(error)}
        return result
