"""Chunked AEAD for bundles encrypted to one license: round trips, and every stream manipulation detected."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from updater.domain import aead, errors
from updater.domain.license import generate_entitlement_key

KEY = bytes(range(32))
CHUNK = 64


def encrypt(plain: bytes, *, chunk: int = CHUNK, key: bytes = KEY, license_id: str = "lic-1") -> bytes:
    content = aead.new_content_key()
    header = aead.build_header(
        license_id=license_id, entitlement_key=key, content_key=content, chunk_size=chunk
    )
    enc = aead.StreamEncryptor(header, content)
    out = bytearray(header.raw)
    for i in range(0, len(plain), 37):  # feed in pieces unrelated to the chunk size
        out += enc.update(plain[i : i + 37])
    out += enc.finish()
    return bytes(out)


def decrypt(data: bytes, *, key: bytes = KEY, license_id: str = "lic-1", read: int = 1000) -> bytes:
    reader = aead.open_encrypted(io.BytesIO(data), license_id=license_id, entitlement_key=key)
    out = bytearray()
    while piece := reader.read(read):
        out += piece
    return bytes(out)


def split(data: bytes, chunk: int = CHUNK) -> tuple[bytes, list[bytes]]:
    (length,) = struct.unpack(">I", data[8:12])
    header_end = 12 + length
    body = data[header_end:]
    sealed = chunk + aead.TAG
    return data[:header_end], [body[i : i + sealed] for i in range(0, len(body), sealed)]


PLAIN = bytes(range(256)) * 3  # 768 bytes: 12 full chunks of 64 and one empty last chunk


def test_round_trip_streams_in_any_read_size() -> None:
    data = encrypt(PLAIN)
    for read in (1, 7, 64, 100, 10_000):
        assert decrypt(data, read=read) == PLAIN
    assert aead.open_encrypted(io.BytesIO(data), license_id="lic-1", entitlement_key=KEY).read() == PLAIN


def test_empty_payload_round_trips() -> None:
    assert decrypt(encrypt(b"")) == b""


def test_wrong_entitlement_key_is_refused() -> None:
    with pytest.raises(errors.WrongEntitlementKey):
        decrypt(encrypt(PLAIN), key=generate_entitlement_key())


def test_bundle_for_another_license_is_refused_before_any_key_is_tried() -> None:
    with pytest.raises(errors.LicenseMismatch, match="encrypted to license lic-1, not lic-2"):
        decrypt(encrypt(PLAIN), license_id="lic-2")


def test_dropped_chunk_is_detected() -> None:
    header, chunks = split(encrypt(PLAIN))
    with pytest.raises(errors.ChunkAuthenticationFailed):
        decrypt(header + b"".join(chunks[:3] + chunks[4:]))


def test_reordered_chunks_are_detected() -> None:
    header, chunks = split(encrypt(PLAIN))
    chunks[2], chunks[3] = chunks[3], chunks[2]
    with pytest.raises(errors.ChunkAuthenticationFailed):
        decrypt(header + b"".join(chunks))


def test_truncation_at_a_chunk_boundary_is_detected_as_truncation() -> None:
    header, chunks = split(encrypt(PLAIN))
    with pytest.raises(errors.EncryptedTruncated, match="without its final chunk"):
        decrypt(header + b"".join(chunks[:5]))


def test_truncation_inside_a_chunk_is_detected() -> None:
    data = encrypt(PLAIN)
    with pytest.raises((errors.EncryptedTruncated, errors.ChunkAuthenticationFailed)):
        decrypt(data[:-5])


def test_appended_chunk_after_the_last_is_detected() -> None:
    header, chunks = split(encrypt(PLAIN))
    with pytest.raises(errors.ChunkAuthenticationFailed):
        decrypt(header + b"".join(chunks) + chunks[0])


def test_chunk_from_another_encryption_is_detected() -> None:
    header, chunks = split(encrypt(PLAIN))
    _, foreign = split(encrypt(PLAIN))
    chunks[1] = foreign[1]
    with pytest.raises(errors.ChunkAuthenticationFailed):
        decrypt(header + b"".join(chunks))


def test_header_tampering_is_detected() -> None:
    data = bytearray(encrypt(PLAIN))
    position = bytes(data).index(b'"chunk_size":64') + len(b'"chunk_size":6')
    data[position] = ord("5")  # chunk size 65: the header no longer matches the chunks' AAD
    with pytest.raises(errors.ChunkAuthenticationFailed):
        decrypt(bytes(data))


def test_malformed_header_is_refused() -> None:
    with pytest.raises(errors.EncryptedHeaderInvalid):
        decrypt(b"CRLENC\x00\x01" + struct.pack(">I", 5) + b"{...}")
    with pytest.raises(errors.EncryptedHeaderInvalid):
        decrypt(b"not encrypted at all")


@settings(max_examples=60, deadline=None)
@given(plain=st.binary(max_size=3000), chunk=st.integers(min_value=16, max_value=300))
def test_any_payload_round_trips_for_any_chunk_size(plain: bytes, chunk: int) -> None:
    assert decrypt(encrypt(plain, chunk=chunk), read=97) == plain


@settings(max_examples=80, deadline=None)
@given(plain=st.binary(min_size=1, max_size=1500), data=st.data())
def test_any_single_bit_flip_after_the_magic_is_detected(plain: bytes, data: st.DataObject) -> None:
    sealed = bytearray(encrypt(plain, chunk=100))
    position = data.draw(st.integers(min_value=12, max_value=len(sealed) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    sealed[position] ^= 1 << bit
    with pytest.raises(errors.VerificationError):
        decrypt(bytes(sealed))


@settings(max_examples=80, deadline=None)
@given(plain=st.binary(max_size=1500), data=st.data())
def test_any_truncation_is_detected(plain: bytes, data: st.DataObject) -> None:
    sealed = encrypt(plain, chunk=100)
    cut = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1))
    with pytest.raises(errors.VerificationError):
        decrypt(sealed[:cut])
