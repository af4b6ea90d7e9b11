"""Bundles encrypted to one license: wrapped content key + STREAM-style chunked AES-256-GCM.

File layout (all integers big-endian)::

    magic      8 bytes   b"CRLENC\\x00\\x01"
    hlen       4 bytes   length of the header JSON (at most 4096)
    header     hlen      {"format": 1, "cipher": "AES-256-GCM-STREAM", "license_id": "...",
                          "chunk_size": 1048576, "salt": <hex 32 B>, "nonce_prefix": <hex 7 B>,
                          "wrapped_key": <hex 40 B>}
    chunks     ...       each: AES-256-GCM(content_key, nonce, plaintext, aad) = ciphertext || 16-byte tag

* ``wrapped_key`` = AES-KW(KEK, content_key) (RFC 3394), KEK = HKDF-SHA256(entitlement key, salt,
  info = b"corral bundle key wrap v1\\0" + license_id). A wrong key fails the unwrap's integrity check.
* Chunk ``i`` (from 0) uses nonce = nonce_prefix (7) || i (4) || last (1: 0x01 on the final chunk, else 0x00)
  and aad = SHA-256(magic || hlen || header), which binds every chunk to this header. Every chunk but the
  last holds exactly ``chunk_size`` plaintext bytes; the last holds 0..chunk_size (an empty payload is one
  empty last chunk). So a changed, dropped, reordered or appended chunk fails authentication, and a
  stream cut at a chunk boundary is detected because its final chunk is not marked last.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import struct
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from updater.domain import strict_json
from updater.domain.errors import (
    ChunkAuthenticationFailed,
    EncryptedHeaderInvalid,
    EncryptedTruncated,
    LicenseMismatch,
    MalformedDocument,
    WrongEntitlementKey,
)

MAGIC = b"CRLENC\x00\x01"
FORMAT = 1
CIPHER = "AES-256-GCM-STREAM"
TAG = 16
DEFAULT_CHUNK_SIZE = 1024 * 1024
MIN_CHUNK_SIZE = 16
MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_HEADER = 4096
MAX_CHUNKS = 2**32
_FIELDS = {"format", "cipher", "license_id", "chunk_size", "salt", "nonce_prefix", "wrapped_key"}


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class EncryptedHeader:
    license_id: str
    chunk_size: int
    salt: bytes
    nonce_prefix: bytes
    wrapped_key: bytes
    raw: bytes  # magic || hlen || header JSON, exactly as stored

    @property
    def aad(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


def is_encrypted(prefix: bytes) -> bool:
    """True if a file starting with ``prefix`` (≥ 8 bytes) is an encrypted bundle."""
    return prefix[: len(MAGIC)] == MAGIC


def _kek(entitlement_key: bytes, salt: bytes, license_id: str) -> bytes:
    info = b"corral bundle key wrap v1\x00" + license_id.encode("ascii")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(entitlement_key)


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= MAX_CHUNKS:
        raise ChunkAuthenticationFailed("too many chunks for one nonce prefix")
    return prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")


def build_header(
    *, license_id: str, entitlement_key: bytes, content_key: bytes, chunk_size: int
) -> EncryptedHeader:
    """Vendor side: a fresh salt and nonce prefix; the content key wrapped for this license's key."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size must be {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    salt, prefix = secrets.token_bytes(32), secrets.token_bytes(7)
    wrapped = aes_key_wrap(_kek(entitlement_key, salt, license_id), content_key)
    body = strict_json.dumps(
        {
            "format": FORMAT,
            "cipher": CIPHER,
            "license_id": license_id,
            "chunk_size": chunk_size,
            "salt": salt.hex(),
            "nonce_prefix": prefix.hex(),
            "wrapped_key": wrapped.hex(),
        }
    )
    raw = MAGIC + struct.pack(">I", len(body)) + body
    return EncryptedHeader(license_id, chunk_size, salt, prefix, wrapped, raw)


def _hex(value: object, size: int, name: str) -> bytes:
    if not isinstance(value, str) or not re.fullmatch(rf"[0-9a-f]{{{2 * size}}}", value):
        raise EncryptedHeaderInvalid(f"encrypted header field {name} must be {size} bytes of lowercase hex")
    return bytes.fromhex(value)


def read_header(source: Readable) -> EncryptedHeader:
    """Read and validate the header from the start of ``source`` (no key needed: ``inspect`` uses this)."""
    lead = source.read(len(MAGIC) + 4)
    if len(lead) < len(MAGIC) + 4 or not is_encrypted(lead):
        raise EncryptedHeaderInvalid("not an encrypted Corral bundle (bad magic)")
    (length,) = struct.unpack(">I", lead[len(MAGIC) :])
    if not 2 <= length <= MAX_HEADER:
        raise EncryptedHeaderInvalid(f"encrypted header length {length} is outside 2..{MAX_HEADER}")
    body = source.read(length)
    if len(body) != length:
        raise EncryptedTruncated("the encrypted bundle ends inside its header")
    try:
        doc = strict_json.loads_object(body, what="encrypted header")
    except MalformedDocument as exc:
        raise EncryptedHeaderInvalid(exc.message) from None
    if set(doc) != _FIELDS or doc["format"] != FORMAT or doc["cipher"] != CIPHER:
        raise EncryptedHeaderInvalid(
            f"unsupported encrypted header (format {FORMAT}, cipher {CIPHER} expected)"
        )
    chunk_size, license_id = doc["chunk_size"], doc["license_id"]
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool):
        raise EncryptedHeaderInvalid("chunk_size must be an integer")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise EncryptedHeaderInvalid(f"chunk_size {chunk_size} is outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    if not isinstance(license_id, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", license_id):
        raise EncryptedHeaderInvalid("license_id in the encrypted header is not a valid license id")
    return EncryptedHeader(
        license_id,
        chunk_size,
        _hex(doc["salt"], 32, "salt"),
        _hex(doc["nonce_prefix"], 7, "nonce_prefix"),
        _hex(doc["wrapped_key"], 40, "wrapped_key"),
        lead + body,
    )


