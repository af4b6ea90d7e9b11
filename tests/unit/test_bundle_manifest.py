"""The manifest parser and the strict semantic versions it relies on (with hypothesis)."""

from __future__ import annotations

import itertools
import json
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from updater.domain import errors
from updater.domain.manifest import ImageIdentity, Manifest, PayloadFile, parse_manifest, serialize_manifest
from updater.domain.semver import Version, parse_range, parse_version

SHA = "ab" * 32
SHA2 = "cd" * 32


def manifest_doc(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "format": 1,
        "product": "corral",
        "version": "1.3.0",
        "channel": "stable",
        "release_date": "2026-11-01",
        "upgrade_from": ">=1.2.0, <1.3.0",
        "image": {"sha256": SHA, "size": 10, "delta_base_sha256": None},
        "files": [
            {"name": "payload/image.tar", "role": "image", "size": 10, "sha256": SHA},
            {"name": "payload/c.tar.gz", "role": "collection", "size": 1, "sha256": SHA2},
            {"name": "payload/u.whl", "role": "service", "size": 2, "sha256": SHA2},
            {"name": "payload/NOTES.md", "role": "notes", "size": 3, "sha256": SHA2},
        ],
    }
    doc.update(changes)
    return doc


def encode(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_valid_manifest_parses() -> None:
    manifest = parse_manifest(encode(manifest_doc()))
    assert manifest.version == parse_version("1.3.0")
    assert manifest.release_date == date(2026, 11, 1)
    assert parse_version("1.2.5") in manifest.upgrade_from
    assert parse_version("1.3.0") not in manifest.upgrade_from
    assert manifest.payload_size == 16


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"format": 2}, "format"),
        ({"product": "other"}, "product"),
        ({"version": "v1.3.0"}, "semantic version"),
        ({"version": "1.03.0"}, "semantic version"),
        ({"release_date": "2026-02-30"}, "real date"),
        ({"upgrade_from": "1.2.0"}, "does not start with"),
        ({"channel": "Stable!"}, "channel"),
        ({"extra": 1}, "unexpected ['extra']"),
        ({"image": {"sha256": SHA.upper(), "size": 10, "delta_base_sha256": None}}, "lowercase hex"),
        ({"image": {"sha256": SHA, "size": True, "delta_base_sha256": None}}, "integer"),
        ({"image": {"sha256": SHA, "size": -1, "delta_base_sha256": None}}, "integer"),
    ],
)
def test_invalid_fields_are_refused_with_a_reason(changes: dict[str, object], words: str) -> None:
    with pytest.raises(errors.ManifestInvalid) as caught:
        parse_manifest(encode(manifest_doc(**changes)))
    assert words in caught.value.message


@pytest.mark.parametrize(
    "name",
    ["../x", "/abs", "payload/../x", "payload//x", "./x", "payload/.", "manifest.json", "a\\b", "x" * 101],
)
def test_unsafe_file_names_are_refused(name: str) -> None:
    doc = manifest_doc()
    doc["files"][1]["name"] = name  # type: ignore[index]
    with pytest.raises(errors.ManifestInvalid):
        parse_manifest(encode(doc))


def test_file_listed_twice_is_refused() -> None:
    doc = manifest_doc()
    doc["files"][2]["name"] = doc["files"][1]["name"]  # type: ignore[index]
    with pytest.raises(errors.ManifestInvalid, match="twice"):
        parse_manifest(encode(doc))


def test_names_differing_only_in_case_are_refused() -> None:
    doc = manifest_doc()
    doc["files"][2]["name"] = "PAYLOAD/C.TAR.GZ"  # type: ignore[index]
    with pytest.raises(errors.ManifestInvalid, match="twice"):
        parse_manifest(encode(doc))


def test_image_file_must_match_the_image_identity() -> None:
    doc = manifest_doc(image={"sha256": SHA2, "size": 10, "delta_base_sha256": None})
    with pytest.raises(errors.ManifestInvalid, match="image file"):
        parse_manifest(encode(doc))


def test_delta_manifest_needs_a_delta_file_and_a_base() -> None:
    doc = manifest_doc(image={"sha256": SHA, "size": 10, "delta_base_sha256": SHA2})
    with pytest.raises(errors.ManifestInvalid, match="image-delta"):
        parse_manifest(encode(doc))
    doc["files"][0]["role"] = "image-delta"  # type: ignore[index]
    assert parse_manifest(encode(doc)).is_delta


