"""The node-image store: canonical artifacts identified by SHA-256, import, derivation without debootstrap,
and builds that refuse unknown packages before doing anything."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from updater.lab.errors import LabError
from updater.lab.image import ImageStore, pack_canonical, sha256_file
from updater.lab.packages import collect
from updater.lab.release import Release

RELEASE = Release("1.0.0", "2026-11-21T00:00:00Z", "a" * 64, "b" * 64)


def _tree(root: Path, mtime: int) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc/corral-release").write_text(RELEASE.render())
    (root / "etc/motd").write_text("hello\n")
    (root / "usr/bin/tool").write_text("#!/bin/sh\n")
    (root / "usr/bin/tool").chmod(0o755)
    os.chown(root / "etc/motd", 123, 456)
    for path in [root, *root.rglob("*")]:
        os.utime(path, (mtime, mtime))
    return root


def _artifact(tmp_path: Path, name: str = "a", mtime: int = 1_000_000) -> Path:
    out = tmp_path / f"{name}.tar"
    pack_canonical(_tree(tmp_path / name, mtime), out)
    return out


def test_the_same_tree_packs_to_the_same_bytes_whatever_its_timestamps(tmp_path: Path) -> None:
    assert sha256_file(_artifact(tmp_path, "a", 1_000_000)) == sha256_file(
        _artifact(tmp_path, "b", 2_000_000)
    )


def test_a_content_change_changes_the_identity(tmp_path: Path) -> None:
    first = _artifact(tmp_path, "a")
    (tmp_path / "a/etc/motd").write_text("changed\n")
    second = tmp_path / "second.tar"
    pack_canonical(tmp_path / "a", second)
    assert sha256_file(first) != sha256_file(second)


def test_members_are_sorted_with_fixed_mtime_and_numeric_owners_kept(tmp_path: Path) -> None:
    with tarfile.open(_artifact(tmp_path)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {m.mtime for m in members} == {0}
    motd = next(m for m in members if m.name.endswith("etc/motd"))
    assert (motd.uid, motd.gid, motd.uname, motd.gname) == (123, 456, "", "")


def test_an_imported_artifact_is_stored_under_its_sha256_and_unpacked(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    store = ImageStore(tmp_path / "store")
    image = store.import_artifact(artifact, sha256_file(artifact))
    assert image.id == sha256_file(artifact)
    assert sha256_file(image.artifact) == image.id
    assert (image.rootfs / "etc/motd").read_text() == "hello\n"
    assert image.release == RELEASE
    assert [i.id for i in store.images()] == [image.id]


def test_an_artifact_with_the_wrong_sha256_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    with pytest.raises(LabError, match="SHA-256 is"):
        store.import_artifact(_artifact(tmp_path), "0" * 64)
    assert not (tmp_path / "store").exists() or sorted(p.name for p in (tmp_path / "store").iterdir()) == []


def test_a_derived_image_changes_only_what_was_asked_and_names_its_base(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    base = store.import_artifact(_artifact(tmp_path))
    derived = store.derive(
        base.id, "1.0.1", {"/etc/motd": "derived\n", "/etc/new.conf": "x=1\n"}, note="trial"
    )
    assert derived.id != base.id
    assert derived.release.version == "1.0.1"
    assert derived.release.base_image == base.id
    assert derived.release.packages_sha256 == base.release.packages_sha256
    assert (derived.rootfs / "etc/motd").read_text() == "derived\n"
    assert (derived.rootfs / "etc/new.conf").read_text() == "x=1\n"
    assert (
        base.rootfs / "etc/motd"
    ).read_text() == "hello\n"  # the base is untouched (no shared inode written)
    assert os.stat(derived.rootfs / "usr/bin/tool").st_ino == os.stat(base.rootfs / "usr/bin/tool").st_ino
    listed = subprocess.run(
        ["tar", "-tf", derived.artifact], capture_output=True, text=True, check=True
    ).stdout
    assert "./etc/new.conf" in listed.splitlines()


@pytest.mark.parametrize("path", ["etc/motd", "/etc/../../x", "/etc/corral-release"])
def test_derive_refuses_paths_outside_the_image_or_the_release_file(tmp_path: Path, path: str) -> None:
    store = ImageStore(tmp_path / "store")
    base = store.import_artifact(_artifact(tmp_path))
    with pytest.raises(LabError, match="must be an absolute path inside the image"):
        store.derive(base.id, "2", {path: "x"})
    assert [i.id for i in store.images()] == [base.id]


def test_derive_from_an_unknown_image_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="no node image"):
        ImageStore(tmp_path / "store").derive("f" * 64, "2")


def test_a_build_with_an_unknown_package_fails_naming_it_and_its_role_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    roles = tmp_path / "roles"
    (roles / "bogus/vars").mkdir(parents=True)
    (roles / "bogus/vars/packages.yml").write_text("bogus_packages: [corral-no-such-package]\n")
    store = ImageStore(tmp_path / "store")
    with pytest.raises(LabError) as excinfo:
        store.ensure(collect(roles), "1.0.0", log=False)
    message = str(excinfo.value)
    assert "unknown Debian package(s): corral-no-such-package (declared by bogus)" in message
    assert "Nothing was built" in message
    left = sorted(p.name for p in (tmp_path / "store").iterdir())
    assert left == [".lock"]  # no build directory, no artifact, no cache index


def test_prune_removes_only_images_no_lab_uses_and_not_kept(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "labs" / "images")
    base = store.import_artifact(_artifact(tmp_path))
    used = store.derive(base.id, "2")
    kept = store.derive(base.id, "3")
    unused = store.derive(base.id, "4")
    pointer = tmp_path / "labs" / "somelab" / "nodes" / "node1" / "boot" / "default"
    pointer.parent.mkdir(parents=True)
    pointer.write_text(used.id + "\n")
    assert store.prune({kept.id}) == sorted([base.id, unused.id])
    assert sorted(i.id for i in store.images()) == sorted([used.id, kept.id])
    assert not unused.artifact.exists()
    assert not unused.rootfs.exists()
