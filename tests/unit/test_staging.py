"""Staging is atomic: a verified release appears at staging_root/<version> whole, or nothing appears at all.

The free-space and mid-way ENOSPC cases run on small tmpfs filesystems the tests mount themselves (as root).
"""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import json
import lzma
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pytest

from tests.unit import bundle_kit as kit_
from tests.unit.bundle_kit import NOW, Kit
from tests.unit.test_aead import split
from tests.unit.test_bundle_verify import EARLIER, _resign, header_changed, padding_flipped
from updater.domain import errors
from updater.domain.signing import dump_signature_list, parse_signature_list, sign
from updater.domain.tarformat import build_header
from updater.services.bundles.staging import StagedRelease, verify_and_stage
from updater.services.vendor import keys as vendor
from updater.services.vendor import writer


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return kit_.make_kit(tmp_path)


@pytest.fixture
def staging_root(tmp_path: Path) -> Path:
    root = tmp_path / "staging"
    root.mkdir()
    return root


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """Mount a tmpfs the test can fill: options are set per test through remount."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def stage(kit: Kit, bundle: Path, root: Path, **kwargs: object) -> StagedRelease:
    lic = kwargs.pop("lic", None) or kit_.issue(kit, license_id=f"lic-{os.urandom(4).hex()}")
    defaults: dict[str, object] = {
        "trust": kit.trust(),
        "now": NOW,
        "license_document": lic.document,  # type: ignore[attr-defined]
        "entitlement_key": lic.key,  # type: ignore[attr-defined]
        "installed_version": "1.2.0",
        "node_count": 3,
        "base_images_dir": None,
        "staging_root": root,
    }
    defaults.update(kwargs)
    return verify_and_stage(bundle, **defaults)  # type: ignore[arg-type]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_nothing_left(root: Path) -> None:
    assert list(root.iterdir()) == [], f"staging left {sorted(p.name for p in root.iterdir())}"


def test_valid_bundle_is_staged_whole_with_every_file_intact(
    kit: Kit, staging_root: Path, tmp_path: Path
) -> None:
    artifacts = kit_.make_artifacts(tmp_path / "a", "1.3.0")
    bundle = kit_.build_bundle(kit, artifacts=artifacts)
    staged = stage(kit, bundle, staging_root)
    assert staged.path == staging_root / "1.3.0"
    assert [p.name for p in staging_root.iterdir()] == ["1.3.0"], "no temporary directory may remain"
    assert sha(staged.image) == sha(artifacts.image)
    assert sha(staged.collection) == sha(artifacts.collection)
    assert sha(staged.service_package) == sha(artifacts.service)
    assert staged.notes.read_text() == artifacts.notes.read_text()
    assert (staged.path / "manifest.json").read_bytes() == staged.verified.manifest_bytes
    assert all(not p.is_symlink() for p in staged.path.rglob("*"))
    assert staged.path.stat().st_mode & 0o777 == 0o700


def test_delta_bundle_is_staged_with_the_exact_image_rebuilt(
    kit: Kit, staging_root: Path, tmp_path: Path
) -> None:
    base = kit_.make_artifacts(tmp_path / "base", "1.2.0")
    target = kit_.make_artifacts(tmp_path / "target", "1.3.0")
    bases = tmp_path / "bases"
    bases.mkdir()
    base_sha, _ = writer.file_digest(base.image)
    os.link(base.image, bases / f"{base_sha}.tar")
    bundle = kit_.build_bundle(kit, artifacts=target, delta_base=base.image)
    staged = stage(kit, bundle, staging_root, base_images_dir=bases)
    assert staged.image.read_bytes() == target.image.read_bytes()
    assert sha(staged.image) == staged.verified.manifest.image.sha256


def test_encrypted_bundle_is_decrypted_while_staging(kit: Kit, staging_root: Path, tmp_path: Path) -> None:
    lic = kit_.issue(kit)
    artifacts = kit_.make_artifacts(tmp_path / "a", "1.3.0")
    plain = kit_.build_bundle(kit, artifacts=artifacts)
    encrypted = tmp_path / "corral-1.3.0.bundle.enc"
    writer.encrypt_file(
        plain, encrypted, license_id=lic.license.license_id, entitlement_key=lic.key, chunk_size=4096
    )
    staged = stage(kit, encrypted, staging_root, lic=lic)
    assert staged.verified.encrypted_to == lic.license.license_id
    assert sha(staged.image) == sha(artifacts.image)
    assert [p.name for p in staging_root.iterdir()] == ["1.3.0"], "no decrypted temporary may remain"


def test_wrong_entitlement_key_stages_nothing(kit: Kit, staging_root: Path, tmp_path: Path) -> None:
    lic, other = kit_.issue(kit), kit_.issue(kit)
    encrypted = tmp_path / "enc.bundle"
    writer.encrypt_file(
        kit_.build_bundle(kit), encrypted, license_id=lic.license.license_id, entitlement_key=lic.key
    )
    with pytest.raises(errors.WrongEntitlementKey):
        stage(kit, encrypted, staging_root, lic=lic, entitlement_key=other.key)
    assert_nothing_left(staging_root)


@pytest.mark.parametrize("corruption", ["last-payload-byte", "truncated-tail", "extra-member"])
def test_bundle_failing_late_leaves_nothing_behind(kit: Kit, staging_root: Path, corruption: str) -> None:
    bundle = kit_.build_bundle(kit)
    members = kit_.read_members(bundle)
    if corruption == "last-payload-byte":
        data = bytearray(bundle.read_bytes())
        offset = bytes(data).index(members[-1][1])
        data[offset] ^= 0xFF
        bundle.write_bytes(bytes(data))
        expected: type[errors.VerificationError] = errors.PayloadHashMismatch
    elif corruption == "truncated-tail":
        bundle.write_bytes(bundle.read_bytes()[:-1100])
        expected = errors.BundleTruncated
    else:
        kit_.rebuild(bundle, [*members, ("payload/zz-extra", b"x")])
        expected = errors.UnlistedMember
    with pytest.raises(expected):
        stage(kit, bundle, staging_root)
    assert_nothing_left(staging_root)


# --- every hostile bundle of test_bundle_verify.py (and test_aead.py's stream attacks), through staging -----


@dataclass
class Hostile:
    """A hostile bundle, the check that must refuse it (and a fragment of its message), how to stage it, and
    whether the refusal comes only after staging began writing (so the clean-up itself is exercised)."""

    bundle: Path
    error: type[errors.VerificationError]
    fragment: str = ""
    options: dict[str, object] = field(default_factory=dict)
    late: bool = False


HOSTILE: dict[str, Callable[[Kit, Path], Hostile]] = {}


def hostile(*ids: str, **variant: object) -> Callable[[Callable[..., Hostile]], Callable[..., Hostile]]:
    def register(build: Callable[..., Hostile]) -> Callable[..., Hostile]:
        for case_id in ids:
            HOSTILE[case_id] = functools.partial(build, **variant)
        return build

    return register


def _members(kit: Kit) -> list[tuple[str, bytes]]:
    return kit_.read_members(kit_.build_bundle(kit))


@hostile("tampered-payload-byte")
def _tampered_payload_byte(kit: Kit, tmp: Path) -> Hostile:
    bundle = kit_.build_bundle(kit)
    data = bytearray(bundle.read_bytes())
    name, payload = kit_.read_members(bundle)[2]
    data[bytes(data).index(payload) + 10] ^= 0x01
    bundle.write_bytes(bytes(data))
    return Hostile(bundle, errors.PayloadHashMismatch, name, late=True)


@hostile("tampered-manifest")
def _tampered_manifest(kit: Kit, tmp: Path) -> Hostile:
    members = _members(kit)
    manifest = members[0][1].replace(b'"channel":"stable"', b'"channel":"stabl3"')
    assert manifest != members[0][1]
    bundle = kit_.rebuild(tmp / "t.bundle", [("manifest.json", manifest), *members[1:]])
    return Hostile(bundle, errors.SignatureInvalid, "tampered or re-serialised")


@hostile("manifest-reserialised")
def _manifest_reserialised(kit: Kit, tmp: Path) -> Hostile:
    members = _members(kit)
    same_content = json.dumps(json.loads(members[0][1]), indent=1).encode()
    bundle = kit_.rebuild(tmp / "t.bundle", [("manifest.json", same_content), *members[1:]])
    return Hostile(bundle, errors.SignatureInvalid)


@hostile("manifest-duplicate-json-key-signed")
def _manifest_duplicate_key(kit: Kit, tmp: Path) -> Hostile:
    members = _members(kit)
    manifest = members[0][1].replace(b'"channel":"stable"', b'"channel":"stable","channel":"edge"')
    return Hostile(_resign(kit, tmp / "d.bundle", manifest, members[2:]), errors.ManifestDuplicateKey)


@hostile("duplicate-tar-member-at-end", early=False)
@hostile("duplicate-tar-member-before-original-turn", early=True)
def _duplicate_member(kit: Kit, tmp: Path, *, early: bool) -> Hostile:
    m = _members(kit)
    members = [*m[:3], m[2], *m[3:]] if early else [*m, m[-1]]
    return Hostile(kit_.rebuild(tmp / "d.bundle", members), errors.DuplicateMember, late=True)


@hostile("unsigned")
def _unsigned(kit: Kit, tmp: Path) -> Hostile:
    return Hostile(kit_.build_bundle(kit, sign=False), errors.Unsigned)


@hostile("signed-by-unknown-key")
def _unknown_key(kit: Kit, tmp: Path) -> Hostile:
    return Hostile(kit_.build_bundle(kit_.make_kit(tmp / "stranger")), errors.UnknownSigningKey)


@hostile("below-signature-threshold")
def _below_threshold(kit: Kit, tmp: Path) -> Hostile:
    one = next(iter(kit.vendor.private_keys("release")))
    bundle = kit_.build_bundle(kit, keyids=[one])
    return Hostile(bundle, errors.SignatureThresholdNotMet, "1 valid of 2 required")


@hostile("same-key-signing-twice")
def _same_key_twice(kit: Kit, tmp: Path) -> Hostile:
    members = _members(kit)
    first = parse_signature_list(members[1][1], what="sig")[0]
    doubled = dump_signature_list([first, first])
    bundle = kit_.rebuild(tmp / "t.bundle", [members[0], ("manifest.sig", doubled), *members[2:]])
    return Hostile(bundle, errors.SignatureThresholdNotMet)


@hostile("signed-by-revoked-key", carry_keyring=False)
@hostile("carrying-older-keyring-with-revoked-key", carry_keyring=True)
def _revoked_key(kit: Kit, tmp: Path, *, carry_keyring: bool) -> Hostile:
    keys = list(kit.vendor.private_keys("release"))
    bundle = kit_.build_bundle(kit, keyids=keys[:2], carry_keyring=carry_keyring)
    vendor.revoke_key(kit.vendor_dir, keys[0], now=NOW)
    return Hostile(bundle, errors.RevokedSigningKey, keys[0][:16])


@hostile("signature-made-for-a-license")
def _license_context_signature(kit: Kit, tmp: Path) -> Hostile:
    members = _members(kit)
    wrong = [sign(k, "license", members[0][1]) for k in kit.vendor.private_keys("release").values()]
    bundle = kit_.rebuild(
        tmp / "t.bundle", [members[0], ("manifest.sig", dump_signature_list(wrong)), *members[2:]]
    )
    return Hostile(bundle, errors.SignatureInvalid)


@hostile("older-version", version="1.1.0", upgrade_from=">=1.0.0", error=errors.VersionRollback)
@hostile("same-version", version="1.2.0", upgrade_from=">=1.0.0", error=errors.SameVersion)
@hostile(
    "upgrade-path-not-allowed",
    version="2.0.0",
    upgrade_from=">=1.9.0, <2.0.0",
    error=errors.UpgradePathNotAllowed,
)
def _release_policy(
    kit: Kit, tmp: Path, *, version: str, upgrade_from: str, error: type[errors.VerificationError]
) -> Hostile:
    fragment = {
        errors.VersionRollback: "older than installed 1.2.0",
        errors.UpgradePathNotAllowed: upgrade_from,
    }
    bundle = kit_.build_bundle(kit, version, upgrade_from=upgrade_from)
    return Hostile(bundle, error, fragment.get(error, ""))


@hostile("delta-base-missing-no-base-dir", bases="none")
@hostile("delta-base-missing-from-base-dir", bases="empty")
@hostile("delta-base-different", bases="different")
def _delta_base(kit: Kit, tmp: Path, *, bases: str) -> Hostile:
    base = kit_.make_artifacts(tmp / "base", "1.2.0")
    bundle = kit_.build_bundle(kit, delta_base=base.image)
    if bases == "none":
        return Hostile(bundle, errors.DeltaBaseMissing)
    directory = tmp / "bases"
    directory.mkdir()
    if bases == "empty":
        return Hostile(bundle, errors.DeltaBaseMissing, options={"base_images_dir": directory})
    sha, _ = writer.file_digest(base.image)
    (directory / f"{sha}.tar").write_bytes(base.image.read_bytes()[:-1] + b"X")
    return Hostile(bundle, errors.DeltaBaseMismatch, options={"base_images_dir": directory})


@hostile("payload-larger-than-manifest-says")
def _payload_larger(kit: Kit, tmp: Path) -> Hostile:
    members = _members(kit)
    name, data = members[2]
    bigger = kit_.rebuild(tmp / "b.bundle", [*members[:2], (name, data + b"x" * 4096), *members[3:]])
    return Hostile(bigger, errors.PayloadSizeMismatch, "(larger: not read)", late=True)


@hostile("endless-payload")
def _endless_payload(kit: Kit, tmp: Path) -> Hostile:
    members = _members(kit)
    endless = kit_.write_raw(
        tmp / "e.bundle",
        [kit_.regular(*members[0]), kit_.regular(*members[1]), build_header(members[2][0], 1 << 40)],
    )
    return Hostile(endless, errors.PayloadSizeMismatch, late=True)


@hostile("oversized-manifest")
def _oversized_manifest(kit: Kit, tmp: Path) -> Hostile:
    huge = kit_.write_raw(tmp / "h.bundle", [build_header("manifest.json", 50 * 1024 * 1024)], end=False)
    return Hostile(huge, errors.ManifestTooLarge)


@hostile("truncated-at-100", cut="100")
@hostile("truncated-at-2000", cut="2000")
@hostile("truncated-at-half", cut="half")
@hostile("truncated-1100-before-end", cut="tail")
def _truncated(kit: Kit, tmp: Path, *, cut: str) -> Hostile:
    data = kit_.build_bundle(kit).read_bytes()
    at = {"half": len(data) // 2, "tail": len(data) - 1100}.get(cut) or int(cut)
    truncated = tmp / "t.bundle"
    truncated.write_bytes(data[:at])
    return Hostile(truncated, errors.BundleTruncated, late=cut in {"half", "tail"})


@hostile("extra-unlisted-file-at-end", at_end=True)
@hostile("extra-unlisted-file-in-middle", at_end=False)
def _extra_unlisted(kit: Kit, tmp: Path, *, at_end: bool) -> Hostile:
    m = _members(kit)
    extra = ("payload/extra.sh", b"#!/bin/sh\n")
    bundle = kit_.rebuild(tmp / "x.bundle", [*m, extra] if at_end else [*m[:3], extra, *m[3:]])
    return Hostile(bundle, errors.UnlistedMember, "payload/extra.sh", late=True)


@hostile("payload-members-swapped", swap="payload")
@hostile("signature-before-manifest", swap="head")
def _out_of_order(kit: Kit, tmp: Path, *, swap: str) -> Hostile:
    m = _members(kit)
    members = [*m[:2], m[3], m[2], *m[4:]] if swap == "payload" else [m[1], m[0], *m[2:]]
    return Hostile(kit_.rebuild(tmp / "s.bundle", members), errors.MemberOrder, late=swap == "payload")


@hostile("unsafe-path-dotdot", name="../etc/cron.d/evil")
@hostile("unsafe-path-dotdot-inside-payload", name="payload/../../evil")
@hostile("unsafe-path-absolute", name="/etc/passwd")
@hostile("unsafe-path-dot-segment", name="payload/./x")
def _unsafe_path(kit: Kit, tmp: Path, *, name: str) -> Hostile:
    members = _members(kit)
    blocks = [kit_.regular(*m) for m in members[:2]] + [kit_.special(tarfile.TarInfo(name), b"x")]
    return Hostile(kit_.write_raw(tmp / "p.bundle", blocks), errors.UnsafeMemberPath)


@hostile("symlink-member", kind=tarfile.SYMTYPE, linkname="/etc/shadow", words="symbolic link")
@hostile("hard-link-member", kind=tarfile.LNKTYPE, linkname="payload/image.tar", words="hard link")
@hostile("character-device-member", kind=tarfile.CHRTYPE, linkname="", words="character device")
@hostile("block-device-member", kind=tarfile.BLKTYPE, linkname="", words="block device")
@hostile("fifo-member", kind=tarfile.FIFOTYPE, linkname="", words="FIFO")
@hostile("directory-member", kind=tarfile.DIRTYPE, linkname="", words="directory")
def _special_member(kit: Kit, tmp: Path, *, kind: bytes, linkname: str, words: str) -> Hostile:
    members = _members(kit)
    info = tarfile.TarInfo(members[2][0])
    info.type, info.linkname = kind, linkname
    blocks = [kit_.regular(*m) for m in members[:2]] + [kit_.special(info)]
    return Hostile(kit_.write_raw(tmp / "l.bundle", blocks), errors.UnsafeMemberType, words)


@hostile("pax-extended-header")
def _pax_header(kit: Kit, tmp: Path) -> Hostile:
    members = _members(kit)
    info = tarfile.TarInfo(members[2][0])
    info.size = len(members[2][1])
    info.pax_headers = {"size": "99999999999"}
    blocks = [kit_.regular(*m) for m in members[:2]] + [info.tobuf(format=tarfile.PAX_FORMAT)]
    return Hostile(kit_.write_raw(tmp / "x.bundle", blocks), errors.UnsafeMemberType, "pax")


@hostile("gzip-compressed", compress=gzip.compress, kind="gzip")
@hostile("bzip2-compressed", compress=bz2.compress, kind="bzip2")
@hostile("xz-compressed", compress=lzma.compress, kind="xz")
def _compressed(kit: Kit, tmp: Path, *, compress: Callable[[bytes], bytes], kind: str) -> Hostile:
    packed = tmp / "c.bundle"
    packed.write_bytes(compress(kit_.build_bundle(kit).read_bytes()))
    return Hostile(packed, errors.BundleCompressed, f"{kind}-compressed")


@hostile("data-after-end-of-archive")
def _trailing_data(kit: Kit, tmp: Path) -> Hostile:
    bundle = kit_.build_bundle(kit)
    bundle.write_bytes(bundle.read_bytes() + b"\0" * 4096 + b"smuggled")
    return Hostile(bundle, errors.TrailingData, late=True)


@hostile("nonzero-padding-after-the-last-member")
def _padding_flipped(kit: Kit, tmp: Path) -> Hostile:
    flipped = padding_flipped(kit_.build_bundle(kit), tmp)[-1]
    return Hostile(flipped, errors.MemberPaddingNotZero, "padding", late=True)


@hostile("last-member-header-changed-checksum-fixed")
def _header_changed(kit: Kit, tmp: Path) -> Hostile:
    changed = header_changed(kit_.build_bundle(kit), tmp, "last")
    return Hostile(changed, errors.MemberHeaderNotCanonical, "tar header", late=True)


@hostile("end-of-archive-marker-cut-off", cut=1024)
@hostile("end-of-archive-marker-cut-short", cut=512)
def _end_of_archive_cut(kit: Kit, tmp: Path, *, cut: int) -> Hostile:
    bundle = kit_.build_bundle(kit)
    bundle.write_bytes(bundle.read_bytes()[:-cut])
    return Hostile(bundle, errors.EndOfArchiveIncomplete, "end-of-archive marker", late=True)


@hostile("license-signed-by-wrong-key", license="stranger")
@hostile("license-expired", license="expired")
@hostile("license-channel-not-entitled", license="channel")
@hostile("release-after-updates-until", license="updates-until")
@hostile("node-count-over-entitlement", license="nodes")
def _license(kit: Kit, tmp: Path, *, license: str) -> Hostile:
    bundle = kit_.build_bundle(kit)
    if license == "stranger":
        lic = kit_.issue(kit_.make_kit(tmp / "stranger"))
        return Hostile(bundle, errors.LicenseSignatureInvalid, options={"lic": lic})
    if license == "expired":
        lic = kit_.issue(kit, expires=date(2026, 11, 20), updates_until=date(2026, 11, 20), now=EARLIER)
        return Hostile(bundle, errors.LicenseExpired, options={"lic": lic})
    if license == "channel":
        return Hostile(bundle, errors.ChannelNotEntitled, options={"lic": kit_.issue(kit, channels=("lts",))})
    if license == "updates-until":
        lic = kit_.issue(kit, updates_until=date(2026, 10, 31), now=EARLIER)
        return Hostile(bundle, errors.UpdatesPeriodEnded, "2026-11-01", options={"lic": lic})
    lic = kit_.issue(kit, nodes=3)
    return Hostile(bundle, errors.NodeCountExceeded, options={"lic": lic, "node_count": 4})


ENCRYPTED_CHUNK = 4096  # small chunks, so the attacked chunk lies inside the payload


@hostile("encrypted-dropped-chunk", attack="drop")
@hostile("encrypted-reordered-chunks", attack="reorder")
@hostile("encrypted-truncated-at-chunk-boundary", attack="truncate")
@hostile("encrypted-wrong-entitlement-key", attack="wrong-key")
@hostile("encrypted-to-another-license", attack="other-license")
@hostile("encrypted-without-entitlement-key", attack="no-key")
def _encrypted(kit: Kit, tmp: Path, *, attack: str) -> Hostile:
    lic = kit_.issue(kit, license_id=f"lic-{os.urandom(4).hex()}")
    encrypted = tmp / "enc.bundle"
    writer.encrypt_file(
        kit_.build_bundle(kit),
        encrypted,
        license_id=lic.license.license_id,
        entitlement_key=lic.key,
        chunk_size=ENCRYPTED_CHUNK,
    )
    header, chunks = split(encrypted.read_bytes(), ENCRYPTED_CHUNK)
    middle = len(chunks) // 2
    assert middle >= 4, "the attacked chunk must lie well inside the payload"
    if attack in {"drop", "reorder", "truncate"}:
        if attack == "drop":
            chunks = chunks[:middle] + chunks[middle + 1 :]
        elif attack == "reorder":
            chunks[middle], chunks[middle + 1] = chunks[middle + 1], chunks[middle]
        else:
            chunks = chunks[:middle]
        encrypted.write_bytes(header + b"".join(chunks))
        if attack == "truncate":
            return Hostile(
                encrypted, errors.EncryptedTruncated, "without its final chunk", {"lic": lic}, True
            )
        return Hostile(encrypted, errors.ChunkAuthenticationFailed, options={"lic": lic}, late=True)
    if attack == "wrong-key":
        options: dict[str, object] = {"lic": lic, "entitlement_key": kit_.issue(kit).key}
        return Hostile(encrypted, errors.WrongEntitlementKey, options=options)
    if attack == "other-license":
        other = kit_.issue(kit, license_id=f"lic-{os.urandom(4).hex()}")
        fragment = f"not {other.license.license_id}"
        return Hostile(encrypted, errors.LicenseMismatch, fragment, options={"lic": other})
    return Hostile(encrypted, errors.EncryptionRequired, options={"lic": lic, "entitlement_key": None})


@pytest.mark.parametrize("case", list(HOSTILE))
def test_every_hostile_bundle_is_refused_with_its_reason_and_stages_nothing(
    kit: Kit, staging_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """Each refusal test_bundle_verify.py specifies verify-only, now through the real verify_and_stage."""
    built = HOSTILE[case](kit, tmp_path)
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # anything written to "the" temp dir lands here
    begun: list[str] = []
    mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: object, **kwargs: object) -> str:
        begun.append(mkdtemp(*args, **kwargs))  # type: ignore[call-overload]
        return begun[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    with pytest.raises(errors.VerificationError) as caught:
        stage(kit, built.bundle, staging_root, **built.options)
    refusal = caught.value
    assert type(refusal) is built.error, f"expected {built.error.check}, got {refusal}"
    assert built.fragment in refusal.message
    assert str(refusal).startswith(f"{built.error.check}: ")
    if built.late:
        assert begun, "this bundle should be refused only after staging began writing"
    assert_nothing_left(staging_root)
    assert_nothing_left(scratch)


def test_not_enough_free_space_is_refused_before_writing(kit: Kit, tiny_fs: Path) -> None:
    bundle = kit_.build_bundle(kit)
    with pytest.raises(errors.NotEnoughSpace) as caught:
        stage(kit, bundle, tiny_fs)
    message = str(caught.value)
    assert f"not enough free space on {tiny_fs}: need " in message
    assert ", have " in message
    assert_nothing_left(tiny_fs)


def test_disk_filling_up_mid_way_leaves_nothing_behind(kit: Kit, tiny_fs: Path) -> None:
    bundle = kit_.build_bundle(kit)
    # Enough bytes for the space check, but only a few inodes: the 2nd payload file hits ENOSPC mid-way.
    subprocess.run(["mount", "-o", "remount,size=64m,nr_inodes=7", str(tiny_fs)], check=True)
    with pytest.raises(errors.StagingWriteFailed) as caught:
        stage(kit, bundle, tiny_fs, space_margin=0)
    assert "no space left" in str(caught.value)
    assert_nothing_left(tiny_fs)
    # ... and with room for everything the same bundle stages fine on the same filesystem.
    subprocess.run(["mount", "-o", "remount,nr_inodes=64", str(tiny_fs)], check=True)
    assert stage(kit, bundle, tiny_fs, space_margin=0).path == tiny_fs / "1.3.0"


def test_already_staged_version_is_refused_and_left_untouched(kit: Kit, staging_root: Path) -> None:
    bundle = kit_.build_bundle(kit)
    first = stage(kit, bundle, staging_root)
    before = sha(first.image)
    with pytest.raises(errors.AlreadyStaged):
        stage(kit, bundle, staging_root)
    assert sha(first.image) == before
    assert [p.name for p in staging_root.iterdir()] == ["1.3.0"]


def test_license_failure_stages_nothing(kit: Kit, staging_root: Path) -> None:
    lic = kit_.issue(kit, nodes=2)
    with pytest.raises(errors.NodeCountExceeded):
        stage(kit, kit_.build_bundle(kit), staging_root, lic=lic, node_count=3)
    assert_nothing_left(staging_root)


def test_concurrent_imports_of_one_version_stage_it_once(
    kit: Kit, staging_root: Path, tmp_path: Path
) -> None:
    import threading

    image = kit_.write_image_tar(
        tmp_path / "big.tar",
        {f"f{i}": os.urandom(1 << 20) for i in range(12)} | {"etc/corral-release": b"1.3.0"},
    )
    bundle = kit_.build_bundle(kit, artifacts=kit_.make_artifacts(tmp_path / "a", "1.3.0", image=image))
    lic = kit_.issue(kit)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt() -> None:
        barrier.wait()
        try:
            stage(kit, bundle, staging_root, lic=lic)
            outcomes.append("staged")
        except errors.AlreadyStaged:
            outcomes.append("already-staged")

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["already-staged", "staged"]
    assert [p.name for p in staging_root.iterdir()] == ["1.3.0"]
    assert sha(staging_root / "1.3.0" / "image.tar") == sha(image)
