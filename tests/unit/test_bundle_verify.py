"""Specification of the bundle verifier: every hostile bundle is refused with its own check name.

Each test builds a real signed bundle with the vendor code path, changes one thing, and runs the one verifier
(`verify_bundle_file`, the same code `verify_and_stage` and `corral-bundle verify` use).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from tests.unit import bundle_kit as kit_
from tests.unit.bundle_kit import NOW, Kit
from updater.domain import errors
from updater.domain.signing import dump_signature_list, parse_signature_list, sign
from updater.domain.tarformat import padded
from updater.services.bundles.staging import verify_bundle_file
from updater.services.vendor import keys as vendor
from updater.services.vendor import writer

EARLIER = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return kit_.make_kit(tmp_path)


def verify(kit: Kit, bundle: Path, **kwargs: object) -> object:
    kwargs.setdefault("installed_version", "1.2.0")
    return verify_bundle_file(bundle, trust=kit.trust(), now=NOW, **kwargs)  # type: ignore[arg-type]


def refused(kit: Kit, bundle: Path, error: type[errors.VerificationError], **kwargs: object) -> str:
    with pytest.raises(error) as caught:
        verify(kit, bundle, **kwargs)
    assert type(caught.value) is error, f"expected {error.__name__}, got {type(caught.value).__name__}"
    return caught.value.message


# --- valid bundles pass ---------------------------------------------------------------------------------


def test_valid_whole_bundle_passes_every_check(kit: Kit) -> None:
    bundle = kit_.build_bundle(kit)
    lic = kit_.issue(kit)
    result = verify_bundle_file(
        bundle,
        trust=kit.trust(),
        now=NOW,
        license_document=lic.document,
        entitlement_key=lic.key,
        installed_version="1.2.0",
        node_count=5,
    )
    assert str(result.manifest.version) == "1.3.0"
    assert result.checks == (
        "keyring",
        "signature-threshold",
        "manifest",
        "upgrade-path",
        "license",
        "entitlement-key",
        "license-entitlement",
        "payload",
    )
    assert len(result.signed_by) == 3


def test_valid_delta_bundle_passes_with_its_base_present(kit: Kit, tmp_path: Path) -> None:
    base = kit_.make_artifacts(tmp_path / "base", "1.2.0")
    bases = tmp_path / "bases"
    bases.mkdir()
    sha, _ = writer.file_digest(base.image)
    os.link(base.image, bases / f"{sha}.tar")
    bundle = kit_.build_bundle(kit, delta_base=base.image)
    result = verify(kit, bundle, base_images_dir=bases)
    assert result.manifest.is_delta  # type: ignore[attr-defined]
    assert "delta-base" in result.checks  # type: ignore[attr-defined]
    whole = kit_.build_bundle(
        kit, name="whole.bundle", artifacts=kit_.make_artifacts(tmp_path / "w", "1.3.0")
    )
    assert bundle.stat().st_size < whole.stat().st_size / 2, "a delta over a similar base must be small"


# --- tampering ------------------------------------------------------------------------------------------


def test_tampered_payload_byte_is_refused(kit: Kit) -> None:
    bundle = kit_.build_bundle(kit)
    data = bytearray(bundle.read_bytes())
    members = kit_.read_members(bundle)
    payload_name, payload = members[2]
    offset = bytes(data).index(payload)
    data[offset + 10] ^= 0x01
    bundle.write_bytes(bytes(data))
    message = refused(kit, bundle, errors.PayloadHashMismatch)
    assert payload_name in message


def test_tampered_manifest_is_refused(kit: Kit, tmp_path: Path) -> None:
    bundle = kit_.build_bundle(kit)
    members = kit_.read_members(bundle)
    manifest = members[0][1].replace(b'"channel":"stable"', b'"channel":"stabl3"')
    assert manifest != members[0][1]
    tampered = kit_.rebuild(tmp_path / "t.bundle", [("manifest.json", manifest), *members[1:]])
    assert "tampered or re-serialised" in refused(kit, tampered, errors.SignatureInvalid)


def test_manifest_reserialised_with_same_content_is_refused(kit: Kit, tmp_path: Path) -> None:
    bundle = kit_.build_bundle(kit)
    members = kit_.read_members(bundle)
    same_content = json.dumps(json.loads(members[0][1]), indent=1).encode()
    assert json.loads(same_content) == json.loads(members[0][1])
    tampered = kit_.rebuild(tmp_path / "t.bundle", [("manifest.json", same_content), *members[1:]])
    refused(kit, tampered, errors.SignatureInvalid)


def _resign(kit: Kit, path: Path, manifest: bytes, rest: list[tuple[str, bytes]]) -> Path:
    signatures = vendor.sign_manifest(kit.vendor_dir, manifest, now=NOW)
    return kit_.rebuild(
        path, [("manifest.json", manifest), ("manifest.sig", dump_signature_list(signatures)), *rest]
    )


def test_manifest_with_duplicate_json_key_is_refused_even_when_signed(kit: Kit, tmp_path: Path) -> None:
    bundle = kit_.build_bundle(kit)
    members = kit_.read_members(bundle)
    manifest = members[0][1].replace(b'"channel":"stable"', b'"channel":"stable","channel":"edge"')
    refused(kit, _resign(kit, tmp_path / "d.bundle", manifest, members[2:]), errors.ManifestDuplicateKey)


def test_duplicate_tar_member_is_refused(kit: Kit, tmp_path: Path) -> None:
    members = kit_.read_members(kit_.build_bundle(kit))
    refused(kit, kit_.rebuild(tmp_path / "d.bundle", [*members, members[-1]]), errors.DuplicateMember)
    # ... also when the duplicate comes before the original's turn
    refused(
        kit,
        kit_.rebuild(tmp_path / "e.bundle", [*members[:3], members[2], *members[3:]]),
        errors.DuplicateMember,
    )


# --- signatures and keys --------------------------------------------------------------------------------


def test_unsigned_bundle_is_refused(kit: Kit) -> None:
    refused(kit, kit_.build_bundle(kit, sign=False), errors.Unsigned)


def test_bundle_signed_by_unknown_key_is_refused(kit: Kit, tmp_path: Path) -> None:
    stranger = kit_.make_kit(tmp_path / "stranger")
    bundle = kit_.build_bundle(stranger)
    refused(kit, bundle, errors.UnknownSigningKey)


def test_fewer_signatures_than_threshold_is_refused(kit: Kit) -> None:
    one = next(iter(kit.vendor.private_keys("release")))
    message = refused(kit, kit_.build_bundle(kit, keyids=[one]), errors.SignatureThresholdNotMet)
    assert "1 valid of 2 required" in message


def test_same_key_signing_twice_counts_once(kit: Kit, tmp_path: Path) -> None:
    bundle = kit_.build_bundle(kit)
    members = kit_.read_members(bundle)
    first = parse_signature_list(members[1][1], what="sig")[0]
    doubled = dump_signature_list([first, first])
    tampered = kit_.rebuild(tmp_path / "t.bundle", [members[0], ("manifest.sig", doubled), *members[2:]])
    refused(kit, tampered, errors.SignatureThresholdNotMet)


def test_signature_by_revoked_release_key_never_counts(kit: Kit) -> None:
    keys = list(kit.vendor.private_keys("release"))
    bundle = kit_.build_bundle(kit, keyids=keys[:2])
    vendor.revoke_key(kit.vendor_dir, keys[0], now=NOW)
    message = refused(kit, bundle, errors.RevokedSigningKey)
    assert keys[0][:16] in message


def test_signature_made_for_a_license_cannot_sign_a_manifest(kit: Kit, tmp_path: Path) -> None:
    bundle = kit_.build_bundle(kit)
    members = kit_.read_members(bundle)
    keys = kit.vendor.private_keys("release")
    wrong_context = [sign(k, "license", members[0][1]) for k in keys.values()]
    tampered = kit_.rebuild(
        tmp_path / "t.bundle",
        [members[0], ("manifest.sig", dump_signature_list(wrong_context)), *members[2:]],
    )
    refused(kit, tampered, errors.SignatureInvalid)


def test_bundle_signed_by_rotated_key_passes_with_keyring_carried_in_bundle(kit: Kit) -> None:
    old_trust = kit.trust()
    new_key, keyring = vendor.rotate_key(kit.vendor_dir, now=NOW)
    bundle = kit_.build_bundle(
        kit,
        keyids=[new_key, *[k for k in keyring.role_keys("release") if k != new_key][:1]],
        carry_keyring=True,
    )
    result = verify_bundle_file(bundle, trust=old_trust, now=NOW, installed_version="1.2.0")
    assert result.trust.keyring.version == 2
    assert new_key in result.signed_by


def test_bundle_carrying_older_keyring_does_not_roll_trust_back(kit: Kit) -> None:
    keys = list(kit.vendor.private_keys("release"))
    bundle = kit_.build_bundle(kit, keyids=keys[:2], carry_keyring=True)  # carries keyring v1
    vendor.revoke_key(kit.vendor_dir, keys[0], now=NOW)  # the installation now trusts v2
    assert kit.trust().keyring.version == 2
    refused(kit, bundle, errors.RevokedSigningKey)


# --- release policy -------------------------------------------------------------------------------------


def test_older_version_is_refused_as_rollback(kit: Kit) -> None:
    bundle = kit_.build_bundle(kit, "1.1.0", upgrade_from=">=1.0.0")
    assert "older than installed 1.2.0" in refused(kit, bundle, errors.VersionRollback)


def test_same_version_again_is_refused(kit: Kit) -> None:
    bundle = kit_.build_bundle(kit, "1.2.0", upgrade_from=">=1.0.0")
    refused(kit, bundle, errors.SameVersion)


def test_upgrade_path_not_allowed_is_refused(kit: Kit) -> None:
    bundle = kit_.build_bundle(kit, "2.0.0", upgrade_from=">=1.9.0, <2.0.0")
    assert ">=1.9.0, <2.0.0" in refused(kit, bundle, errors.UpgradePathNotAllowed)


def test_version_comparison_is_semantic_not_textual(kit: Kit) -> None:
    bundle = kit_.build_bundle(kit, "1.10.0", upgrade_from=">=1.9.0")
    assert str(verify(kit, bundle, installed_version="1.9.3").manifest.version) == "1.10.0"  # type: ignore[attr-defined]


def test_delta_over_missing_base_is_refused(kit: Kit, tmp_path: Path) -> None:
    base = kit_.make_artifacts(tmp_path / "base", "1.2.0")
    bundle = kit_.build_bundle(kit, delta_base=base.image)
    (tmp_path / "empty").mkdir()
    refused(kit, bundle, errors.DeltaBaseMissing, base_images_dir=tmp_path / "empty")
    refused(kit, bundle, errors.DeltaBaseMissing)


def test_delta_over_different_base_is_refused(kit: Kit, tmp_path: Path) -> None:
    base = kit_.make_artifacts(tmp_path / "base", "1.2.0")
    bundle = kit_.build_bundle(kit, delta_base=base.image)
    bases = tmp_path / "bases"
    bases.mkdir()
    sha, _ = writer.file_digest(base.image)
    (bases / f"{sha}.tar").write_bytes(base.image.read_bytes()[:-1] + b"X")
    refused(kit, bundle, errors.DeltaBaseMismatch, base_images_dir=bases)


# --- container hostility --------------------------------------------------------------------------------


def test_payload_larger_than_manifest_says_is_refused_without_reading_it(kit: Kit, tmp_path: Path) -> None:
    members = kit_.read_members(kit_.build_bundle(kit))
    name, data = members[2]
    bigger = kit_.rebuild(tmp_path / "b.bundle", [*members[:2], (name, data + b"x" * 4096), *members[3:]])
    assert "(larger: not read)" in refused(kit, bigger, errors.PayloadSizeMismatch)


def test_endless_payload_is_refused_at_the_header(kit: Kit, tmp_path: Path) -> None:
    members = kit_.read_members(kit_.build_bundle(kit))
    name, _ = members[2]
    from updater.domain.tarformat import build_header

    # A header declaring 1 TiB followed by a short stream: refused before any data is read.
    endless = kit_.write_raw(
        tmp_path / "e.bundle",
        [kit_.regular(*members[0]), kit_.regular(*members[1]), build_header(name, 1 << 40)],
    )
    refused(kit, endless, errors.PayloadSizeMismatch)


def test_oversized_manifest_is_refused_without_reading_it(kit: Kit, tmp_path: Path) -> None:
    from updater.domain.tarformat import build_header

    huge = kit_.write_raw(tmp_path / "h.bundle", [build_header("manifest.json", 50 * 1024 * 1024)], end=False)
    refused(kit, huge, errors.ManifestTooLarge)


def test_truncated_bundle_is_refused(kit: Kit, tmp_path: Path) -> None:
    data = kit_.build_bundle(kit).read_bytes()
    for cut in (100, 2000, len(data) // 2, len(data) - 1100):
        truncated = tmp_path / f"t{cut}.bundle"
        truncated.write_bytes(data[:cut])
        refused(kit, truncated, errors.BundleTruncated)


def test_extra_unlisted_file_is_refused(kit: Kit, tmp_path: Path) -> None:
    members = kit_.read_members(kit_.build_bundle(kit))
    at_end = kit_.rebuild(tmp_path / "a.bundle", [*members, ("payload/extra.sh", b"#!/bin/sh\n")])
    assert "payload/extra.sh" in refused(kit, at_end, errors.UnlistedMember)
    in_middle = kit_.rebuild(tmp_path / "b.bundle", [*members[:3], ("payload/extra.sh", b"x"), *members[3:]])
    refused(kit, in_middle, errors.UnlistedMember)


def test_members_out_of_order_are_refused(kit: Kit, tmp_path: Path) -> None:
    members = kit_.read_members(kit_.build_bundle(kit))
    swapped = kit_.rebuild(tmp_path / "s.bundle", [*members[:2], members[3], members[2], *members[4:]])
    refused(kit, swapped, errors.MemberOrder)
    sig_first = kit_.rebuild(tmp_path / "f.bundle", [members[1], members[0], *members[2:]])
    refused(kit, sig_first, errors.MemberOrder)


@pytest.mark.parametrize("name", ["../etc/cron.d/evil", "payload/../../evil", "/etc/passwd", "payload/./x"])
def test_member_with_unsafe_path_is_refused(kit: Kit, tmp_path: Path, name: str) -> None:
    members = kit_.read_members(kit_.build_bundle(kit))
    info = tarfile.TarInfo(name)
    hostile = kit_.write_raw(
        tmp_path / "p.bundle", [kit_.regular(*m) for m in members[:2]] + [kit_.special(info, b"x")]
    )
    refused(kit, hostile, errors.UnsafeMemberPath)


@pytest.mark.parametrize(
    ("kind", "linkname", "words"),
    [
        (tarfile.SYMTYPE, "/etc/shadow", "symbolic link"),
        (tarfile.LNKTYPE, "payload/image.tar", "hard link"),
        (tarfile.CHRTYPE, "", "character device"),
        (tarfile.BLKTYPE, "", "block device"),
        (tarfile.FIFOTYPE, "", "FIFO"),
        (tarfile.DIRTYPE, "", "directory"),
    ],
)
def test_links_devices_and_fifos_are_refused(
    kit: Kit, tmp_path: Path, kind: bytes, linkname: str, words: str
) -> None:
    members = kit_.read_members(kit_.build_bundle(kit))
    info = tarfile.TarInfo(members[2][0])
    info.type, info.linkname = kind, linkname
    hostile = kit_.write_raw(
        tmp_path / "l.bundle", [kit_.regular(*m) for m in members[:2]] + [kit_.special(info)]
    )
    assert words in refused(kit, hostile, errors.UnsafeMemberType)


def test_pax_extended_header_is_refused(kit: Kit, tmp_path: Path) -> None:
    members = kit_.read_members(kit_.build_bundle(kit))
    info = tarfile.TarInfo(members[2][0])
    info.size = len(members[2][1])
    info.pax_headers = {"size": "99999999999"}
    pax = info.tobuf(format=tarfile.PAX_FORMAT)
    hostile = kit_.write_raw(tmp_path / "x.bundle", [kit_.regular(*m) for m in members[:2]] + [pax])
    assert "pax" in refused(kit, hostile, errors.UnsafeMemberType)


def test_compressed_bundle_is_refused_so_nothing_is_ever_decompressed(kit: Kit, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.bundle"
    with gzip.open(bomb, "wb") as out:  # 256 MiB of zeros in ~250 KiB: never inflated
        chunk = b"\0" * (1 << 20)
        for _ in range(256):
            out.write(chunk)
    assert bomb.stat().st_size < 1 << 20
    refused(kit, bomb, errors.BundleCompressed)


def test_delta_that_would_expand_beyond_the_declared_image_is_refused(kit: Kit, tmp_path: Path) -> None:
    from updater.domain import delta as delta_

    base = kit_.make_artifacts(tmp_path / "base", "1.2.0")
    target = kit_.make_artifacts(tmp_path / "target", "1.3.0")
    sha, _ = writer.file_digest(base.image)
    # A delta whose recipe repeats one literal block far past the image size the manifest declares.
    block = next(delta_.iter_blocks(target.image.open("rb")))
    literal = target.image.read_bytes()[: block.length]
    count = 1000
    bomb = delta_.HEAD.pack(delta_.MAGIC, block.length * count, bytes.fromhex(sha), count)
    bomb += delta_.ENTRY.pack(delta_.LITERAL, block.length, block.sha256) * count + literal * count
    with pytest.raises(errors.DeltaInvalid, match=r"beyond the declared image size|manifest's image is"):
        delta_.apply_delta(
            delta_.read_delta_head(io.BytesIO(bomb), delta_size=len(bomb)),
            recipe=io.BytesIO(bomb[delta_.HEAD.size :]),
            literals=io.BytesIO(literal * count),
            base=base.image.open("rb"),
            base_index={},
            out=(tmp_path / "out").open("wb"),
            expected_size=target.image.stat().st_size,
            expected_sha256=hashlib.sha256(target.image.read_bytes()).hexdigest(),
        )


def test_data_after_the_end_of_archive_is_refused(kit: Kit, tmp_path: Path) -> None:
    bundle = kit_.build_bundle(kit)
    bundle.write_bytes(bundle.read_bytes() + b"\0" * 4096 + b"smuggled")
    refused(kit, bundle, errors.TrailingData)


def test_a_nonzero_byte_in_a_members_tar_padding_is_refused(kit: Kit, tmp_path: Path) -> None:
    bundle = kit_.build_bundle(kit)
    for position, flipped in enumerate(padding_flipped(bundle, tmp_path)):
        message = refused(kit, flipped, errors.MemberPaddingNotZero)
        assert "padding" in message, (position, message)
        assert "not zero" in message, (position, message)


def test_a_bundle_without_its_whole_end_of_archive_marker_is_refused(kit: Kit, tmp_path: Path) -> None:
    data = kit_.build_bundle(kit).read_bytes()
    assert data.endswith(b"\0" * 1024)
    for cut in (1024, 600, 512, 1):
        cut_short = tmp_path / f"e{cut}.bundle"
        cut_short.write_bytes(data[:-cut])
        message = refused(kit, cut_short, errors.EndOfArchiveIncomplete)
        assert "end-of-archive marker" in message, (cut, message)


def test_anything_after_the_end_of_archive_marker_is_refused_even_zeros(kit: Kit, tmp_path: Path) -> None:
    bundle = kit_.build_bundle(kit)
    bundle.write_bytes(bundle.read_bytes() + b"\0" * 512)
    refused(kit, bundle, errors.TrailingData)


def test_a_member_header_changed_with_its_checksum_fixed_is_refused(kit: Kit, tmp_path: Path) -> None:
    for name in ("manifest.json", "last"):
        message = refused(
            kit, header_changed(kit_.build_bundle(kit), tmp_path, name), errors.MemberHeaderNotCanonical
        )
        assert "tar header" in message, message


def header_changed(bundle: Path, tmp_path: Path, which: str) -> Path:
    """A copy of ``bundle`` whose member header (the first, or the last member's) has another mtime and
    owner name, its checksum recomputed: a header any tar reader accepts, with the member data unchanged."""
    data = bytearray(bundle.read_bytes())
    members = kit_.read_members(bundle)
    at = 0 if which == "manifest.json" else len(data) - 1024 - padded(len(members[-1][1])) - 512
    header = data[at : at + 512]
    header[136:148] = b"%011o\0" % 1_700_000_000  # mtime
    header[265:270] = b"mallo"  # uname
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header)
    data[at : at + 512] = header
    changed = tmp_path / f"header-{which}.bundle"
    changed.write_bytes(bytes(data))
    return changed


def padding_flipped(bundle: Path, tmp_path: Path) -> list[Path]:
    """Copies of ``bundle`` with one bit flipped in a tar padding: after the manifest, after the last one."""
    data = bundle.read_bytes()
    members = kit_.read_members(bundle)
    assert len(members[0][1]) % 512, "the manifest must end inside a block"
    assert len(members[-1][1]) % 512, "the last member must end inside a block"
    flipped = []
    for name, at in (("manifest", 512 + len(members[0][1])), ("last", len(data) - 1024 - 1)):
        changed = bytearray(data)
        changed[at] ^= 0x01
        flipped.append(tmp_path / f"padding-{name}.bundle")
        flipped[-1].write_bytes(bytes(changed))
    return flipped


# --- license checks through the bundle ------------------------------------------------------------------


def test_license_for_another_channel_is_refused(kit: Kit) -> None:
    lic = kit_.issue(kit, channels=("lts",))
    refused(kit, kit_.build_bundle(kit), errors.ChannelNotEntitled, license_document=lic.document)


def test_release_after_updates_until_is_refused(kit: Kit) -> None:
    lic = kit_.issue(kit, updates_until=date(2026, 10, 31), now=EARLIER)
    message = refused(kit, kit_.build_bundle(kit), errors.UpdatesPeriodEnded, license_document=lic.document)
    assert "2026-11-01" in message


def test_node_count_over_entitlement_is_refused(kit: Kit) -> None:
    lic = kit_.issue(kit, nodes=3)
    refused(
        kit, kit_.build_bundle(kit), errors.NodeCountExceeded, license_document=lic.document, node_count=4
    )


def test_expired_license_is_refused(kit: Kit) -> None:
    lic = kit_.issue(kit, expires=date(2026, 11, 20), updates_until=date(2026, 11, 20), now=EARLIER)
    refused(kit, kit_.build_bundle(kit), errors.LicenseExpired, license_document=lic.document)


def test_license_signed_by_the_wrong_key_is_refused(kit: Kit, tmp_path: Path) -> None:
    stranger = kit_.make_kit(tmp_path / "stranger")
    lic = kit_.issue(stranger)
    refused(kit, kit_.build_bundle(kit), errors.LicenseSignatureInvalid, license_document=lic.document)
