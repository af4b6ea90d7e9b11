"""Reading and writing bundle files: the one streaming verifier, and the vendor-side writers.

:func:`run_checks` is the single implementation of "every bundle and license check" over a file; staging and
``corral-bundle verify`` both call it (through :mod:`updater.services.staging`). It reads the file once, in
1 MiB pieces, with memory bounded by the manifest's size (never by the payload's), decrypting on the fly when
the bundle is encrypted to a license. The trust decisions themselves live in :mod:`updater.domain`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
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
    LicenseInvalid,
    MalformedDocument,
    ManifestTooLarge,
    MemberOrder,
    MissingMember,
    PayloadHashMismatch,
    PayloadSizeMismatch,
    TrailingData,
    UnlistedMember,
)
from updater.domain.keyring import TrustStore
from updater.domain.license import License, check_entitlement_key, parse_license_payload, verify_license
from updater.domain.manifest import (
    ImageIdentity,
    Manifest,
    PayloadFile,
    check_member_name,
    parse_manifest,
    serialize_manifest,
)
from updater.domain.semver import Version, parse_range, parse_version
from updater.domain.signing import Signature, dump_signature_list, open_envelope, parse_signature_list
from updater.domain.tarformat import BLOCK, END_OF_ARCHIVE, TarMember, build_header, padded, parse_header

PIECE = 1024 * 1024
MAX_TRAILING_ZEROS = 1024 * 1024
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
        piece = self._stream.read(size)
        self.offset += len(piece)
        return piece

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
    def __init__(self, source: _Source) -> None:
        self.source = source
        self.seen: set[str] = set()

    def next_member(self) -> TarMember | None:
        member = parse_header(self.source.read_exact(BLOCK))
        if member is not None:
            if member.name in self.seen:
                raise DuplicateMember(f"the archive holds member {member.name!r} twice")
            self.seen.add(member.name)
        return member

    def read_small(self, member: TarMember, limit: int) -> bytes:
        if member.size > limit:
            raise ManifestTooLarge(
                f"{member.name} is {member.size} bytes; at most {limit} allowed (not read)"
            )
        data = self.source.read_exact(member.size)
        self.skip_padding(member)
        return data

    def skip_padding(self, member: TarMember) -> None:
        if member.padded_size > member.size:
            self.source.read_exact(member.padded_size - member.size)

    def finish(self) -> None:
        """After the first end-of-archive block: only zeros may follow (record padding), and not forever."""
        seen = 0
        while True:
            piece = self.source.read_upto(min(PIECE, MAX_TRAILING_ZEROS + 1 - seen))
            if not piece:
                return
            if piece.count(0) != len(piece):
                raise TrailingData("data follows the end of the archive")
            seen += len(piece)
            if seen > MAX_TRAILING_ZEROS:
                raise TrailingData(f"more than {MAX_TRAILING_ZEROS} bytes of padding follow the archive")


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
    try:
        payload, _ = open_envelope(document, what="license", error=LicenseInvalid)
    except MalformedDocument as exc:
        raise LicenseInvalid(exc.message) from None
    return parse_license_payload(payload).license_id


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


def _write_member(out: BinaryIO, name: str, data: bytes) -> None:
    out.write(build_header(name, len(data)))
    out.write(data)
    out.write(b"\0" * (padded(len(data)) - len(data)))


def _copy_file_member(out: BinaryIO, name: str, path: Path, size: int) -> None:
    out.write(build_header(name, size))
    with path.open("rb") as handle:
        left = size
        while left:
            piece = handle.read(min(PIECE, left))
            if not piece:
                raise BundleFormatError(f"{path} shrank while it was being written into the bundle")
            out.write(piece)
            left -= len(piece)
    out.write(b"\0" * (padded(size) - size))


@contextlib.contextmanager
def atomic_output(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file beside it, fsync, rename; remove the temporary on failure."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bundle(
    out_path: Path,
    manifest_bytes: bytes,
    signatures: list[Signature],
    keyring: bytes | None,
    payload: list[tuple[PayloadFile, Path]],
) -> None:
    with atomic_output(out_path) as out:
        _write_member(out, MANIFEST_NAME, manifest_bytes)
        _write_member(out, SIGNATURES_NAME, dump_signature_list(signatures))
        if keyring is not None:
            _write_member(out, KEYRING_NAME, keyring)
        for entry, source in payload:
            _copy_file_member(out, entry.name, source, entry.size)
        out.write(END_OF_ARCHIVE)


def file_digest(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while piece := handle.read(PIECE):
            digest.update(piece)
            size += len(piece)
    return digest.hexdigest(), size


class _Discard:
    def write(self, data: bytes, /) -> int:
        return len(data)


def check_delta_rebuilds(delta_path: Path, base_path: Path, base_sha: str, size: int, sha256: str) -> None:
    """Vendor self-check: apply a freshly built delta (hashing, not writing) before it is ever shipped."""
    with delta_path.open("rb") as recipe, delta_path.open("rb") as literals, base_path.open("rb") as base:
        head = delta.read_delta_head(recipe, delta_size=delta_path.stat().st_size)
        literals.seek(head.literals_offset)
        index = delta.index_base(base, expected_sha256=base_sha)
        delta.apply_delta(
            head,
            recipe=recipe,
            literals=literals,
            base=base,
            base_index=index,
            out=_Discard(),
            expected_size=size,
            expected_sha256=sha256,
        )


def _payload_entry(name: str, role: str, path: Path) -> tuple[PayloadFile, Path]:
    sha, size = file_digest(path)
    return PayloadFile(check_member_name(name), role, size, sha), path


def build_bundle(
    out_path: Path,
    *,
    version: str,
    channel: str,
    release_date: date,
    upgrade_from: str,
    image: Path,
    collection: Path,
    service_package: Path,
    notes: Path,
    delta_base: Path | None = None,
    keyring: bytes | None = None,
) -> Manifest:
    """Write an unsigned bundle (``corral-bundle sign`` adds signatures). With ``delta_base`` the image
    travels as a delta over that base artifact."""
    image_sha, image_size = file_digest(image)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".corral-build-") as scratch:
        base_sha = None
        if delta_base is not None:
            base_sha, _ = file_digest(delta_base)
            delta_path = Path(scratch) / "image.delta"
            with (
                delta_base.open("rb") as base,
                image.open("rb") as first,
                image.open("rb") as second,
                delta_path.open("wb") as out,
            ):
                delta.build_delta(base, first, second, out, base_sha256=base_sha)
            check_delta_rebuilds(delta_path, delta_base, base_sha, image_size, image_sha)
            image_entry = _payload_entry("payload/image.delta", "image-delta", delta_path)
        else:
            image_entry = _payload_entry("payload/image.tar", "image", image)
        payload = [
            image_entry,
            _payload_entry(f"payload/{collection.name}", "collection", collection),
            _payload_entry(f"payload/{service_package.name}", "service", service_package),
            _payload_entry(f"payload/{notes.name}", "notes", notes),
        ]
        manifest = Manifest(
            product="corral",
            version=parse_version(version),
            channel=channel,
            release_date=release_date,
            upgrade_from=parse_range(upgrade_from),
            image=ImageIdentity(image_sha, image_size, base_sha),
            files=tuple(entry for entry, _ in payload),
        )
        manifest_bytes = serialize_manifest(manifest)
        write_bundle(out_path, manifest_bytes, [], keyring, payload)
    return parse_manifest(manifest_bytes)


def rewrite_head(path: Path, signatures: list[Signature], keyring: bytes | None) -> None:
    """Replace the signatures (and carried keyring) of a plain bundle, copying the payload unchanged."""
    head = read_head(path)
    with atomic_output(path) as out, path.open("rb") as original:
        _write_member(out, MANIFEST_NAME, head.manifest_bytes)
        _write_member(out, SIGNATURES_NAME, dump_signature_list(signatures))
        if keyring is not None:
            _write_member(out, KEYRING_NAME, keyring)
        original.seek(head.payload_offset)
        while piece := original.read(PIECE):
            out.write(piece)


def encrypt_file(
    source: Path,
    out_path: Path,
    *,
    license_id: str,
    entitlement_key: bytes,
    chunk_size: int = aead.DEFAULT_CHUNK_SIZE,
) -> None:
    """Encrypt a bundle to one license (streaming)."""
    content_key = aead.new_content_key()
    header = aead.build_header(
        license_id=license_id, entitlement_key=entitlement_key, content_key=content_key, chunk_size=chunk_size
    )
    encryptor = aead.StreamEncryptor(header, content_key)
    with source.open("rb") as plain, atomic_output(out_path) as out:
        out.write(header.raw)
        while piece := plain.read(PIECE):
            out.write(encryptor.update(piece))
        out.write(encryptor.finish())
