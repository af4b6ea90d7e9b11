"""The boot service: "boot this node into image X once", "make X its default", through one interface.

DESIGN.md §2: a node's software changes only by booting another image, first for one trial boot, then
(once verified) as its default. Every caller (the ``corral.cloud.boot_pointer`` action, the update
service) goes through :class:`BootService`; backends differ only in where the pointer lives:

- ``lab``: the lab's boot pointers (``updater.lab.bootptr``), read by each lab node's pre-start hook;
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
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from updater.lab import bootptr
from updater.lab.errors import LabError
from updater.lab.lab import Lab
from updater.lab.layout import DEFAULT_ROOT

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
    with open(directory / FENCE_LOCK, "a", encoding="ascii") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
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


class LabBootService:
    """The lab backend: the pointers the lab nodes' pre-start hook reads, the lab's shared image store."""

    def __init__(self, lab_name: str, root: Path = DEFAULT_ROOT) -> None:
        try:
            self.lab = Lab(lab_name, root)
            self.lab.config()
        except LabError as error:
            raise BootServiceError(f"boot service (lab): {error}") from None

    def _fence_dir(self, node: str) -> Path:
        try:
            self.lab.node(node)
        except LabError as error:
            raise BootServiceError(f"boot service (lab {self.lab.name}): {error}") from None
        return self.lab.layout.node_dir(node) / FENCE_DIR

    def _image(self, image_id: str) -> None:
        try:
            self.lab.images.get(image_id)
        except LabError as error:
            raise BootServiceError(
                f"boot service (lab {self.lab.name}): {error}; publish it first (stage the release)"
            ) from None

    def publish_image(self, artifact: Path, image_id: str) -> str:
        if not artifact.is_file():
            raise BootServiceError(f"cannot publish {artifact}: no such file")
        try:
            return self.lab.images.import_artifact(artifact, expected_id=image_id).id
        except LabError as error:
            raise BootServiceError(f"cannot publish the node image: {error}") from None

    def boot_once(self, node: str, image_id: str | None, token: int) -> NodeBootState:
        directory = self._fence_dir(node)
        if image_id is not None:
            self._image(image_id)
        with fenced(directory, node, token):
            bootptr.set_next(self.lab.layout, node, image_id)
        return self.state(node)

    def make_default(self, node: str, image_id: str, token: int) -> NodeBootState:
        directory = self._fence_dir(node)
        self._image(image_id)
        with fenced(directory, node, token):
            bootptr.set_default(self.lab.layout, node, image_id)
            bootptr.set_next(self.lab.layout, node, None)
        return self.state(node)

    def state(self, node: str) -> NodeBootState:
        directory = self._fence_dir(node)
        pointer = bootptr.read(self.lab.layout, node)
        return NodeBootState(
            node, pointer.default or None, pointer.next, pointer.current, read_fence(directory)
        )


def open_boot_service(backend: str, *, lab: str | None = None, lab_root: Path = DEFAULT_ROOT) -> BootService:
    """The boot service of this cluster: ``lab`` (needs the lab's name) or, later, ``pxe``."""
    if backend == "lab":
        if not lab:
            raise BootServiceError(
                "the lab boot service needs the lab's name (inventory variable corral_lab)"
            )
        return LabBootService(lab, lab_root)
    if backend == "pxe":
        raise BootServiceError(
            "the pxe boot service (network boot of real hardware) is not available yet: it comes with a "
            "later issue (docs/update.md, 'Boot service'); on a lab cluster use backend 'lab'"
        )
    raise BootServiceError(f"unknown boot service backend {backend!r}: use one of {', '.join(BACKENDS)}")
