"""Every way a bundle, license, keyring, encrypted file or staging can fail: one class per failed check.

All of them derive from :class:`VerificationError` and carry a stable short ``check`` name (kebab-case) that
``corral-bundle verify --json``, the update service's API and its UI use; the message is for humans. A caller
that only needs "did it pass" catches :class:`VerificationError`; a caller that reports why reads ``check``.
Messages never contain secret material (entitlement keys, private keys, content keys).
"""

from __future__ import annotations


class VerificationError(Exception):
    """A bundle, license, keyring or staging check failed. ``check`` names the check, stably."""

    check = "verification"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"


# --- strict JSON and documents ---
class MalformedDocument(VerificationError):
    """A JSON document (manifest, signatures, keyring, license, trust root) is not valid for its schema."""

    check = "malformed-document"


class DuplicateJsonKey(MalformedDocument):
    """A JSON object names the same key twice (parsers disagree on which one wins: never accept it)."""

    check = "duplicate-json-key"


class ManifestInvalid(MalformedDocument):
    """The manifest does not follow the manifest schema."""

    check = "manifest-invalid"


class ManifestDuplicateKey(DuplicateJsonKey, ManifestInvalid):
    """The stored manifest has a duplicate JSON key."""

    check = "manifest-duplicate-key"


class ManifestTooLarge(ManifestInvalid):
    """The manifest (or its signature list) is larger than the format allows."""

    check = "manifest-too-large"


class InvalidVersion(MalformedDocument):
    """A version string is not a strict semantic version."""

    check = "invalid-version"


# --- signatures and keyring ---
class SignatureError(VerificationError):
    """Base of the signature checks."""

    check = "signature"


class Unsigned(SignatureError):
    """The document carries no signature at all."""

    check = "unsigned"


class UnknownSigningKey(SignatureError):
    """Every signature comes from a key the trusted keyring does not know (for this role)."""

    check = "unknown-signing-key"


class RevokedSigningKey(SignatureError):
    """Signatures from revoked keys were present and never count; without them the threshold is not met."""

    check = "revoked-signing-key"


class SignatureInvalid(SignatureError):
    """A trusted key's signature does not verify over the exact stored bytes (tampered or re-serialised)."""

    check = "signature-invalid"


class SignatureThresholdNotMet(SignatureError):
    """Valid signatures from distinct trusted keys are fewer than the threshold."""

    check = "signature-threshold-not-met"


class KeyringRollback(VerificationError):
    """A keyring older than (or conflicting with) the trusted one was offered."""

    check = "keyring-rollback"


class KeyringExpired(VerificationError):
    """The keyring is past its expiry: the vendor must publish a fresh one."""

    check = "keyring-expired"


# --- release policy ---
class VersionRollback(VerificationError):
    """The bundle's version is older than the installed one."""

    check = "version-rollback"


class SameVersion(VerificationError):
    """The bundle's version is the installed version."""

    check = "same-version"


class UpgradePathNotAllowed(VerificationError):
    """The installed version is outside the bundle's upgrade-from range."""

    check = "upgrade-path-not-allowed"


class ProductMismatch(VerificationError):
    """The bundle is for another product."""

    check = "product-mismatch"


# --- license ---
class LicenseError(VerificationError):
    """Base of the license checks."""

    check = "license"


class LicenseInvalid(LicenseError, MalformedDocument):
    """The license document does not follow the license schema."""

    check = "license-invalid"


class LicenseDuplicateKey(DuplicateJsonKey, LicenseInvalid):
    """The license document has a duplicate JSON key."""

    check = "license-duplicate-key"


class LicenseSignatureInvalid(LicenseError, SignatureError):
    """The license is not signed by a threshold of the vendor's license keys."""

    check = "license-signature-invalid"


class LicenseExpired(LicenseError):
    """The license is past its expiry date."""

    check = "license-expired"


class LicenseNotYetValid(LicenseError):
    """The license was issued in the future (clock skew or a forged issue date)."""

    check = "license-not-yet-valid"


class ChannelNotEntitled(LicenseError):
    """The license does not cover the bundle's channel."""

    check = "channel-not-entitled"


class UpdatesPeriodEnded(LicenseError):
    """The release date is after the license's updates-until date."""

    check = "updates-period-ended"


class NodeCountExceeded(LicenseError):
    """The cluster has more nodes than the license entitles."""

    check = "node-count-exceeded"


class LicenseMismatch(LicenseError):
    """The license or key given does not belong together (or the bundle is encrypted to another license)."""

    check = "license-mismatch"


