"""Reading a bundle file: the one streaming verifier (:func:`run_checks`) and the head reader.

A bundle is read once, front to back, in bounded memory: manifest and signatures first, checked against the
installation's trust (:class:`Installation`), then every payload member streamed through its SHA-256 into a
:class:`PayloadSink` (staging) or nowhere (verify only). The vendor-side writers are in
:mod:`updater.services.vendor.writer`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from updater.domain import aead, delta
from updater.domain.bundle import (
    KEYRING_NAME,
    MANIFEST_NAME,
    MAX_KEYRING_MEMBER_BYTES,
    MAX_SIGNATURES_BYTES,
    SIGNATURES_NAME,
    VerifiedBundle,
    check_entitlement,
    check_upgrade,
    effective_trust,
    verify_manifest,
)
from updater.domain.errors import (
    BundleCompressed,
    BundleFormatError,
    BundleTruncated,
    DeltaBaseMissing,
    DuplicateMember,
    EncryptionRequired,
    EndOfArchiveIncomplete,
    LicenseInvalid,
    MalformedDocument,
    ManifestTooLarge,
    MemberHeaderNotCanonical,
    MemberOrder,
    MemberPaddingNotZero,
    MissingMember,
    PayloadHashMismatch,
    PayloadSizeMismatch,
    TrailingData,
    UnlistedMember,
)
from updater.domain.keyring import TrustStore
from updater.domain.license import License, check_entitlement_key, parse_license_payload, verify_license
from updater.domain.manifest import (
    Manifest,
    PayloadFile,
)
from updater.domain.semver import Version
from updater.domain.signing import Signature, open_envelope, parse_signature_list
from updater.domain.tarformat import BLOCK, TarMember, is_canonical, parse_header

PIECE = 1024 * 1024
_COMPRESSED_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\x04\x22\x4d\x18": "lz4",
}


class _Stream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Source:
    """Exact reads over a plain file (``readinto`` into one reused buffer) or a decrypting stream."""

    def __init__(self, stream: _Stream) -> None:
        self._stream = stream
        self._readinto = getattr(stream, "readinto", None)
        self._buffer = bytearray(PIECE)
        self.offset = 0

    def read_exact(self, size: int) -> bytes:
        parts, left = [], size
        while left:
            piece = self._stream.read(left)
            if not piece:
                raise BundleTruncated(f"bundle ends at byte {self.offset}, inside the archive (truncated)")
            parts.append(piece)
            left -= len(piece)
            self.offset += len(piece)
        return b"".join(parts)

    def read_upto(self, size: int) -> bytes:
        """Up to ``size`` bytes: fewer only where the file ends."""
        parts, left = [], size
        while left:
            piece = self._stream.read(left)
            if not piece:
                break
            parts.append(piece)
            left -= len(piece)
            self.offset += len(piece)
        return b"".join(parts)

    def pieces(self, size: int) -> Iterator[memoryview]:
        """Yield ``size`` bytes in pieces of at most 1 MiB (views valid until the next piece)."""
        left = size
        view = memoryview(self._buffer)
        while left:
            want = min(PIECE, left)
            if self._readinto is not None:
                got = self._readinto(view[:want])
                if not got:
                    raise BundleTruncated(f"bundle ends at byte {self.offset}, inside a member (truncated)")
                piece = view[:got]
            else:
                data = self._stream.read(want)
                if not data:
                    raise BundleTruncated(f"bundle ends at byte {self.offset}, inside a member (truncated)")
                got, piece = len(data), memoryview(data)
            self.offset += got
            left -= got
            yield piece


class _TarReader:
    """A bundle's tar stream, every byte accounted for: a bundle file is exactly what its writer wrote.

    Only the members' data is covered by the signed manifest; so the bytes around it are pinned here: each
    header is the one the writer makes for its name and size, a member's padding is zeros, the
    end-of-archive marker is two whole zero blocks, and nothing follows it.
    """

    def __init__(self, source: _Source) -> None:
        self.source = source
        self.seen: set[str] = set()

    def next_member(self) -> TarMember | None:
        """The next member's header, or None at the end-of-archive marker (both of its zero blocks read)."""
        at = self.source.offset
        block = self.source.read_upto(BLOCK)
        if not block:
            raise EndOfArchiveIncomplete(
                f"bundle ends at byte {at} without the end-of-archive marker (two zero blocks): cut short"
            )
        if len(block) < BLOCK and block.count(0) == len(block):
            raise EndOfArchiveIncomplete(
                f"bundle ends at byte {self.source.offset}, inside the end-of-archive marker: "
                f"{len(block)} of its {2 * BLOCK} zero bytes are there (cut short)"
            )
        if len(block) < BLOCK:
            raise BundleTruncated(f"bundle ends at byte {self.source.offset}, inside a header (truncated)")
        member = parse_header(block)
        if member is None:
            self._rest_of_end_marker()
            return None
        if not is_canonical(block, member):
            raise MemberHeaderNotCanonical(
                f"the tar header of {member.name!r} is not the one the bundle writer makes for it "
                "(mode, owner, times and names are fixed)"
            )
        if member.name in self.seen:
            raise DuplicateMember(f"the archive holds member {member.name!r} twice")
        self.seen.add(member.name)
        return member

    def _rest_of_end_marker(self) -> None:
        second = self.source.read_upto(BLOCK)
        if len(second) < BLOCK:
            raise EndOfArchiveIncomplete(
                f"bundle ends at byte {self.source.offset}, inside the end-of-archive marker: "
                f"{BLOCK + len(second)} of its {2 * BLOCK} zero bytes are there (cut short)"
            )
        if second.count(0) != BLOCK:
            raise TrailingData("a lone zero block is followed by data, not by the end-of-archive marker")

    def read_small(self, member: TarMember, limit: int) -> bytes:
        if member.size > limit:
            raise ManifestTooLarge(
                f"{member.name} is {member.size} bytes; at most {limit} allowed (not read)"
            )
        data = self.source.read_exact(member.size)
        self.skip_padding(member)
        return data

    def skip_padding(self, member: TarMember) -> None:
        """Read the zeros that fill the member's last block: any other byte there is outside every hash."""
        size = member.padded_size - member.size
        if size and self.source.read_exact(size).count(0) != size:
            raise MemberPaddingNotZero(
                f"the tar padding after {member.name!r} (its last {size} bytes of block) is not zero"
            )

    def finish(self) -> None:
        """After the end-of-archive marker: the file ends (bundle writers add no record padding)."""
        if self.source.read_upto(1):
            raise TrailingData(f"data follows the end-of-archive marker at byte {self.source.offset - 1}")


