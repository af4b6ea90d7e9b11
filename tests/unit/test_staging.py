"""Staging is atomic: a verified release appears at staging_root/<version> whole, or nothing appears at all.

The free-space and mid-way ENOSPC cases run on small tmpfs filesystems the tests mount themselves (as root).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit import bundle_kit as kit_
from tests.unit.bundle_kit import NOW, Kit
from updater.domain import errors
from updater.services import bundle_io
from updater.services.staging import StagedRelease, verify_and_stage


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return kit_.make_kit(tmp_path)


@pytest.fixture
def staging_root(tmp_path: Path) -> Path:
    root = tmp_path / "staging"
    root.mkdir()
    return root


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """Mount a tmpfs the test can fill: options are set per test through remount."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def stage(kit: Kit, bundle: Path, root: Path, **kwargs: object) -> StagedRelease:
    lic = kwargs.pop("lic", None) or kit_.issue(kit, license_id=f"lic-{os.urandom(4).hex()}")
    defaults: dict[str, object] = {
        "trust": kit.trust(),
        "now": NOW,
        "license_document": lic.document,  # type: ignore[attr-defined]
        "entitlement_key": lic.key,  # type: ignore[attr-defined]
        "installed_version": "1.2.0",
        "node_count": 3,
        "base_images_dir": None,
        "staging_root": root,
    }
    defaults.update(kwargs)
    return verify_and_stage(bundle, **defaults)  # type: ignore[arg-type]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_nothing_left(root: Path) -> None:
    assert list(root.iterdir()) == [], f"staging left {sorted(p.name for p in root.iterdir())}"


def test_valid_bundle_is_staged_whole_with_every_file_intact(
    kit: Kit, staging_root: Path, tmp_path: Path
) -> None:
    artifacts = kit_.make_artifacts(tmp_path / "a", "1.3.0")
    bundle = kit_.build_bundle(kit, artifacts=artifacts)
    staged = stage(kit, bundle, staging_root)
    assert staged.path == staging_root / "1.3.0"
    assert [p.name for p in staging_root.iterdir()] == ["1.3.0"], "no temporary directory may remain"
    assert sha(staged.image) == sha(artifacts.image)
    assert sha(staged.collection) == sha(artifacts.collection)
    assert sha(staged.service_package) == sha(artifacts.service)
    assert staged.notes.read_text() == artifacts.notes.read_text()
    assert (staged.path / "manifest.json").read_bytes() == staged.verified.manifest_bytes
    assert all(not p.is_symlink() for p in staged.path.rglob("*"))
    assert staged.path.stat().st_mode & 0o777 == 0o700


def test_delta_bundle_is_staged_with_the_exact_image_rebuilt(
    kit: Kit, staging_root: Path, tmp_path: Path
) -> None:
    base = kit_.make_artifacts(tmp_path / "base", "1.2.0")
    target = kit_.make_artifacts(tmp_path / "target", "1.3.0")
    bases = tmp_path / "bases"
    bases.mkdir()
    base_sha, _ = bundle_io.file_digest(base.image)
    os.link(base.image, bases / f"{base_sha}.tar")
    bundle = kit_.build_bundle(kit, artifacts=target, delta_base=base.image)
    staged = stage(kit, bundle, staging_root, base_images_dir=bases)
    assert staged.image.read_bytes() == target.image.read_bytes()
    assert sha(staged.image) == staged.verified.manifest.image.sha256


def test_encrypted_bundle_is_decrypted_while_staging(kit: Kit, staging_root: Path, tmp_path: Path) -> None:
    lic = kit_.issue(kit)
    artifacts = kit_.make_artifacts(tmp_path / "a", "1.3.0")
    plain = kit_.build_bundle(kit, artifacts=artifacts)
    encrypted = tmp_path / "corral-1.3.0.bundle.enc"
    bundle_io.encrypt_file(
        plain, encrypted, license_id=lic.license.license_id, entitlement_key=lic.key, chunk_size=4096
    )
    staged = stage(kit, encrypted, staging_root, lic=lic)
    assert staged.verified.encrypted_to == lic.license.license_id
    assert sha(staged.image) == sha(artifacts.image)
    assert [p.name for p in staging_root.iterdir()] == ["1.3.0"], "no decrypted temporary may remain"


