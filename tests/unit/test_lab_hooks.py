"""The node boot hooks on real mounts: boot pointer and boot-once, the RAM-disk overlay, the boot log."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from updater.lab import bootptr, hooks
from updater.lab.layout import LabLayout

IMAGE_A, IMAGE_B = "a" * 64, "b" * 64


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[LabLayout, Path, Path]]:
    layout = LabLayout("unit", 1, tmp_path / "labs")
    images = tmp_path / "images"
    for image, text in ((IMAGE_A, "A"), (IMAGE_B, "B")):
        (images / image / "rootfs/etc").mkdir(parents=True)
        (images / image / "rootfs/etc/which").write_text(text)
    (layout.node_dir("node1")).mkdir(parents=True)
    pre, post = hooks.install(layout.hooks_dir, layout.state_dir, images, ram_size="16m")
    yield layout, pre, post
    subprocess.run([str(post), "node1"], check=False)


def _boot(pre: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(pre), "node1", "unit-node1", "lxc", "pre-start"], capture_output=True, text=True, check=False
    )


def test_pre_start_boots_the_default_image_on_a_fresh_ram_disk(lab: tuple[LabLayout, Path, Path]) -> None:
    layout, pre, _ = lab
    bootptr.set_default(layout, "node1", IMAGE_A)
    assert _boot(pre).returncode == 0
    root = layout.node_dir("node1") / "rootfs"
    assert (root / "etc/which").read_text() == "A"
    (root / "etc/scratch").write_text("lost at the next boot")
    assert _boot(pre).returncode == 0
    assert not (root / "etc/scratch").exists()
    assert bootptr.read(layout, "node1").current == IMAGE_A
    assert [(b.node, b.image, b.kind) for b in bootptr.boots(layout)] == [("node1", IMAGE_A, "default")] * 2


def test_a_one_shot_image_boots_once_then_the_default_again(lab: tuple[LabLayout, Path, Path]) -> None:
    layout, pre, _ = lab
    bootptr.set_default(layout, "node1", IMAGE_A)
    bootptr.set_next(layout, "node1", IMAGE_B)
    assert _boot(pre).returncode == 0
    assert (layout.node_dir("node1") / "rootfs/etc/which").read_text() == "B"
    assert bootptr.read(layout, "node1").next is None
    assert _boot(pre).returncode == 0
    assert (layout.node_dir("node1") / "rootfs/etc/which").read_text() == "A"
    assert [b.kind for b in bootptr.boots(layout, "node1")] == ["once", "default"]


def test_a_missing_trial_image_fails_that_boot_only(lab: tuple[LabLayout, Path, Path]) -> None:
    layout, pre, _ = lab
    bootptr.set_default(layout, "node1", IMAGE_A)
    bootptr.set_next(layout, "node1", "c" * 64)
    failed = _boot(pre)
    assert failed.returncode != 0
    assert "is not in" in failed.stderr
    assert _boot(pre).returncode == 0  # the power cycle after a failed trial comes back on the default
    assert (layout.node_dir("node1") / "rootfs/etc/which").read_text() == "A"
    assert [b.kind for b in bootptr.boots(layout, "node1")] == ["once failed:no-such-image", "default"]


def test_post_stop_unmounts_the_root_and_ram_disk(lab: tuple[LabLayout, Path, Path]) -> None:
    layout, pre, post = lab
    bootptr.set_default(layout, "node1", IMAGE_A)
    assert _boot(pre).returncode == 0
    subprocess.run([str(post), "node1"], check=True)
    mounts = Path("/proc/self/mounts").read_text()
    assert str(layout.node_dir("node1")) not in mounts
    assert bootptr.read(layout, "node1").current is None