class PayloadSink(Protocol):
    """Where verified payload goes while it is read (staging); ``None`` for verify-only."""

    def prepare(
        self,
        manifest: Manifest,
        manifest_bytes: bytes,
        signatures: bytes,
        keyring: bytes | None,
        base: BaseImage | None,
    ) -> None:
        """Called once the manifest is trusted and every policy check passed, before any payload is read.

        ``base`` is the delta's verified, indexed base image (``None`` for a whole image)."""

    def open(self, entry: PayloadFile) -> BinaryIO:
        """A writable file for ``entry``; closed (and fsynced) by :meth:`close`."""
        ...

    def close(self, entry: PayloadFile, handle: BinaryIO) -> None: ...


@dataclass(frozen=True)
class Installation:
    """The facts the checks need about the installation: trust, clock, installed release, cluster size."""

    trust: TrustStore
    now: datetime
    installed_version: Version | None = None
    node_count: int | None = None
    base_images_dir: Path | None = None
    license_document: bytes | None = None
    entitlement_key: bytes | None = None


def base_image_path(base_images_dir: Path | None, sha256: str) -> Path:
    """Where a base image is looked up: ``<base_images_dir>/<sha256>.tar``."""
    if base_images_dir is None:
        raise DeltaBaseMissing(f"delta needs base image {sha256[:16]}… but no base image directory was given")
    path = base_images_dir / f"{sha256}.tar"
    if not path.is_file():
        raise DeltaBaseMissing(f"delta needs base image {sha256[:16]}…, which is not in {base_images_dir}")
    return path


