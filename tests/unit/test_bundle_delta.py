"""Image deltas rebuild the exact target bytes, and the strict tar header reader never crashes on junk."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit import bundle_kit as kit_
from updater.domain import delta, errors
from updater.domain.tarformat import BLOCK, build_header, parse_header


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_and_apply(base: bytes, target: bytes) -> tuple[bytes, bytes]:
    base_sha = hashlib.sha256(base).hexdigest()
    out = io.BytesIO()
    delta.build_delta(io.BytesIO(base), io.BytesIO(target), io.BytesIO(target), out, base_sha256=base_sha)
    data = out.getvalue()
    head = delta.read_delta_head(io.BytesIO(data), delta_size=len(data))
    recipe, literals = io.BytesIO(data), io.BytesIO(data)
    recipe.seek(delta.HEAD.size)
    literals.seek(head.literals_offset)
    index = delta.index_base(io.BytesIO(base), expected_sha256=base_sha)
    rebuilt = io.BytesIO()
    delta.apply_delta(
        head,
        recipe=recipe,
        literals=literals,
        base=io.BytesIO(base),
        base_index=index,
        out=rebuilt,
        expected_size=len(target),
        expected_sha256=hashlib.sha256(target).hexdigest(),
    )
    return data, rebuilt.getvalue()


contents = st.dictionaries(
    st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8}){0,2}", fullmatch=True),
    st.binary(max_size=3000),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=contents, changes=contents, removed=st.integers(min_value=0, max_value=3))
def test_delta_rebuilds_the_exact_target_for_any_pair_of_images(
    base: dict[str, bytes], changes: dict[str, bytes], removed: int
) -> None:
    target = dict(base)
    for name in sorted(target)[:removed]:
        del target[name]
    target.update(changes)
    base_tar, target_tar = tar_bytes(base), tar_bytes(target)
    _, rebuilt = make_and_apply(base_tar, target_tar)
    assert rebuilt == target_tar


@settings(max_examples=30, deadline=None)
@given(base=st.binary(max_size=20000), target=st.binary(max_size=20000))
def test_delta_is_byte_exact_even_for_artifacts_that_are_not_tar(base: bytes, target: bytes) -> None:
    assert make_and_apply(base, target)[1] == target


def test_delta_of_a_one_file_change_carries_only_that_file(tmp_path: Path) -> None:
    members = kit_.image_members("1.2.0", files=50, size=20000)
    base = tar_bytes(members)
    members["usr/lib/corral/file007"] = b"patched" * 100
    target = tar_bytes(members)
    data, rebuilt = make_and_apply(base, target)
    assert rebuilt == target
    assert len(data) < len(target) / 20, f"delta {len(data)} bytes for a {len(target)}-byte image"


def test_delta_over_another_base_is_refused() -> None:
    base, target = tar_bytes({"a": b"1" * 600}), tar_bytes({"a": b"2" * 600})
    with pytest.raises(errors.DeltaBaseMismatch):
        delta.index_base(io.BytesIO(base + b"x"), expected_sha256=hashlib.sha256(base).hexdigest())
    assert make_and_apply(base, target)[1] == target


def test_delta_with_a_wrong_literal_is_refused() -> None:
    base, target = tar_bytes({"a": b"1" * 600}), tar_bytes({"a": b"2" * 600})
    data, _ = make_and_apply(base, target)
    head = delta.read_delta_head(io.BytesIO(data), delta_size=len(data))
    broken = bytearray(data)
    broken[head.literals_offset + 700] ^= 1
    recipe, literals = io.BytesIO(bytes(broken)), io.BytesIO(bytes(broken))
    recipe.seek(delta.HEAD.size)
    literals.seek(head.literals_offset)
    with pytest.raises(errors.DeltaInvalid, match="literal block"):
        delta.apply_delta(
            head,
            recipe=recipe,
            literals=literals,
            base=io.BytesIO(base),
            base_index=delta.index_base(io.BytesIO(base), expected_sha256=hashlib.sha256(base).hexdigest()),
            out=io.BytesIO(),
            expected_size=len(target),
            expected_sha256=hashlib.sha256(target).hexdigest(),
        )


def test_header_round_trips_names_and_sizes() -> None:
    for name, size in (
        ("manifest.json", 0),
        ("payload/a", 1),
        ("x" * 100, 8**11 - 1),
        ("payload/big", 3 << 40),
    ):
        member = parse_header(build_header(name, size))
        assert member is not None
        assert (member.name, member.size) == (name, size)
    assert parse_header(b"\0" * BLOCK) is None


@settings(max_examples=500)
@given(st.binary(min_size=BLOCK, max_size=BLOCK))
def test_any_header_with_a_valid_checksum_is_parsed_or_refused_with_a_bundle_error(raw: bytes) -> None:
    block = bytearray(raw)
    block[257:263] = b"ustar\0"
    block[148:156] = f"{sum(block[:148]) + 256 + sum(block[156:]):06o}\0 ".encode()
    try:
        member = parse_header(bytes(block))
    except errors.BundleFormatError:
        return
    assert member is not None
    assert not member.name.startswith("/")
    assert ".." not in member.name.split("/")
    assert block[156:157] in (b"0", b"\0")


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=BLOCK - 1), st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_in_a_header_is_caught_or_harmless(position: int, value: int) -> None:
    block = bytearray(build_header("payload/file.bin", 12345))
    block[position] = value
    try:
        member = parse_header(bytes(block))
    except errors.BundleFormatError:
        return
    # A change the checksum cannot see (none exists for a single byte) or in an ignored field.
    assert member is not None
    assert (member.name, member.size) == ("payload/file.bin", 12345) or bytes(block) == build_header(
        "payload/file.bin", 12345
    )
