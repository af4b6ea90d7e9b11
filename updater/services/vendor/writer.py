"""Writing bundle files (the vendor's side): build, re-sign and encrypt a bundle, atomically.

The reader and verifier of the same format is :mod:`updater.services.bundles.reader`; writers never verify.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import BinaryIO

from updater.domain import aead, delta
from updater.domain.bundle import (
    KEYRING_NAME,
    MANIFEST_NAME,
    SIGNATURES_NAME,
)
from updater.domain.errors import (
    BundleFormatError,
)
from updater.domain.manifest import (
    ImageIdentity,
    Manifest,
    PayloadFile,
    check_member_name,
    parse_manifest,
    serialize_manifest,
)
from updater.domain.semver import parse_range, parse_version
from updater.domain.signing import Signature, dump_signature_list
from updater.domain.tarformat import END_OF_ARCHIVE, build_header, padded
from updater.services.bundles.reader import PIECE, read_head


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
