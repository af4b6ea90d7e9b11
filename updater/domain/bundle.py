"""Bundle trust decisions (pure): the manifest's signatures, the carried keyring, and release policy.

The streaming reader (:mod:`updater.services.bundles.reader`) hands this module the exact bytes of the
bundle's first members and the installation's facts; this module answers with a verified :class:`Manifest` or
raises the :class:`~updater.domain.errors.VerificationError` naming the failed check.

Member order in a bundle (an uncompressed ustar archive)::

    manifest.json   exact bytes that are signed
    manifest.sig    JSON list of {"keyid", "sig"}: Ed25519 over the manifest bytes (context "manifest")
    keyring.json    optional: the vendor's current keyring envelope, so rotations reach air-gapped sites
    <payload files> in manifest order, each exactly the size and SHA-256 the manifest lists
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from updater.domain import signing
from updater.domain.errors import (
    KeyringRollback,
    ManifestTooLarge,
    SameVersion,
    UpgradePathNotAllowed,
    VersionRollback,
)
from updater.domain.keyring import Keyring, TrustStore, parse_keyring_payload
from updater.domain.license import License, license_entitles
from updater.domain.manifest import MAX_MANIFEST_BYTES, Manifest, parse_manifest
from updater.domain.semver import Version

MANIFEST_NAME = "manifest.json"
SIGNATURES_NAME = "manifest.sig"
KEYRING_NAME = "keyring.json"
MAX_SIGNATURES_BYTES = 64 * 1024
MAX_KEYRING_MEMBER_BYTES = 256 * 1024


@dataclass(frozen=True)
class VerifiedBundle:
    """Everything a bundle proved. ``trust`` is the trust store after any newer keyring the bundle carried:
    callers that persist trust should store ``trust.keyring.envelope``."""

    manifest: Manifest
    manifest_bytes: bytes = field(repr=False)
    signed_by: frozenset[str]
    trust: TrustStore = field(repr=False)
    license: License | None
    encrypted_to: str | None
    checks: tuple[str, ...]


def effective_trust(trust: TrustStore, carried_keyring: bytes | None, *, now: datetime) -> TrustStore:
    """The trust store to verify with: a carried keyring replaces the trusted one only if newer and valid.

    A carried keyring older than the trusted one is ignored (an old bundle carries the keyring of its day; it
    never rolls trust back). Any newer keyring must verify against the root, or the bundle is refused.
    """
    if carried_keyring is None or carried_keyring == trust.keyring.envelope:
        return trust
    try:
        return trust.with_keyring(carried_keyring, now=now)
    except KeyringRollback as exc:
        payload, _ = signing.open_envelope(carried_keyring, what="keyring")
        if parse_keyring_payload(payload, carried_keyring).version < trust.keyring.version:
            return trust
        raise exc from None


def verify_manifest(
    manifest_bytes: bytes, signatures_bytes: bytes, keyring: Keyring, *, now: datetime
) -> tuple[Manifest, frozenset[str]]:
    """Check the release-role threshold over the exact manifest bytes, then parse them strictly.

    Returns the manifest and the key ids whose signatures verified. Signatures are checked before the bytes
    are interpreted at all; a signed manifest that breaks the schema (e.g. a duplicate key) is refused too.
    """
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise ManifestTooLarge(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    if len(signatures_bytes) > MAX_SIGNATURES_BYTES:
        raise ManifestTooLarge(f"manifest.sig is larger than {MAX_SIGNATURES_BYTES} bytes")
    keyring.check_not_expired(now=now)
    signatures = signing.parse_signature_list(signatures_bytes, what="manifest.sig")
    valid = signing.verify_threshold(
        manifest_bytes,
        signatures,
        context="manifest",
        keys=keyring.role_keys("release"),
        threshold=keyring.threshold("release"),
        revoked=keyring.revoked,
        what="manifest",
    )
    return parse_manifest(manifest_bytes), valid


def check_upgrade(manifest: Manifest, installed: Version | None) -> None:
    """Newer than installed and inside the bundle's upgrade-from range (``None``: fresh installation)."""
    if installed is None:
        return
    if manifest.version == installed:
        raise SameVersion(f"version {manifest.version} is already installed")
    if manifest.version < installed:
        raise VersionRollback(f"bundle version {manifest.version} is older than installed {installed}")
    if installed not in manifest.upgrade_from:
        raise UpgradePathNotAllowed(
            f"{manifest.version} upgrades only from {manifest.upgrade_from}; installed is {installed}"
        )


def check_entitlement(manifest: Manifest, lic: License, *, node_count: int | None) -> None:
    """The license covers this bundle's channel and release date, and the cluster's node count."""
    license_entitles(lic, channel=manifest.channel, release_date=manifest.release_date, node_count=node_count)
