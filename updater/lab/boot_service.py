"""The lab's boot service backend: the pointers the lab nodes' pre-start hook reads, the lab's image store.

Registered as the ``lab`` backend of :func:`updater.services.cluster.boot.open_boot_service` through the
``corral.boot_backends`` entry point (pyproject.toml); production code never imports it.
"""

from __future__ import annotations

from pathlib import Path

from updater.lab import bootptr
from updater.lab.errors import LabError
from updater.lab.lab import Lab
from updater.lab.layout import DEFAULT_ROOT
from updater.services.cluster.boot import (
    FENCE_DIR,
    BootServiceError,
    NodeBootState,
    fenced,
    read_fence,
)


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


def lab_boot_service(*, lab: str | None, lab_root: Path | None = None, **_options: object) -> LabBootService:
    """The entry point's factory: ``open_boot_service("lab", lab=NAME, lab_root=PATH)``."""
    if not lab:
        raise BootServiceError("the lab boot service needs the lab's name (inventory variable corral_lab)")
    return LabBootService(lab, lab_root or DEFAULT_ROOT)
