"""Boot pointers: record "boot this image once" / "make it the default" in ZooKeeper (fenced by the
newest token), then set it at the boot service (fenced again at the resource, see
:mod:`updater.services.cluster.boot`). Behind the ``corral.cloud.boot_pointer`` action.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from updater.services.cluster.boot import BootService
from updater.services.cluster.lock import ClusterLock
from updater.services.rollouts.release import RolloutRunnerError


# --- boot pointers ------------------------------------------------------------------------------------------
def set_boot(
    lock: ClusterLock, boot: BootService, token: int, node: str, *, mode: str, image_id: str | None
) -> dict[str, Any]:
    """Point ``node`` at ``image_id`` (``once``: the next boot only; ``default``: from now on; ``clear``: drop
    a pending one-shot). The ZooKeeper record is written first (fenced by the newest token), then the boot
    service (fenced again at the resource)."""
    current = boot.state(node)
    if mode == "once":
        pointer: Mapping[str, Any] = {"once": image_id, "default": current.default}
    elif mode == "default":
        if image_id is None:
            raise RolloutRunnerError("mode 'default' needs an image")
        pointer = {"once": None, "default": image_id}
    elif mode == "clear":
        pointer, image_id = {"once": None, "default": current.default}, None
    else:
        raise RolloutRunnerError(f"unknown boot pointer mode {mode!r}: once, default or clear")
    if mode == "once" and image_id is None:
        raise RolloutRunnerError("mode 'once' needs an image")
    lock.set_boot_pointer(token, node, pointer)
    if mode == "default" and image_id is not None:
        return boot.make_default(node, image_id, token).to_dict()
    return boot.boot_once(node, image_id, token).to_dict()
