"""The release keyring: signed by a threshold of root keys, replaced only by a newer valid one."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.unit import bundle_kit as kit_
from tests.unit.bundle_kit import NOW, Kit
from updater.domain import errors, signing
from updater.domain.keyring import TrustStore, keyring_payload, parse_trust_root, verify_keyring
from updater.services.bundles.staging import verify_bundle_file
from updater.services.vendor import keys as vendor


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return kit_.make_kit(tmp_path)


def test_initial_keyring_verifies_against_the_trust_root(kit: Kit) -> None:
    trust = kit.trust()
    assert trust.keyring.version == 1
    assert len(trust.keyring.role_keys("release")) == 3
    assert trust.keyring.threshold("release") == 2
    assert trust.root.threshold == 2


def test_rotated_keyring_replaces_the_trusted_one(kit: Kit) -> None:
    trust = kit.trust()
    new_key, _ = vendor.rotate_key(kit.vendor_dir, now=NOW)
    updated = trust.with_keyring(kit.vendor.keyring.read_bytes(), now=NOW)
    assert updated.keyring.version == 2
    assert new_key in updated.keyring.role_keys("release")


def test_keyring_rollback_is_refused(kit: Kit) -> None:
    first = kit.vendor.keyring.read_bytes()
    vendor.rotate_key(kit.vendor_dir, now=NOW)
    newer = kit.trust()
    with pytest.raises(errors.KeyringRollback, match="older than the trusted version 2"):
        newer.with_keyring(first, now=NOW)


def test_same_version_different_keyring_is_refused(kit: Kit, tmp_path: Path) -> None:
    trust = kit.trust()
    # A second, validly root-signed keyring that reuses version 1 (e.g. a compromised signing pipeline).
    root_keys = kit.vendor.private_keys("root")
    current = trust.keyring
    payload = keyring_payload(
        version=1,
        expires=NOW + timedelta(days=10),
        keys=dict(current.keys),
        roles={name: (list(r.keyids), r.threshold) for name, r in current.roles.items()},
        revoked=[],
    )
    forged = signing.make_envelope(payload, [signing.sign(k, "keyring", payload) for k in root_keys.values()])
    with pytest.raises(errors.KeyringRollback, match="same version"):
        trust.with_keyring(forged, now=NOW)


def test_same_keyring_again_is_a_no_op(kit: Kit) -> None:
    trust = kit.trust()
    assert trust.with_keyring(kit.vendor.keyring.read_bytes(), now=NOW) is trust


def test_keyring_signed_by_too_few_root_keys_is_refused(kit: Kit) -> None:
    trust = kit.trust()
    current = trust.keyring
    payload = keyring_payload(
        version=5,
        expires=NOW + timedelta(days=10),
        keys=dict(current.keys),
        roles={name: (list(r.keyids), r.threshold) for name, r in current.roles.items()},
        revoked=[],
    )
    one_root = next(iter(kit.vendor.private_keys("root").values()))
    envelope = signing.make_envelope(payload, [signing.sign(one_root, "keyring", payload)])
    with pytest.raises(errors.SignatureThresholdNotMet):
        trust.with_keyring(envelope, now=NOW)


def test_keyring_signed_by_release_keys_is_refused(kit: Kit) -> None:
    trust = kit.trust()
    current = trust.keyring
    payload = keyring_payload(
        version=5,
        expires=NOW + timedelta(days=10),
        keys=dict(current.keys),
        roles={name: (list(r.keyids), r.threshold) for name, r in current.roles.items()},
        revoked=[],
    )
    release = kit.vendor.private_keys("release").values()
    envelope = signing.make_envelope(payload, [signing.sign(k, "keyring", payload) for k in release])
    with pytest.raises(errors.UnknownSigningKey):
        trust.with_keyring(envelope, now=NOW)


def test_expired_keyring_is_refused(kit: Kit) -> None:
    later = NOW + timedelta(days=366)
    bundle = kit_.build_bundle(kit)
    with pytest.raises(errors.KeyringExpired, match="expired"):
        verify_bundle_file(bundle, trust=kit.trust(now=later), now=later)
    with pytest.raises(errors.KeyringExpired):
        verify_keyring(kit.vendor.keyring.read_bytes(), kit.trust().root, now=later)


def test_expired_trusted_keyring_is_replaced_by_a_newer_one_carried_in_a_bundle(kit: Kit) -> None:
    later = NOW + timedelta(days=366)
    stale = kit.trust(now=later)  # loads (so it can be replaced) but verifies nothing by itself
    vendor.rotate_key(kit.vendor_dir, now=later)  # the vendor re-signs a fresh keyring
    bundle = kit_.build_bundle(kit, carry_keyring=True, keyids=None)
    result = verify_bundle_file(bundle, trust=stale, now=later)
    assert result.trust.keyring.version == 2


def test_tampered_keyring_is_refused(kit: Kit) -> None:
    data = kit.vendor.keyring.read_bytes()
    payload, signatures = signing.open_envelope(data, what="keyring")
    tampered = signing.make_envelope(payload.replace(b'"threshold":2', b'"threshold":1', 1), signatures)
    with pytest.raises(errors.SignatureInvalid):
        verify_keyring(tampered, kit.trust().root, now=NOW)


def test_revoked_key_leaves_every_role_and_never_counts(kit: Kit) -> None:
    victim = next(iter(kit.vendor.private_keys("release")))
    keyring = vendor.revoke_key(kit.vendor_dir, victim, now=NOW)
    assert victim in keyring.revoked
    assert victim not in keyring.role_keys("release")


def test_revocation_below_threshold_is_refused_by_the_vendor_tool(tmp_path: Path) -> None:
    kit = kit_.make_kit(tmp_path, release_keys=2, release_threshold=2)
    victim = next(iter(kit.vendor.private_keys("release")))
    with pytest.raises(vendor.VendorError, match="rotate a new key in first"):
        vendor.revoke_key(kit.vendor_dir, victim, now=NOW)
    assert kit.trust().keyring.version == 1, "a refused revocation publishes nothing"


def test_trust_root_with_duplicate_key_is_refused(kit: Kit) -> None:
    data = kit.vendor.trust_root.read_bytes().replace(b'"threshold":2', b'"threshold":2,"threshold":1')
    with pytest.raises(errors.DuplicateJsonKey):
        parse_trust_root(data)


def test_trust_store_load_reverifies_the_stored_keyring(kit: Kit) -> None:
    other = kit_.make_kit(kit.root / "other")
    with pytest.raises(errors.UnknownSigningKey):
        TrustStore.load(kit.vendor.trust_root.read_bytes(), other.vendor.keyring.read_bytes(), now=NOW)


def test_private_keys_are_written_0600_in_0700_directories(kit: Kit) -> None:
    for role in ("root", "release", "license"):
        directory = kit.vendor.private(role)
        assert directory.stat().st_mode & 0o777 == 0o700
        for pem in directory.iterdir():
            assert pem.stat().st_mode & 0o777 == 0o600, pem


def test_license_key_rotation_with_retirement_keeps_new_licenses_valid(kit: Kit) -> None:
    old_license_key = next(iter(kit.trust().keyring.role_keys("license")))
    issued_before = kit_.issue(kit)
    new_key, keyring = vendor.rotate_key(kit.vendor_dir, now=NOW, role="license", retire=old_license_key)
    assert set(keyring.role_keys("license")) == {new_key}
    (kit.vendor.private("license") / f"{old_license_key}.pem").unlink()  # the retired key is destroyed
    issued_after = kit_.issue(kit)
    from updater.domain.license import verify_license

    assert (
        verify_license(issued_after.document, keyring, now=NOW).license_id == issued_after.license.license_id
    )
    with pytest.raises(errors.LicenseSignatureInvalid):  # signed by a key that left the role
        verify_license(issued_before.document, keyring, now=NOW)


def test_retiring_a_key_of_another_role_is_refused(kit: Kit) -> None:
    root_key = next(iter(kit.vendor.private_keys("root")))
    with pytest.raises(vendor.VendorError, match="is not a release key"):
        vendor.rotate_key(kit.vendor_dir, now=NOW, retire=root_key)
    assert kit.trust().keyring.version == 1
