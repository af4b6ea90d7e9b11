"""The boot service's lab backend on a real lab directory, a real image store and the real pre-start hook:
publish, boot once, make default, state, and fencing at the resource (the highest token accepted per node)."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
from pathlib import Path

import pytest

from updater.lab import bootptr, hooks
from updater.lab.boot_service import LabBootService
from updater.lab.image import ImageStore, pack_canonical, sha256_file
from updater.lab.release import Release
from updater.services.cluster.boot import (
    FENCE_DIR,
    FENCE_FILE,
    BootServiceError,
    StaleBootToken,
    open_boot_service,
)

LAB = "unitboot"


def _artifact(tmp_path: Path, version: str) -> Path:
    tree = tmp_path / f"tree-{version}"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/corral-release").write_text(
        Release(version, "2026-11-21T00:00:00Z", "a" * 64, "b" * 64).render()
    )
    (tree / "etc/which").write_text(version)
    out = tmp_path / f"image-{version}.tar"
    pack_canonical(tree, out)
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A lab state root as `corral-lab up` leaves it (lab.json, node dirs), without containers."""
    labs = tmp_path / "labs"
    (labs / LAB).mkdir(parents=True)
    config = {"name": LAB, "index": 201, "nodes": 3, "disks": 0, "disk_size_gib": 1.0, "image": "0" * 64}
    (labs / LAB / "lab.json").write_text(json.dumps(config))
    for number in (1, 2, 3):
        (labs / LAB / "nodes" / f"node{number}" / "boot").mkdir(parents=True)
    return labs


@pytest.fixture
def images(tmp_path: Path, root: Path) -> tuple[str, str]:
    """Two images, v1 and v2, published in the lab's store; every node's default is v1."""
    service = LabBootService(LAB, root)
    ids = []
    for version in ("1.0.0", "2.0.0"):
        artifact = _artifact(tmp_path, version)
        ids.append(service.publish_image(artifact, sha256_file(artifact)))
    for number in (1, 2, 3):
        bootptr.set_default(service.lab.layout, f"node{number}", ids[0])
    return ids[0], ids[1]


def test_publish_stores_the_artifact_under_its_sha256_and_is_idempotent(tmp_path: Path, root: Path) -> None:
    service = LabBootService(LAB, root)
    artifact = _artifact(tmp_path, "2.0.0")
    image_id = sha256_file(artifact)
    assert service.publish_image(artifact, image_id) == image_id
    assert service.publish_image(artifact, image_id) == image_id
    stored = ImageStore(root / "images").get(image_id)
    assert stored.release.version == "2.0.0"


def test_publish_refuses_an_artifact_whose_hash_is_not_the_image_id(tmp_path: Path, root: Path) -> None:
    service = LabBootService(LAB, root)
    artifact = _artifact(tmp_path, "2.0.0")
    with pytest.raises(BootServiceError, match="cannot publish the node image: .*expected " + "f" * 64):
        service.publish_image(artifact, "f" * 64)
    assert ImageStore(root / "images").images() == []
    with pytest.raises(BootServiceError, match="no such file"):
        service.publish_image(tmp_path / "missing.tar", "f" * 64)


def test_boot_once_sets_only_the_next_boot_and_make_default_clears_it(
    root: Path, images: tuple[str, str]
) -> None:
    v1, v2 = images
    service = LabBootService(LAB, root)
    state = service.boot_once("node2", v2, token=3)
    assert (state.default, state.once, state.token) == (v1, v2, 3)
    state = service.make_default("node2", v2, token=3)
    assert (state.default, state.once, state.token) == (v2, None, 3)
    # The other nodes are untouched.
    assert service.state("node1").to_dict() == {
        "node": "node1",
        "default": v1,
        "once": None,
        "current": None,
        "token": None,
    }


def test_the_pre_start_hook_boots_the_one_shot_image_once_then_the_default(
    root: Path, images: tuple[str, str]
) -> None:
    v1, v2 = images
    service = LabBootService(LAB, root)
    layout = service.lab.layout
    pre, post = hooks.install(layout.hooks_dir, layout.state_dir, root / "images", ram_size="16m")
    try:
        service.boot_once("node1", v2, token=1)
        for _ in range(2):
            subprocess.run([str(pre), "node1"], check=True, capture_output=True)
        assert service.state("node1").current == v1
        assert [(boot.image, boot.kind) for boot in bootptr.boots(layout, "node1")] == [
            (v2, "once"),
            (v1, "default"),
        ]
    finally:
        subprocess.run([str(post), "node1"], check=False)