def test_wrong_entitlement_key_stages_nothing(kit: Kit, staging_root: Path, tmp_path: Path) -> None:
    lic, other = kit_.issue(kit), kit_.issue(kit)
    encrypted = tmp_path / "enc.bundle"
    bundle_io.encrypt_file(
        kit_.build_bundle(kit), encrypted, license_id=lic.license.license_id, entitlement_key=lic.key
    )
    with pytest.raises(errors.WrongEntitlementKey):
        stage(kit, encrypted, staging_root, lic=lic, entitlement_key=other.key)
    assert_nothing_left(staging_root)


@pytest.mark.parametrize("corruption", ["last-payload-byte", "truncated-tail", "extra-member"])
def test_bundle_failing_late_leaves_nothing_behind(kit: Kit, staging_root: Path, corruption: str) -> None:
    bundle = kit_.build_bundle(kit)
    members = kit_.read_members(bundle)
    if corruption == "last-payload-byte":
        data = bytearray(bundle.read_bytes())
        offset = bytes(data).index(members[-1][1])
        data[offset] ^= 0xFF
        bundle.write_bytes(bytes(data))
        expected: type[errors.VerificationError] = errors.PayloadHashMismatch
    elif corruption == "truncated-tail":
        bundle.write_bytes(bundle.read_bytes()[:-1100])
        expected = errors.BundleTruncated
    else:
        kit_.rebuild(bundle, [*members, ("payload/zz-extra", b"x")])
        expected = errors.UnlistedMember
    with pytest.raises(expected):
        stage(kit, bundle, staging_root)
    assert_nothing_left(staging_root)


def test_not_enough_free_space_is_refused_before_writing(kit: Kit, tiny_fs: Path) -> None:
    bundle = kit_.build_bundle(kit)
    with pytest.raises(errors.NotEnoughSpace) as caught:
        stage(kit, bundle, tiny_fs)
    message = str(caught.value)
    assert f"not enough free space on {tiny_fs}: need " in message
    assert ", have " in message
    assert_nothing_left(tiny_fs)


def test_disk_filling_up_mid_way_leaves_nothing_behind(kit: Kit, tiny_fs: Path) -> None:
    bundle = kit_.build_bundle(kit)
    # Enough bytes for the space check, but only a few inodes: the 2nd payload file hits ENOSPC mid-way.
    subprocess.run(["mount", "-o", "remount,size=64m,nr_inodes=7", str(tiny_fs)], check=True)
    with pytest.raises(errors.StagingWriteFailed) as caught:
        stage(kit, bundle, tiny_fs, space_margin=0)
    assert "no space left" in str(caught.value)
    assert_nothing_left(tiny_fs)
    # ... and with room for everything the same bundle stages fine on the same filesystem.
    subprocess.run(["mount", "-o", "remount,nr_inodes=64", str(tiny_fs)], check=True)
    assert stage(kit, bundle, tiny_fs, space_margin=0).path == tiny_fs / "1.3.0"


def test_already_staged_version_is_refused_and_left_untouched(kit: Kit, staging_root: Path) -> None:
    bundle = kit_.build_bundle(kit)
    first = stage(kit, bundle, staging_root)
    before = sha(first.image)
    with pytest.raises(errors.AlreadyStaged):
        stage(kit, bundle, staging_root)
    assert sha(first.image) == before
    assert [p.name for p in staging_root.iterdir()] == ["1.3.0"]


def test_license_failure_stages_nothing(kit: Kit, staging_root: Path) -> None:
    lic = kit_.issue(kit, nodes=2)
    with pytest.raises(errors.NodeCountExceeded):
        stage(kit, kit_.build_bundle(kit), staging_root, lic=lic, node_count=3)
    assert_nothing_left(staging_root)


def test_concurrent_imports_of_one_version_stage_it_once(
    kit: Kit, staging_root: Path, tmp_path: Path
) -> None:
    import threading

    image = kit_.write_image_tar(
        tmp_path / "big.tar",
        {f"f{i}": os.urandom(1 << 20) for i in range(12)} | {"etc/corral-release": b"1.3.0"},
    )
    bundle = kit_.build_bundle(kit, artifacts=kit_.make_artifacts(tmp_path / "a", "1.3.0", image=image))
    lic = kit_.issue(kit)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt() -> None:
        barrier.wait()
        try:
            stage(kit, bundle, staging_root, lic=lic)
            outcomes.append("staged")
        except errors.AlreadyStaged:
            outcomes.append("already-staged")

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["already-staged", "staged"]
    assert [p.name for p in staging_root.iterdir()] == ["1.3.0"]
    assert sha(staging_root / "1.3.0" / "image.tar") == sha(image)