@dataclass(frozen=True)
class BaseImage:
    """A delta's base image, hashed and indexed by block (the rebuilt image is checked again at the end)."""

    path: Path
    index: dict[bytes, delta.Block]


def index_base_image(base_images_dir: Path | None, sha256: str) -> BaseImage:
    path = base_image_path(base_images_dir, sha256)
    with path.open("rb") as handle:
        return BaseImage(path, delta.index_base(handle, expected_sha256=sha256))


def _detect(prefix: bytes) -> None:
    for magic, kind in _COMPRESSED_MAGIC.items():
        if prefix.startswith(magic):
            raise BundleCompressed(
                f"bundle is {kind}-compressed; bundles are plain tar and never decompressed"
            )


@contextlib.contextmanager
def open_bundle(path: Path, inst: Installation) -> Iterator[tuple[_Source, str | None]]:
    """Open a bundle file, decrypting if it is encrypted; yields the plaintext source and the license id."""
    with path.open("rb") as handle:
        prefix = handle.read(len(aead.MAGIC))
        handle.seek(0)
        if not aead.is_encrypted(prefix):
            _detect(prefix)
            yield _Source(handle), None
            return
        if inst.license_document is None or inst.entitlement_key is None:
            raise EncryptionRequired(
                "bundle is encrypted to a license: give the license and its entitlement key"
            )
        # The license's signature is checked by run_checks (against the keyring the bundle may update); here
        # its id only selects the key derivation, and any mismatch fails the unwrap anyway.
        license_id = unverified_license_id(inst.license_document)
        reader = aead.open_encrypted(handle, license_id=license_id, entitlement_key=inst.entitlement_key)
        yield _Source(reader), license_id


def unverified_license_id(document: bytes) -> str:
    return unverified_license(document).license_id


def unverified_license(document: bytes) -> License:
    """The license a document carries, its signature not checked (the caller checks or does not need to)."""
    try:
        payload, _ = open_envelope(document, what="license", error=LicenseInvalid)
    except MalformedDocument as exc:
        raise LicenseInvalid(exc.message) from None
    return parse_license_payload(payload)


def _expect(reader: _TarReader, name: str) -> TarMember:
    member = reader.next_member()
    if member is None or member.name != name:
        found = "the end of the archive" if member is None else repr(member.name)
        raise MemberOrder(f"expected member {name!r} here, found {found}")
    return member


def _check_payload_header(
    member: TarMember | None, expected: PayloadFile, listed: dict[str, PayloadFile]
) -> TarMember:
    if member is None:
        raise MissingMember(f"the archive ends before {expected.name!r}, which the manifest lists")
    if member.name not in listed:
        raise UnlistedMember(f"the archive holds {member.name!r}, which the manifest does not list")
    if member.name != expected.name:
        raise MemberOrder(f"found {member.name!r} where the manifest's order expects {expected.name!r}")
    if member.size != expected.size:
        raise PayloadSizeMismatch(
            f"{member.name} is {member.size} bytes in the archive; the manifest says {expected.size}"
            + (" (larger: not read)" if member.size > expected.size else "")
        )
    return member


def _license_checks(
    manifest: Manifest, trust: TrustStore, inst: Installation, checks: list[str]
) -> License | None:
    if inst.license_document is None:
        return None
    lic = verify_license(inst.license_document, trust.keyring, now=inst.now)
    checks.append("license")
    if inst.entitlement_key is not None:
        check_entitlement_key(lic, inst.entitlement_key)
        checks.append("entitlement-key")
    check_entitlement(manifest, lic, node_count=inst.node_count)
    checks.append("license-entitlement")
    return lic


