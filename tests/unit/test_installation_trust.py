"""The installation's trust directory: read into what the verifier needs with one clear error per way it
cannot be used, and a keyring a verified bundle carried saved atomically, never older than the stored one.
Staging through :func:`stage_release` saves that keyring only when the bundle verified and was staged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.unit import bundle_kit as kit_
from tests.unit.bundle_kit import NOW, Kit
from updater.domain.errors import PayloadHashMismatch
from updater.services.bundles.release_staging import stage_release
from updater.services.installation.trust import (
    ENTITLEMENT_KEY_FILE,
    KEYRING_FILE,
    LICENSE_FILE,
    TRUST_ROOT_FILE,
    TrustUnreadable,
    read_trust,
    save_carried_keyring,
)
from updater.services.vendor import keys as vendor


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return kit_.make_kit(tmp_path / "vendor-side")


@pytest.fixture
def trust_dir(kit: Kit, tmp_path: Path) -> Path:
    """A trust directory as ``corral-updater init`` writes it, trusting keyring version 1."""
    issued = kit_.issue(kit)
    path = tmp_path / "trust"
    path.mkdir(mode=0o700)
    shutil.copy(kit.vendor.trust_root, path / TRUST_ROOT_FILE)
    shutil.copy(kit.vendor.keyring, path / KEYRING_FILE)
    (path / LICENSE_FILE).write_bytes(issued.document)
    shutil.copy(issued.key_path, path / ENTITLEMENT_KEY_FILE)
    return path


def test_the_trust_directory_is_read_into_the_verifiers_inputs(trust_dir: Path) -> None:
    installed = read_trust(trust_dir, now=NOW)
    assert installed.store.keyring.version == 1
    assert installed.license_document == (trust_dir / LICENSE_FILE).read_bytes()
    assert installed.entitlement_key is not None
    assert len(installed.entitlement_key) == 32
    assert repr(installed.entitlement_key) not in repr(installed)  # never in a log line or a traceback


def test_without_an_entitlement_key_only_plain_bundles_can_be_verified(trust_dir: Path) -> None:
    (trust_dir / ENTITLEMENT_KEY_FILE).unlink()
    assert read_trust(trust_dir, now=NOW).entitlement_key is None


@pytest.mark.parametrize("missing", [TRUST_ROOT_FILE, KEYRING_FILE, LICENSE_FILE])
def test_a_missing_file_is_named_with_the_command_that_writes_it(trust_dir: Path, missing: str) -> None:
    (trust_dir / missing).unlink()
    with pytest.raises(TrustUnreadable, match=rf"trust directory {trust_dir} lacks {missing}: ") as refused:
        read_trust(trust_dir, now=NOW)
    assert "corral-updater init --trust-root --keyring --license --entitlement-key" in str(refused.value)


def test_a_keyring_not_signed_by_the_trust_root_makes_the_directory_invalid(
    trust_dir: Path, tmp_path: Path
) -> None:
    other = kit_.make_kit(tmp_path / "another-vendor")
    shutil.copy(other.vendor.keyring, trust_dir / KEYRING_FILE)
    with pytest.raises(TrustUnreadable, match=rf"the trust directory {trust_dir} is not valid: "):
        read_trust(trust_dir, now=NOW)


def test_a_malformed_entitlement_key_makes_the_directory_invalid_without_repeating_it(
    trust_dir: Path,
) -> None:
    (trust_dir / ENTITLEMENT_KEY_FILE).write_text("corral-ek1-not-a-key-but-maybe-a-secret\n")
    with pytest.raises(TrustUnreadable, match="invalid-entitlement-key") as refused:
        read_trust(trust_dir, now=NOW)
    assert "maybe-a-secret" not in str(refused.value)


def test_a_newer_keyring_is_saved_and_the_same_one_is_not_written_again(kit: Kit, trust_dir: Path) -> None:
    installed = read_trust(trust_dir, now=NOW)
    assert save_carried_keyring(installed, installed.store) is False
    vendor.rotate_key(kit.vendor_dir, now=NOW)
    rotated = installed.store.with_keyring(kit.vendor.keyring.read_bytes(), now=NOW)
    assert save_carried_keyring(installed, rotated) is True
    assert (trust_dir / KEYRING_FILE).read_bytes() == rotated.keyring.envelope
    assert sorted(p.name for p in trust_dir.iterdir()) == sorted(
        [TRUST_ROOT_FILE, KEYRING_FILE, LICENSE_FILE, ENTITLEMENT_KEY_FILE]
    )  # no temporary file left beside it


def test_a_keyring_stored_meanwhile_by_another_staging_is_never_rolled_back(
    kit: Kit, trust_dir: Path
) -> None:
    installed = read_trust(trust_dir, now=NOW)  # this staging started under version 1
    vendor.rotate_key(kit.vendor_dir, now=NOW)
    version_2 = installed.store.with_keyring(kit.vendor.keyring.read_bytes(), now=NOW)
    vendor.rotate_key(kit.vendor_dir, now=NOW)
    version_3 = kit.vendor.keyring.read_bytes()
    (trust_dir / KEYRING_FILE).write_bytes(version_3)  # another staging finished first, with version 3
    assert save_carried_keyring(installed, version_2) is False
    assert (trust_dir / KEYRING_FILE).read_bytes() == version_3


def test_staging_a_release_keeps_the_keyring_it_carried_only_once_it_verified(
    kit: Kit, trust_dir: Path, tmp_path: Path
) -> None:
    before = (trust_dir / KEYRING_FILE).read_bytes()
    new_key, rotated = vendor.rotate_key(kit.vendor_dir, now=NOW)
    old_key = next(k for k in rotated.role_keys("release") if k != new_key)
    good = kit_.build_bundle(kit, "1.3.0", carry_keyring=True, keyids=[new_key, old_key])
    bad = kit_.build_bundle(kit, "1.3.1", carry_keyring=True, upgrade_from=">=1.2.0, <1.4.0")
    data = bytearray(bad.read_bytes())
    data[data.index(bytes([10]) * 3000) + 100] ^= 0xFF  # one byte of the node image
    bad.write_bytes(bytes(data))
    staging = tmp_path / "staging"
    staging.mkdir()
    common = {"now": NOW, "installed_version": "1.2.0", "node_count": 3, "base_images_dir": None}

    with pytest.raises(PayloadHashMismatch):
        stage_release(bad, trust_dir=trust_dir, staging_root=staging, **common)  # type: ignore[arg-type]
    assert (trust_dir / KEYRING_FILE).read_bytes() == before
    assert list(staging.iterdir()) == []

    staged = stage_release(good, trust_dir=trust_dir, staging_root=staging, **common)  # type: ignore[arg-type]
    assert staged.path == staging / "1.3.0"
    assert (trust_dir / KEYRING_FILE).read_bytes() == rotated.envelope


def test_staging_with_an_unusable_trust_directory_reads_no_bundle_and_stages_nothing(
    kit: Kit, trust_dir: Path, tmp_path: Path
) -> None:
    (trust_dir / LICENSE_FILE).unlink()
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(TrustUnreadable, match=f"lacks {LICENSE_FILE}"):
        stage_release(
            tmp_path / "no-such.bundle",
            trust_dir=trust_dir,
            now=NOW,
            installed_version="1.2.0",
            node_count=3,
            base_images_dir=None,
            staging_root=staging,
        )
    assert list(staging.iterdir()) == []