def test_duplicate_key_is_refused_at_any_depth() -> None:
    text = encode(manifest_doc()).decode()
    top = text.replace('"channel": "stable"', '"channel": "stable", "channel": "edge"')
    nested = text.replace('"role": "image"', '"role": "image", "role": "notes"')
    for data in (top, nested):
        with pytest.raises(errors.ManifestDuplicateKey):
            parse_manifest(data.encode())


def test_nan_and_non_object_roots_are_refused() -> None:
    for data in (b'{"format": NaN}', b"[1, 2]", b"\xff\xfe", b"", b"null"):
        with pytest.raises(errors.ManifestInvalid):
            parse_manifest(data)


# --- semantic versions ----------------------------------------------------------------------------------


def test_version_precedence_follows_semver() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
    ]
    ordered += ["1.0.0-rc.1", "1.0.0", "1.2.0", "1.10.0", "2.0.0"]
    versions = [parse_version(v) for v in ordered]
    assert versions == sorted(versions)
    assert all(a < b for a, b in itertools.pairwise(versions))
    assert parse_version("1.0.0+build.5") == parse_version("1.0.0")


@pytest.mark.parametrize(
    "text", ["1", "1.2", "01.2.3", "1.2.3-01", "1.2.3-", "v1.2.3", "1.2.3.4", " 1.2.3", "1.2.3-a..b"]
)
def test_malformed_versions_are_refused(text: str) -> None:
    with pytest.raises(errors.InvalidVersion):
        parse_version(text)


def test_range_with_bad_comparator_is_refused() -> None:
    with pytest.raises(errors.InvalidVersion):
        parse_range("~1.2.0")
    with pytest.raises(errors.InvalidVersion):
        parse_range("")


numbers = st.integers(min_value=0, max_value=10**6)
identifiers = st.from_regex(r"[0-9A-Za-z-]{1,8}", fullmatch=True).filter(
    lambda s: not (s.isdigit() and len(s) > 1 and s.startswith("0"))
)
versions = st.builds(
    Version, numbers, numbers, numbers, st.lists(identifiers, max_size=3).map(tuple), st.just(())
)


@given(versions)
def test_version_text_round_trips(version: Version) -> None:
    assert parse_version(str(version)) == version


triples = st.tuples(numbers, numbers, numbers)


@given(triples, triples)
def test_release_ordering_is_numeric_tuple_ordering(left: tuple[int, ...], right: tuple[int, ...]) -> None:
    as_version = [parse_version(".".join(map(str, t))) for t in (left, right)]
    assert (as_version[0] < as_version[1]) == (left < right)
    assert (as_version[0] == as_version[1]) == (left == right)


# --- hypothesis: the parser never accepts garbage and never crashes -------------------------------------

hexes = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True).filter(lambda n: ".." not in n)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    delta = draw(st.booleans())
    image_size = draw(st.integers(min_value=0, max_value=2**40))
    image_sha = draw(hexes)
    base = draw(hexes.filter(lambda h: h != image_sha)) if delta else None
    stems = draw(st.lists(names, min_size=4, max_size=4, unique=True))
    roles = ["image-delta" if delta else "image", "collection", "service", "notes"]
    files = []
    for stem, role in zip(stems, roles, strict=True):
        if role == "image":
            files.append(PayloadFile(f"payload/{stem}", role, image_size, image_sha))
        else:
            size = draw(st.integers(min_value=0, max_value=2**40))
            files.append(PayloadFile(f"payload/{stem}", role, size, draw(hexes)))
    version = draw(versions)
    return Manifest(
        product="corral",
        version=version,
        channel=draw(st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}", fullmatch=True)),
        release_date=draw(st.dates(min_value=date(2000, 1, 1), max_value=date(2999, 12, 31))),
        upgrade_from=parse_range(f"<{version}"),
        image=ImageIdentity(image_sha, image_size, base),
        files=tuple(files),
    )


@settings(max_examples=150)
@given(manifests())
def test_any_valid_manifest_round_trips(manifest: Manifest) -> None:
    parsed = parse_manifest(serialize_manifest(manifest))
    assert parsed.to_json() == manifest.to_json()


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_are_refused_with_a_manifest_error(data: bytes) -> None:
    with pytest.raises(errors.ManifestInvalid):
        parse_manifest(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(manifests(), st.sampled_from(list(manifest_doc())), json_values)
def test_any_single_field_replaced_by_junk_is_refused_or_still_valid(
    manifest: Manifest, field: str, junk: object
) -> None:
    doc = manifest.to_json()
    doc[field] = junk
    try:
        parsed = parse_manifest(encode(doc))
    except errors.ManifestInvalid:
        return
    assert parsed.to_json()[field] == junk  # accepted only if the junk happens to be a valid value