def _stream_payload(
    reader: _TarReader, manifest: Manifest, member: TarMember | None, sink: PayloadSink | None
) -> None:
    """Hash (and hand to the sink) every payload member in manifest order, then check the archive's end."""
    listed = {f.name: f for f in manifest.files}
    for expected in manifest.files:
        member = _check_payload_header(member, expected, listed)
        digest = hashlib.sha256()
        handle = sink.open(expected) if sink is not None else None
        for piece in reader.source.pieces(expected.size):
            digest.update(piece)
            if handle is not None:
                handle.write(piece)
        if handle is not None and sink is not None:
            sink.close(expected, handle)
        if digest.hexdigest() != expected.sha256:
            raise PayloadHashMismatch(f"{expected.name} does not have the SHA-256 the manifest lists")
        reader.skip_padding(member)
        member = reader.next_member()
    if member is not None:
        raise UnlistedMember(f"the archive holds {member.name!r} after the last listed file")
    reader.finish()


def run_checks(path: Path, inst: Installation, sink: PayloadSink | None = None) -> VerifiedBundle:
    """Run every bundle and license check on ``path``, streaming payload into ``sink`` if given.

    Raises the first failing check's :class:`~updater.domain.errors.VerificationError`. When a sink is given,
    nothing in it may be kept unless this returns (the sink's owner removes it on any exception).
    """
    checks: list[str] = []
    with open_bundle(path, inst) as (source, encrypted_to):
        if encrypted_to:
            checks.append("decryption")
        reader = _TarReader(source)
        manifest_bytes = reader.read_small(_expect(reader, MANIFEST_NAME), 1024 * 1024)
        signatures = reader.read_small(_expect(reader, SIGNATURES_NAME), MAX_SIGNATURES_BYTES)
        member = reader.next_member()
        carried = None
        if member is not None and member.name == KEYRING_NAME:
            carried = reader.read_small(member, MAX_KEYRING_MEMBER_BYTES)
            member = reader.next_member()
        trust = effective_trust(inst.trust, carried, now=inst.now)
        checks.append("keyring")
        manifest, signers = verify_manifest(manifest_bytes, signatures, trust.keyring, now=inst.now)
        checks += ["signature-threshold", "manifest"]
        if inst.installed_version is not None:
            check_upgrade(manifest, inst.installed_version)
            checks.append("upgrade-path")
        lic = _license_checks(manifest, trust, inst, checks)
        base = None
        if manifest.image.delta_base_sha256 is not None:
            base = index_base_image(inst.base_images_dir, manifest.image.delta_base_sha256)
            checks.append("delta-base")
        if sink is not None:
            sink.prepare(manifest, manifest_bytes, signatures, carried, base)
        _stream_payload(reader, manifest, member, sink)
        checks.append("payload")
    return VerifiedBundle(
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        signed_by=signers,
        trust=trust,
        license=lic,
        encrypted_to=encrypted_to,
        checks=tuple(checks),
    )


# ---------------------------------------------------------------------------------------------------------
# Vendor side
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleHead:
    """The first members of a bundle, unverified (``inspect`` and ``sign`` read these)."""

    manifest_bytes: bytes
    signatures: list[Signature]
    keyring: bytes | None
    payload_offset: int  # where the first payload header starts (plain bundles only)


def read_head(path: Path) -> BundleHead:
    """Read manifest, signatures and carried keyring of a plain bundle without verifying anything."""
    with path.open("rb") as handle:
        prefix = handle.read(8)
        handle.seek(0)
        if aead.is_encrypted(prefix):
            raise BundleFormatError("bundle is encrypted: inspect shows its header only")
        _detect(prefix)
        source = _Source(handle)
        reader = _TarReader(source)
        manifest_bytes = reader.read_small(_expect(reader, MANIFEST_NAME), 1024 * 1024)
        signatures = parse_signature_list(
            reader.read_small(_expect(reader, SIGNATURES_NAME), MAX_SIGNATURES_BYTES), what="manifest.sig"
        )
        offset = source.offset
        member = reader.next_member()
        carried = None
        if member is not None and member.name == KEYRING_NAME:
            carried = reader.read_small(member, MAX_KEYRING_MEMBER_BYTES)
            offset = source.offset
        return BundleHead(manifest_bytes, signatures, carried, offset)
