"""Node image deltas: reconstruct a target artifact byte for byte from a base artifact plus new blocks.

Both artifacts are split at tar member boundaries (a block = one header plus its padded data; after the
end of the archive, or if the data stops looking like tar, fixed 4 MiB blocks). The delta lists the target's
blocks in order (a *recipe*: length + SHA-256 + whether the base holds it) and carries only the blocks the
base lacks. Applying it streams: the base is indexed (one entry per block), then the target is written block
by block and checked against the manifest's image SHA-256. Memory is bounded by the number of blocks, not
their size.

File layout (big-endian)::

    magic b"CRLDLT\\x00\\x01" | target_size u64 | base_sha256 32 B | entry_count u64
    entry_count x (kind u8: 0 = from base, 1 = literal | length u64 | sha256 32 B)
    literal blocks, concatenated in recipe order
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from updater.domain.errors import DeltaBaseMismatch, DeltaInvalid, ImageHashMismatch
from updater.domain.tarformat import BLOCK, header_checksum_ok, padded, parse_number

MAGIC = b"CRLDLT\x00\x01"
HEAD = struct.Struct(">8sQ32sQ")
ENTRY = struct.Struct(">BQ32s")
FROM_BASE, LITERAL = 0, 1
FALLBACK_BLOCK = 4 * 1024 * 1024
PIECE = 1024 * 1024
MAX_ENTRIES = 10_000_000


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class SeekableReadable(Readable, Protocol):
    def seek(self, offset: int, whence: int = 0, /) -> int: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class Block:
    offset: int
    length: int
    sha256: bytes


def _hash_run(source: Readable, length: int, digest: hashlib._Hash, whole: hashlib._Hash | None) -> int:
    """Feed up to ``length`` bytes from ``source`` into the hashes; return how many were there."""
    done = 0
    while done < length:
        piece = source.read(min(PIECE, length - done))
        if not piece:
            break
        digest.update(piece)
        if whole is not None:
            whole.update(piece)
        done += len(piece)
    return done


def iter_blocks(source: Readable, whole: hashlib._Hash | None = None) -> Iterator[Block]:
    """Split a stream into blocks at tar member boundaries; ``whole`` (optional) hashes every byte."""
    offset = 0
    in_tar = True
    while True:
        if in_tar:
            header = source.read(BLOCK)
            if not header:
                return
            if len(header) == BLOCK and header != b"\0" * BLOCK and header_checksum_ok(header):
                size = padded(parse_number(header[124:136]))
                digest = hashlib.sha256(header)
                if whole is not None:
                    whole.update(header)
                got = _hash_run(source, size, digest, whole)
                yield Block(offset, BLOCK + got, digest.digest())
                offset += BLOCK + got
                if got < size:
                    return
                continue
            in_tar = False
            digest = hashlib.sha256(header)
            if whole is not None:
                whole.update(header)
            got = _hash_run(source, FALLBACK_BLOCK - len(header), digest, whole)
            yield Block(offset, len(header) + got, digest.digest())
            offset += len(header) + got
            continue
        digest = hashlib.sha256()
        got = _hash_run(source, FALLBACK_BLOCK, digest, whole)
        if not got:
            return
        yield Block(offset, got, digest.digest())
        offset += got


def _copy(source: Readable, out: Writable, length: int, digest: hashlib._Hash | None = None) -> None:
    left = length
    while left:
        piece = source.read(min(PIECE, left))
        if not piece:
            raise DeltaInvalid("delta or base ended early while copying a block")
        if digest is not None:
            digest.update(piece)
        out.write(piece)
        left -= len(piece)


def build_delta(
    base: Readable, target_pass1: Readable, target_pass2: Readable, out: Writable, *, base_sha256: str
) -> tuple[int, int]:
    """Vendor side: write a delta of target over base. Returns (blocks from base, literal blocks).

    ``target_pass1`` and ``target_pass2`` are two independent streams of the target (it is read twice so no
    block is ever held in memory).
    """
    base_hashes = {block.sha256 for block in iter_blocks(base)}
    blocks = list(iter_blocks(target_pass1))
    target_size = sum(b.length for b in blocks)
    out.write(HEAD.pack(MAGIC, target_size, bytes.fromhex(base_sha256), len(blocks)))
    literal = [b.sha256 not in base_hashes for b in blocks]
    for block, is_literal in zip(blocks, literal, strict=True):
        out.write(ENTRY.pack(LITERAL if is_literal else FROM_BASE, block.length, block.sha256))
    for block, is_literal in zip(blocks, literal, strict=True):
        if is_literal:
            _copy(target_pass2, out, block.length)
        else:
            skip = block.length
            while skip:
                skip -= len(target_pass2.read(min(PIECE, skip)))
    return literal.count(False), literal.count(True)


@dataclass(frozen=True)
class DeltaHead:
    target_size: int
    base_sha256: str
    entry_count: int

    @property
    def literals_offset(self) -> int:
        return HEAD.size + self.entry_count * ENTRY.size


def read_delta_head(source: Readable, *, delta_size: int) -> DeltaHead:
    raw = source.read(HEAD.size)
    if len(raw) != HEAD.size:
        raise DeltaInvalid("delta is shorter than its header")
    magic, target_size, base, count = HEAD.unpack(raw)
    if magic != MAGIC:
        raise DeltaInvalid("delta has the wrong magic (not a Corral image delta)")
    if count > MAX_ENTRIES or HEAD.size + count * ENTRY.size > delta_size:
        raise DeltaInvalid(f"delta declares {count} blocks, more than its size can hold")
    return DeltaHead(target_size, base.hex(), count)


def index_base(base: Readable, *, expected_sha256: str) -> dict[bytes, Block]:
    """Index the base's blocks by hash, checking the base is the image the delta was made over."""
    whole = hashlib.sha256()
    index: dict[bytes, Block] = {}
    for block in iter_blocks(base, whole):
        index.setdefault(block.sha256, block)
    if whole.hexdigest() != expected_sha256:
        raise DeltaBaseMismatch(
            f"base image has SHA-256 {whole.hexdigest()[:16]}…, the delta needs {expected_sha256[:16]}…"
        )
    return index


