"""Action ``corral.cloud.release_playbook``: run the per-node plays with the TARGET release's collection first
on the collection path, streaming their output, and stop them if the controller's ansible-playbook goes away.

A thin wrapper around ``updater.services.playbook.run_release_playbook``; the documentation is
``plugins/modules/release_playbook.py`` and docs/update.md says why the per-node plays run from the target
release's collection.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ansible.plugins.action import ActionBase  # type: ignore[import-untyped]
from ansible.utils.display import Display  # type: ignore[import-untyped]

try:
    from updater.services.rollouts.playbook import run_release_playbook
except ImportError as error:  # pragma: no cover - exercised only on a controller without the package
    IMPORT_ERROR: ImportError | None = error
else:
    IMPORT_ERROR = None

display = Display()

ARGUMENT_SPEC: dict[str, Any] = {
    "argv": {"type": "list", "elements": "str", "required": True},
    "collections_paths": {"type": "list", "elements": "path", "required": True},
    "log_dir": {"type": "path", "required": True},
    "name": {"type": "str", "default": "rollout"},
}


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        if IMPORT_ERROR is not None:
            return {
                **result,
                "failed": True,
                "msg": f"corral.cloud.release_playbook needs corral-updater: {IMPORT_ERROR}",
            }
        args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)[1]
        log = Path(args["log_dir"]) / f"{args['name']}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.log"
        display.display(f"per-node run: {' '.join(args['argv'])} (log: {log})")
        try:
            run = run_release_playbook(
                args["argv"],
                collections_paths=args["collections_paths"],
                log=log,
                on_line=lambda line: display.display(f"  | {line}"),
            )
        except OSError as error:
            return {**result, "failed": True, "msg": f"cannot run the per-node plays: {error}"}
        result.update(changed=True, rc=run.returncode, log=str(run.log), tail=list(run.tail))
        if run.orphaned:
            return {**result, "failed": True, "msg": "the controller's ansible-playbook went away: stopped"}
        if run.returncode != 0:
            stops = [line for line in run.tail if "stopped" in line or "refused" in line or "fatal:" in line]
            reason = stops[-1].strip() if stops else f"exit status {run.returncode}"
            return {**result, "failed": True, "msg": f"the per-node run failed (log {run.log}): {reason}"}
        return result