def unwrap_content_key(header: EncryptedHeader, *, license_id: str, entitlement_key: bytes) -> bytes:
    """The content key, or :class:`LicenseMismatch` / :class:`WrongEntitlementKey`."""
    if header.license_id != license_id:
        raise LicenseMismatch(f"bundle is encrypted to license {header.license_id}, not {license_id}")
    try:
        return aes_key_unwrap(_kek(entitlement_key, header.salt, header.license_id), header.wrapped_key)
    except InvalidUnwrap:
        raise WrongEntitlementKey(
            f"the entitlement key given cannot open this bundle (encrypted to license {header.license_id})"
        ) from None


class StreamEncryptor:
    """Incremental encryption: write ``header.raw``, then what :meth:`update` and :meth:`finish` return."""

    def __init__(self, header: EncryptedHeader, content_key: bytes) -> None:
        self._header = header
        self._aead = AESGCM(content_key)
        self._aad = header.aad
        self._pending = bytearray()
        self._index = 0

    def _seal(self, chunk: bytes | memoryview, last: bool) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._header.nonce_prefix, self._index, last), chunk, self._aad)
        self._index += 1
        return sealed

    def update(self, data: bytes) -> bytes:
        self._pending += data
        size = self._header.chunk_size
        # Keep at least one byte back: only finish() knows which chunk is the last one.
        count = (len(self._pending) - 1) // size
        if count <= 0:
            return b""
        with memoryview(self._pending) as view:
            sealed = [self._seal(view[i * size : (i + 1) * size], last=False) for i in range(count)]
        del self._pending[: count * size]
        return b"".join(sealed)

    def finish(self) -> bytes:
        sealed = self._seal(bytes(self._pending), last=True)
        self._pending.clear()
        return sealed


class DecryptingReader:
    """A readable stream of authenticated plaintext over ``source`` (positioned just after the header).

    Each chunk is authenticated before any of its bytes are returned; the end of the plaintext is reported
    only after the final chunk (marked last) has verified, and data after it is refused.
    """

    def __init__(self, source: Readable, header: EncryptedHeader, content_key: bytes) -> None:
        self._source = source
        self._header = header
        self._aead = AESGCM(content_key)
        self._aad = header.aad
        self._sealed = header.chunk_size + TAG
        self._lookahead = source.read(self._sealed)
        self._buffer = b""
        self._offset = 0
        self._index = 0
        self._done = False

    def _open(self, sealed: bytes, last: bool) -> bytes:
        nonce = _nonce(self._header.nonce_prefix, self._index, last)
        try:
            return self._aead.decrypt(nonce, sealed, self._aad)
        except InvalidTag:
            pass
        if last and len(sealed) == self._sealed:
            try:
                self._aead.decrypt(_nonce(self._header.nonce_prefix, self._index, False), sealed, self._aad)
            except InvalidTag:
                pass
            else:
                raise EncryptedTruncated(
                    f"the encrypted bundle ends after chunk {self._index} without its final chunk (truncated)"
                )
        raise ChunkAuthenticationFailed(
            f"encrypted chunk {self._index} failed authentication"
            " (altered, dropped, reordered or appended data)"
        )

    def _next_chunk(self) -> bytes:
        current = self._lookahead
        if len(current) < TAG:
            raise EncryptedTruncated(f"the encrypted bundle ends inside chunk {self._index} (truncated)")
        if len(current) < self._sealed:
            self._lookahead = b""
            last = True
        else:
            self._lookahead = self._source.read(self._sealed)
            last = not self._lookahead
        plain = self._open(current, last)
        self._index += 1
        if last:
            self._done = True
        return plain

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            parts = [self._buffer[self._offset :]]
            self._buffer, self._offset = b"", 0
            while not self._done:
                parts.append(self._next_chunk())
            return b"".join(parts)
        while self._offset >= len(self._buffer) and not self._done:
            self._buffer, self._offset = self._next_chunk(), 0
        piece = self._buffer[self._offset : self._offset + size]
        self._offset += len(piece)
        return piece

    def verify_end(self) -> None:
        """Read (and authenticate) to the end, discarding plaintext; raises if anything is wrong."""
        while not self._done:
            self._next_chunk()


def open_encrypted(source: Readable, *, license_id: str, entitlement_key: bytes) -> DecryptingReader:
    """Read the header from ``source``, unwrap the content key, and return the plaintext stream."""
    header = read_header(source)
    key = unwrap_content_key(header, license_id=license_id, entitlement_key=entitlement_key)
    return DecryptingReader(source, header, key)


def new_content_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)
