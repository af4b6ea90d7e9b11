"""Action ``corral.cloud.boot_pointer``: point a node's next boot (once) or its default at an image.

A thin wrapper (runs on the controller) around ``updater.services.boot_pointers.set_boot``: the pointer is
recorded in ZooKeeper fenced by the rollout's token, then set at the boot service, which refuses a token
lower than one it already accepted for that node. Documentation: ``plugins/modules/boot_pointer.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.plugins.action import ActionBase  # type: ignore[import-untyped]

try:
    from updater.services.cluster.boot import BootServiceError, open_boot_service
    from updater.services.cluster.lock import DEFAULT_ROOT, ClusterLock, LockError
    from updater.services.cluster.zookeeper import zookeeper
    from updater.services.rollouts.boot_pointers import set_boot
    from updater.services.rollouts.release import RolloutRunnerError
except ImportError as error:  # pragma: no cover - exercised only on a controller without the package
    IMPORT_ERROR: ImportError | None = error
    DEFAULT_ROOT = "/corral/update"
else:
    IMPORT_ERROR = None

ARGUMENT_SPEC: dict[str, Any] = {
    "zookeeper_hosts": {"type": "str", "required": True},
    "root": {"type": "str", "default": DEFAULT_ROOT},
    "token": {"type": "int", "required": True},
    "node": {"type": "str", "required": True},
    "mode": {"type": "str", "choices": ["once", "default", "clear"], "required": True},
    "image": {"type": "str"},
    "backend": {"type": "str", "default": "lab"},
    "lab": {"type": "str"},
    "lab_root": {"type": "path", "default": "/var/lib/corral-lab"},
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
                "msg": f"corral.cloud.boot_pointer needs corral-updater: {IMPORT_ERROR}",
            }
        args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)[1]
        if args["mode"] != "clear" and not args["image"]:
            return {**result, "failed": True, "msg": f"mode={args['mode']} needs image"}
        try:
            boot = open_boot_service(args["backend"], lab=args["lab"], lab_root=Path(args["lab_root"]))
            if self._task.check_mode:
                return {**result, "changed": False, "pointer": boot.state(args["node"]).to_dict()}
            with zookeeper(args["zookeeper_hosts"], args["timeout"]) as client:
                pointer = set_boot(
                    ClusterLock(client, args["root"]),
                    boot,
                    args["token"],
                    args["node"],
                    mode=args["mode"],
                    image_id=args["image"],
                )
        except (BootServiceError, LockError, RolloutRunnerError, ValueError) as error:
            return {**result, "failed": True, "msg": str(error)}
        return {**result, "changed": True, "pointer": pointer}
