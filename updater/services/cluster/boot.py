"""The boot service: "boot this node into image X once", "make X its default", through one interface.

DESIGN.md §2: a node's software changes only by booting another image, first for one trial boot, then
(once verified) as its default. Every caller (the ``corral.cloud.boot_pointer`` action, the update
service) goes through :class:`BootService`; backends differ only in where the pointer lives:

- ``lab``: the lab's boot pointers, read by each lab node's pre-start hook
  (``updater.lab.boot_service.LabBootService``, found through the ``corral.boot_backends`` entry point);
- ``pxe``: network boot of real hardware from the cluster's own boot service. Not built yet (a later
  issue); :func:`open_boot_service` names it and refuses it with that message. docs/update.md says
  where it plugs in.

**Fencing at the resource.** ZooKeeper's token check (``cluster_lock``) happens *before* a write; a
worker that passed it and then stalled could still write late. So every backend also keeps, per node
and under a file lock beside the pointer, the highest fencing token it has accepted, and refuses a
write carrying a lower one. A write with the same token is the same writer and is accepted.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from updater.services import filelocks

# Backends are found by name among the installed package's entry points (pyproject.toml), so choosing one is
# configuration and this module never imports a backend's code (the lab's lives in updater.lab).
ENTRY_POINT_GROUP = "corral.boot_backends"
BACKENDS = ("lab", "pxe")
# Beside the node's boot/ directory, not in it: ImageStore.in_use() reads every file in boot/ as an image id.
FENCE_DIR = "boot-fence"
FENCE_FILE = "token"
FENCE_LOCK = "lock"


class BootServiceError(RuntimeError):
    """A boot-service request was refused or failed; ``str()`` is a complete message for the operator."""


class StaleBootToken(BootServiceError):
    """The write carried a fencing token lower than one this node's boot pointer already accepted."""


@dataclass(frozen=True)
class NodeBootState:
    node: str
    default: str | None  # the image the node boots when nothing else is asked
    once: str | None  # the image of its pending one-shot boot, if any
    current: str | None  # the image it booted last (None when it is off)
    token: int | None  # the highest fencing token accepted for this node (None: never written)

    def to_dict(self) -> dict[str, str | int | None]:
        return {
            "node": self.node,
            "default": self.default,
            "once": self.once,
            "current": self.current,
            "token": self.token,
        }


class BootService(Protocol):
    def publish_image(self, artifact: Path, image_id: str) -> str:
        """Make the image (a canonical artifact whose SHA-256 is ``image_id``) bootable; returns its id."""
        ...

    def boot_once(self, node: str, image_id: str | None, token: int) -> NodeBootState:
        """Boot ``image_id`` at the node's next start only (``None`` clears a pending one-shot)."""
        ...

    def make_default(self, node: str, image_id: str, token: int) -> NodeBootState:
        """Boot ``image_id`` from now on (and clear a pending one-shot)."""
        ...

    def state(self, node: str) -> NodeBootState: ...


def _check_token(token: int) -> int:
    if isinstance(token, bool) or not isinstance(token, int) or token < 1:
        raise BootServiceError(
            f"a boot pointer write needs a fencing token (a positive integer), got {token!r}"
        )
    return token


@contextlib.contextmanager
def fenced(directory: Path, node: str, token: int) -> Iterator[None]:
    """Hold the node's fence lock while the caller writes; refuse a token lower than the highest accepted.

    The highest token is raised only after the write succeeded (a refused or failed write changes
    nothing), and the lock is held across the check and the write, so two writers never interleave.
    """
    _check_token(token)
    directory.mkdir(parents=True, exist_ok=True)
    with filelocks.take(directory / FENCE_LOCK, wait=True, mode=0o644):
        highest = read_fence(directory)
        if highest is not None and token < highest:
            raise StaleBootToken(
                f"boot pointer of {node} refused: fencing token {token} is stale (token {highest} was "
                "already used on this node; another worker or rollout owns the cluster now)"
            )
        yield
        if highest is None or token > highest:
            tmp = directory / f"{FENCE_FILE}.tmp"
            tmp.write_text(f"{token}\n", encoding="ascii")
            os.replace(tmp, directory / FENCE_FILE)


def read_fence(directory: Path) -> int | None:
    try:
        text = (directory / FENCE_FILE).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        raise BootServiceError(
            f"{directory / FENCE_FILE} is corrupt ({text[:40]!r}): repair it by hand"
        ) from None


def open_boot_service(backend: str, *, lab: str | None = None, lab_root: Path | None = None) -> BootService:
    """The boot service of this cluster: ``lab`` (needs the lab's name) or, later, ``pxe``."""
    if backend == "pxe":
        raise BootServiceError(
            "the pxe boot service (network boot of real hardware) is not available yet: it comes with a "
            "later issue (docs/update.md, 'Boot service'); on a lab cluster use backend 'lab'"
        )
    if backend not in BACKENDS:
        raise BootServiceError(f"unknown boot service backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "lab" and not lab:
        raise BootServiceError("the lab boot service needs the lab's name (inventory variable corral_lab)")
    found = entry_points(group=ENTRY_POINT_GROUP, name=backend)
    if not found:
        raise BootServiceError(
            f"the {backend} boot service is not installed (no {ENTRY_POINT_GROUP!r} entry point named "
            f"{backend!r}): reinstall the corral-updater package"
        )
    factory: Any = next(iter(found)).load()
    service: BootService = factory(lab=lab, lab_root=lab_root)
    return service