class InvalidEntitlementKey(LicenseError):
    """The entitlement key text is not a well-formed Corral entitlement key."""

    check = "invalid-entitlement-key"


# --- bundle container ---
class BundleFormatError(VerificationError):
    """The bundle file is not a bundle of the supported format."""

    check = "bundle-format"


class BundleCompressed(BundleFormatError):
    """The bundle is compressed: bundles are plain tar so nothing is ever decompressed on the way in."""

    check = "bundle-compressed"


class BundleTruncated(BundleFormatError):
    """The file ends before the archive does."""

    check = "bundle-truncated"


class MemberOrder(BundleFormatError):
    """Members are not in the fixed order (manifest.json, manifest.sig, [keyring.json], payload in order)."""

    check = "member-order"


class DuplicateMember(BundleFormatError):
    """The archive holds the same member name twice."""

    check = "duplicate-member"


class UnlistedMember(BundleFormatError):
    """The archive holds a member the manifest does not list."""

    check = "unlisted-member"


class MissingMember(BundleFormatError):
    """A file the manifest lists is not in the archive."""

    check = "missing-member"


class UnsafeMemberPath(BundleFormatError):
    """A member name is absolute, contains '..' or is otherwise not a plain relative path."""

    check = "unsafe-member-path"


class UnsafeMemberType(BundleFormatError):
    """A member is a symlink, hard link, device node, FIFO, directory or extended header."""

    check = "unsafe-member-type"


class EndOfArchiveIncomplete(BundleTruncated):
    """The file ends before the archive's end-of-archive marker (two zero blocks) is whole."""

    check = "end-of-archive-incomplete"


class MemberHeaderNotCanonical(BundleFormatError):
    """A member's tar header differs from the one the bundle writer makes for its name and size (a changed
    mtime, mode or owner name with the checksum fixed): bytes outside any signed hash."""

    check = "member-header-not-canonical"


class MemberPaddingNotZero(BundleFormatError):
    """The padding that fills a member's last block is not all zeros: bytes outside any signed hash."""

    check = "member-padding-not-zero"


class TrailingData(BundleFormatError):
    """Something (even zeros) follows the end-of-archive marker, or the marker's blocks are not zeros."""

    check = "trailing-data"


class PayloadSizeMismatch(VerificationError):
    """A payload member's size differs from the manifest (oversized members are never read past the limit)."""

    check = "payload-size-mismatch"


class PayloadHashMismatch(VerificationError):
    """A payload member's SHA-256 differs from the manifest."""

    check = "payload-hash-mismatch"


# --- delta images ---
class DeltaError(VerificationError):
    """Base of the delta image checks."""

    check = "delta"


class DeltaBaseMissing(DeltaError):
    """The base image the delta needs is not present."""

    check = "delta-base-missing"


class DeltaBaseMismatch(DeltaError):
    """The base image present does not have the SHA-256 the delta needs."""

    check = "delta-base-mismatch"


class DeltaInvalid(DeltaError):
    """The delta is malformed or would expand beyond the image size the manifest declares."""

    check = "delta-invalid"


class ImageHashMismatch(DeltaError):
    """The reconstructed node image does not have the manifest's SHA-256."""

    check = "image-hash-mismatch"


# --- encryption ---
class EncryptionError(VerificationError):
    """Base of the encrypted-bundle checks."""

    check = "encryption"


class EncryptedHeaderInvalid(EncryptionError):
    """The encrypted file's header is malformed or of an unsupported format version."""

    check = "encrypted-header-invalid"


class WrongEntitlementKey(EncryptionError):
    """The content key cannot be unwrapped: the entitlement key is not the one the bundle was encrypted to."""

    check = "wrong-entitlement-key"


class ChunkAuthenticationFailed(EncryptionError):
    """An encrypted chunk failed authentication: altered, dropped, reordered or appended."""

    check = "chunk-authentication-failed"


class EncryptedTruncated(EncryptionError):
    """The encrypted stream ends before its final chunk."""

    check = "encrypted-truncated"


class EncryptionRequired(EncryptionError):
    """The bundle is encrypted but no entitlement key was given."""

    check = "entitlement-key-required"


# --- staging ---
class StagingError(VerificationError):
    """Base of the staging checks."""

    check = "staging"


class NotEnoughSpace(StagingError):
    """The staging filesystem lacks the space the release needs (checked before anything is written)."""

    check = "not-enough-space"


class StagingWriteFailed(StagingError):
    """Writing the staged release failed mid-way (e.g. ENOSPC); everything written was removed."""

    check = "staging-write-failed"


class AlreadyStaged(StagingError):
    """This version is already staged."""

    check = "already-staged"