def test_a_lower_token_is_refused_at_the_resource_and_changes_nothing(
    root: Path, images: tuple[str, str]
) -> None:
    v1, v2 = images
    service = LabBootService(LAB, root)
    service.boot_once("node1", None, token=7)
    with pytest.raises(
        StaleBootToken, match="fencing token 6 is stale \\(token 7 was already used on this node"
    ):
        service.boot_once("node1", v2, token=6)
    with pytest.raises(StaleBootToken):
        service.make_default("node1", v2, token=1)
    state = service.state("node1")
    assert (state.default, state.once, state.token) == (v1, None, 7)
    # The same token is the same writer; a newer one raises the bar for everybody.
    service.boot_once("node1", v2, token=7)
    service.make_default("node1", v1, token=9)
    with pytest.raises(StaleBootToken):
        service.boot_once("node1", v2, token=8)
    assert service.state("node1").token == 9
    # Tokens are per node: node2 never saw token 9.
    assert service.boot_once("node2", v2, token=2).once == v2


def test_a_failed_write_does_not_raise_the_fence(root: Path, images: tuple[str, str]) -> None:
    _, v2 = images
    service = LabBootService(LAB, root)
    with pytest.raises(BootServiceError, match="no node image"):
        service.boot_once("node1", "e" * 64, token=5)
    assert service.state("node1").token is None
    assert not (service.lab.layout.node_dir("node1") / FENCE_DIR / FENCE_FILE).exists()
    assert service.boot_once("node1", v2, token=1).token == 1


def _write_with(args: tuple[str, str, str, int]) -> str:
    root, node, image, token = args
    try:
        LabBootService(LAB, Path(root)).boot_once(node, image, token)
    except StaleBootToken:
        return "refused"
    return "accepted"


def test_concurrent_writers_in_other_processes_never_let_a_lower_token_land_after_a_higher(
    root: Path, images: tuple[str, str]
) -> None:
    _, v2 = images
    tokens = list(range(1, 41))
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(_write_with, [(str(root), "node3", v2, token) for token in tokens])
    service = LabBootService(LAB, root)
    assert service.state("node3").token == 40
    # Without the lock a writer that read an old highest token could store it after a newer one.
    assert results[-1] == "accepted"


@pytest.mark.parametrize("token", [0, -1, True])
def test_a_write_without_a_valid_token_is_refused(root: Path, images: tuple[str, str], token: int) -> None:
    _, v2 = images
    with pytest.raises(BootServiceError, match="needs a fencing token"):
        LabBootService(LAB, root).boot_once("node1", v2, token)


def test_a_corrupt_fence_file_is_reported_not_ignored(root: Path, images: tuple[str, str]) -> None:
    _, v2 = images
    fence = root / LAB / "nodes/node1" / FENCE_DIR
    fence.mkdir()
    (fence / FENCE_FILE).write_text("garbage")
    with pytest.raises(BootServiceError, match="corrupt"):
        LabBootService(LAB, root).boot_once("node1", v2, 1)


def test_unknown_nodes_labs_and_backends_are_refused_clearly(root: Path, images: tuple[str, str]) -> None:
    _, v2 = images
    with pytest.raises(BootServiceError, match="unknown node 'node9'"):
        LabBootService(LAB, root).boot_once("node9", v2, 1)
    with pytest.raises(BootServiceError, match="no lab named 'other'"):
        LabBootService("other", root)
    with pytest.raises(BootServiceError, match=r"pxe boot service .* later issue"):
        open_boot_service("pxe")
    with pytest.raises(BootServiceError, match="needs the lab's name"):
        open_boot_service("lab")
    with pytest.raises(BootServiceError, match="unknown boot service backend 'tftp'"):
        open_boot_service("tftp")
    assert isinstance(open_boot_service("lab", lab=LAB, lab_root=root), LabBootService)


def test_fence_files_are_not_mistaken_for_images_in_use(root: Path, images: tuple[str, str]) -> None:
    v1, v2 = images
    LabBootService(LAB, root).boot_once("node1", v2, 12)
    assert ImageStore(root / "images").in_use() == {v1, v2, "0" * 64}