def apply_delta(
    head: DeltaHead,
    *,
    recipe: Readable,
    literals: Readable,
    base: SeekableReadable,
    base_index: dict[bytes, Block],
    out: Writable,
    expected_size: int,
    expected_sha256: str,
) -> None:
    """Write the target to ``out``; ``recipe`` is positioned after the head, ``literals`` at its offset.

    Refuses (before writing past it) any recipe that would produce more than ``expected_size`` bytes, so a
    delta cannot expand into a bomb; the result must hash to ``expected_sha256``.
    """
    if head.target_size != expected_size:
        raise DeltaInvalid(f"delta builds {head.target_size} bytes; the manifest's image is {expected_size}")
    written = 0
    whole = hashlib.sha256()
    for index in range(head.entry_count):
        raw = recipe.read(ENTRY.size)
        if len(raw) != ENTRY.size:
            raise DeltaInvalid(f"delta recipe ends early at entry {index}")
        kind, length, digest = ENTRY.unpack(raw)
        if written + length > expected_size:
            raise DeltaInvalid(f"delta would expand beyond the declared image size {expected_size} (refused)")
        if kind == FROM_BASE:
            block = base_index.get(digest)
            if block is None or block.length != length:
                raise DeltaInvalid(f"delta entry {index} names a block the base image does not hold")
            base.seek(block.offset)
            _copy(base, out, length, whole)
        elif kind == LITERAL:
            check = hashlib.sha256()
            tee = _Tee(out, whole)
            _copy(literals, tee, length, check)
            if check.digest() != digest:
                raise DeltaInvalid(f"delta literal block {index} does not match its recipe hash")
        else:
            raise DeltaInvalid(f"delta entry {index} has unknown kind {kind}")
        written += length
    if literals.read(1):
        raise DeltaInvalid("delta has data after its last literal block")
    if written != expected_size:
        raise DeltaInvalid(f"delta built {written} bytes; the manifest's image is {expected_size}")
    if whole.hexdigest() != expected_sha256:
        raise ImageHashMismatch("the image rebuilt from the delta does not have the manifest's SHA-256")


class _Tee:
    def __init__(self, out: Writable, digest: hashlib._Hash) -> None:
        self._out, self._digest = out, digest

    def write(self, data: bytes, /) -> int:
        self._digest.update(data)
        return self._out.write(data)
