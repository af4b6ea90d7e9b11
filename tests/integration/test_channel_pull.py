"""Pulling a release from the real update server over HTTPS: what is staged, and every way it is refused.

Attacks on the channel are played the way an attacker who controls the server's files (or the network path
behind TLS termination) would: by changing what the running server serves, on disk.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from tests.integration.conftest import UpdateServer, Vendor
from updater.domain.errors import UpgradePathNotAllowed
from updater.domain.semver import parse_version
from updater.server.config import ServerHome
from updater.services.bundles import reader
from updater.services.channel import client as ch
from updater.services.channel.client import ChannelClient, pull_and_stage
from updater.services.vendor import keys as vendor_keys
from updater.services.vendor import writer

MIB = 1024 * 1024


class Site:
    """One customer installation: its license, trust, channel client and directories."""

    def __init__(
        self, server: UpdateServer, vendor: Vendor, root: Path, license_id: str, **lic: object
    ) -> None:
        self.license_file, self.key_file = vendor.issue_license(license_id, channels=["stable"], **lic)  # type: ignore[arg-type]
        server.add_license(self.license_file, self.key_file)
        self.vendor = vendor
        self.client: ChannelClient = server.client(self.license_file, self.key_file, "stable", root / "state")
        self.downloads = root / "downloads"
        self.staging = root / "staging"
        self.staging.mkdir(parents=True)
        self.base_images = root / "base-images"
        self.base_images.mkdir()
        self.trust_dir = root / "trust"  # what corral-updater init writes
        self.trust_dir.mkdir(mode=0o700)
        (self.trust_dir / "trust-root.json").write_bytes(vendor.trust_root.read_bytes())
        (self.trust_dir / "keyring.json").write_bytes(vendor.keyring.read_bytes())
        (self.trust_dir / "license.json").write_bytes(self.license_file.read_bytes())
        (self.trust_dir / "entitlement-key").write_bytes(self.key_file.read_bytes())

    def pull(self, installed: str = "1.0.0", version: str | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
        return pull_and_stage(
            self.client,
            installed_version=parse_version(installed),
            version=parse_version(version) if version else None,
            download_dir=self.downloads,
            trust_dir=self.trust_dir,
            node_count=3,
            base_images_dir=self.base_images,
            staging_root=self.staging,
            **kwargs,  # type: ignore[arg-type]
        )

    def staged(self) -> list[str]:
        return sorted(p.name for p in self.staging.iterdir())


def carry_rotated_keyring(vendor: Vendor, bundle: Path, scratch: Path) -> bytes:
    """Make ``bundle`` carry the keyring the vendor publishes after rotating in a new release key (as a
    release after a rotation does); return that keyring. The rotation happens in a copy of the vendor's
    directory so the session's vendor, and every other test's installation, keep trusting version 1."""
    copy = scratch / "vendor-after-rotation"
    shutil.copytree(vendor.directory, copy)
    _new_key, keyring = vendor_keys.rotate_key(copy, now=dt.datetime.now(dt.UTC))
    assert keyring.version > vendor.trust().keyring.version
    head = reader.read_head(bundle)
    writer.rewrite_head(bundle, head.signatures, keyring.envelope)  # signed by keys both keyrings hold
    return keyring.envelope


@pytest.fixture
def server(make_server) -> UpdateServer:  # type: ignore[no-untyped-def]
    return make_server(channels=("stable",))  # type: ignore[no-any-return]


@pytest.fixture
def site(server: UpdateServer, vendor: Vendor, tmp_path: Path) -> Site:
    return Site(server, vendor, tmp_path / "site", "lic-site")


@pytest.fixture(scope="module")
def base_image(vendor: Vendor) -> Path:
    return vendor.image("base-1.0.0.tar", 4 * MIB)


@pytest.fixture(scope="module")
def bundle_110(vendor: Vendor, base_image: Path) -> Path:
    return vendor.build_bundle("1.1.0", image=vendor.image("image-1.1.0.tar", 4 * MIB, like=base_image))


def publish(server: UpdateServer, bundle: Path) -> None:
    result = server.cli("publish", str(bundle))
    assert "published" in result.stdout


def served_file(server: UpdateServer, bundle: Path) -> Path:
    (path,) = server.targets_dir("stable").glob(f"*.{bundle.name}")
    return path


def test_a_published_whole_bundle_is_pulled_verified_and_staged(
    server: UpdateServer, site: Site, bundle_110: Path
) -> None:
    publish(server, bundle_110)
    seen: list[tuple[int, int]] = []
    staged = site.pull(progress=lambda done, total: seen.append((done, total)))
    assert str(staged.version) == "1.1.0"
    assert staged.image.read_bytes() == (site.vendor.work / "images" / "image-1.1.0.tar").read_bytes()
    assert "payload" in staged.verified.checks
    assert "license-entitlement" in staged.verified.checks
    assert site.staged() == ["1.1.0"]
    assert seen[-1] == (bundle_110.stat().st_size, bundle_110.stat().st_size)
    assert list(site.downloads.iterdir()) == []  # the downloaded file is gone once staged


def test_a_published_delta_bundle_is_pulled_and_rebuilt_over_the_installed_base(
    server: UpdateServer, site: Site, vendor: Vendor, base_image: Path
) -> None:
    image = vendor.image("image-1.2.0.tar", 4 * MIB, like=base_image)
    delta = vendor.build_bundle("1.2.0", image=image, delta_base=base_image)
    publish(server, delta)
    assert delta.stat().st_size < image.stat().st_size
    base_sha = hashlib.sha256(base_image.read_bytes()).hexdigest()
    shutil.copy(base_image, site.base_images / f"{base_sha}.tar")
    site.client.refresh()
    (release,) = site.client.releases()
    assert release.delta_base_sha256 == base_sha
    staged = site.pull()
    assert staged.image.read_bytes() == image.read_bytes()


def test_a_pulled_bundle_carrying_a_rotated_keyring_leaves_the_installation_trusting_it(
    server: UpdateServer, site: Site, vendor: Vendor, base_image: Path, tmp_path: Path
) -> None:
    bundle = vendor.build_bundle("1.7.0", image=vendor.image("image-1.7.0.tar", MIB, like=base_image))
    rotated = carry_rotated_keyring(vendor, bundle, tmp_path)
    publish(server, bundle)
    installed = site.trust_dir / "keyring.json"
    assert installed.read_bytes() == vendor.keyring.read_bytes()

    staged = site.pull(version="1.7.0")

    assert staged.verified.trust.keyring.envelope == rotated
    assert installed.read_bytes() == rotated  # the next bundle may be signed by the new key alone
    assert sorted(p.name for p in site.trust_dir.iterdir()) == [
        "entitlement-key", "keyring.json", "license.json", "trust-root.json",
    ]  # fmt: skip


def test_a_pulled_bundle_carrying_a_rotated_keyring_that_fails_a_check_leaves_the_keyring_alone(
    server: UpdateServer, site: Site, vendor: Vendor, base_image: Path, tmp_path: Path
) -> None:
    bundle = vendor.build_bundle(
        "1.7.1", image=vendor.image("image-1.7.1.tar", MIB, like=base_image), upgrade_from=">=1.5.0"
    )
    carry_rotated_keyring(vendor, bundle, tmp_path)
    publish(server, bundle)

    with pytest.raises(UpgradePathNotAllowed, match=r"installed is 1\.0\.0"):  # the keyring verified first
        site.pull(version="1.7.1")

    assert (site.trust_dir / "keyring.json").read_bytes() == vendor.keyring.read_bytes()
    assert site.staged() == []
    assert list(site.downloads.iterdir()) == []


def test_only_newer_releases_of_the_channel_are_offered(
    server: UpdateServer, site: Site, vendor: Vendor, bundle_110: Path, base_image: Path
) -> None:
    publish(server, bundle_110)
    publish(server, vendor.build_bundle("0.9.0", image=base_image))
    site.client.refresh()
    assert [str(r.version) for r in site.client.releases()] == ["0.9.0", "1.1.0"]
    assert [str(r.version) for r in site.client.available_releases(parse_version("1.0.0"))] == ["1.1.0"]
    assert site.client.available_releases(parse_version("1.1.0")) == []
    with pytest.raises(ch.NoNewerRelease, match=r"no release newer than 1\.1\.0"):
        site.pull(installed="1.1.0")


def test_a_truncated_download_is_refused_then_resumed_with_range(
    server: UpdateServer, site: Site, bundle_110: Path
) -> None:
    publish(server, bundle_110)
    served = served_file(server, bundle_110)
    whole = served.read_bytes()
    served.write_bytes(whole[: len(whole) // 3])  # the server (or the path to it) cuts the file short
    site.client.refresh()
    (release,) = site.client.releases()
    with pytest.raises(ch.DownloadIncomplete, match="run the download again to resume"):
        site.client.download(release, site.downloads)
    part = site.downloads / f"{bundle_110.name}.part"
    assert part.stat().st_size == len(whole) // 3
    assert not (site.downloads / bundle_110.name).exists()
    assert site.staged() == []

    served.write_bytes(whole)
    seen: list[int] = []
    path = site.client.download(release, site.downloads, progress=lambda done, _total: seen.append(done))
    assert seen[0] > len(whole) // 3  # it continued from where it stopped, not from byte 0
    assert path.read_bytes() == whole
    assert not part.exists()


def test_a_download_interrupted_by_the_installation_resumes(
    server: UpdateServer, site: Site, bundle_110: Path
) -> None:
    publish(server, bundle_110)
    site.client.refresh()
    (release,) = site.client.releases()

    def pull_the_plug(done: int, _total: int) -> None:
        if done >= 2 * MIB:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        site.client.download(release, site.downloads, progress=pull_the_plug)
    kept = (site.downloads / f"{bundle_110.name}.part").stat().st_size
    assert 0 < kept < release.length
    staged = site.pull()
    assert str(staged.version) == "1.1.0"


def test_endless_payload_data_is_refused_and_nothing_kept(
    server: UpdateServer, site: Site, bundle_110: Path
) -> None:
    publish(server, bundle_110)
    served = served_file(server, bundle_110)
    served.write_bytes(served.read_bytes() + b"\0" * MIB)
    with pytest.raises(ch.DownloadTooLarge, match="more than the signed"):
        site.pull()
    assert list(site.downloads.iterdir()) == []
    assert site.staged() == []


def test_a_payload_with_a_changed_byte_is_refused_by_the_tuf_hash(
    server: UpdateServer, site: Site, bundle_110: Path
) -> None:
    publish(server, bundle_110)
    served = served_file(server, bundle_110)
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0xFF
    served.write_bytes(bytes(data))
    with pytest.raises(ch.DownloadHashMismatch, match="is not the signed"):
        site.pull()
    assert list(site.downloads.iterdir()) == []
    assert site.staged() == []


def test_a_timestamp_past_its_signed_expiry_is_a_freeze_and_refused(
    make_server, vendor: Vendor, tmp_path: Path, bundle_110: Path
) -> None:  # type: ignore[no-untyped-def]
    server = make_server(channels=("stable",))
    site = Site(server, vendor, tmp_path / "site", "lic-freeze")
    site.client.refresh()  # fresh: fine
    publish(server, bundle_110)
    # The timestamp the server now serves was signed an hour longer ago than its life: the vendor's signing
    # stopped (or an attacker replays an old one). Its expiry is past by its own signature, not by waiting.
    repository = ServerHome.load(server.home).repository("stable")
    signed_at = dt.datetime.now(dt.UTC) - repository.expiry.timestamp - dt.timedelta(hours=1)
    with repository.locked():
        repository.refresh_timestamp(now=signed_at)
    with pytest.raises(ch.MetadataExpired, match="frozen or serving replayed old metadata"):
        site.pull()
    assert site.staged() == []
    assert not site.downloads.exists() or list(site.downloads.iterdir()) == []


def test_an_older_timestamp_after_a_newer_one_was_seen_is_a_rollback(
    server: UpdateServer, site: Site, bundle_110: Path
) -> None:
    old_timestamp = (server.metadata_dir("stable") / "timestamp.json").read_bytes()
    publish(server, bundle_110)
    site.client.refresh()
    (server.metadata_dir("stable") / "timestamp.json").write_bytes(old_timestamp)
    with pytest.raises(ch.MetadataRollback, match="rollback or mix-and-match"):
        site.pull()
    assert site.staged() == []


def test_targets_from_another_snapshot_are_a_mix_and_match_and_refused(
    server: UpdateServer, site: Site, vendor: Vendor, bundle_110: Path, base_image: Path
) -> None:
    publish(server, bundle_110)  # targets v2, snapshot v2
    metadata = server.metadata_dir("stable")
    older_targets = (metadata / "2.targets.json").read_bytes()
    publish(server, vendor.build_bundle("1.3.0", image=base_image))  # targets v3
    (metadata / "3.targets.json").write_bytes(older_targets)  # serve v2's targets where v3's should be
    with pytest.raises(ch.MetadataMismatch, match="mix-and-match"):
        site.pull()
    assert site.staged() == []


def test_a_snapshot_from_another_timestamp_is_a_mix_and_match_and_refused(
    server: UpdateServer, site: Site, vendor: Vendor, bundle_110: Path, base_image: Path
) -> None:
    publish(server, bundle_110)
    metadata = server.metadata_dir("stable")
    older_snapshot = (metadata / "2.snapshot.json").read_bytes()
    publish(server, vendor.build_bundle("1.3.0", image=base_image))
    (metadata / "3.snapshot.json").write_bytes(older_snapshot)
    with pytest.raises(ch.MetadataMismatch, match="mix-and-match"):
        site.pull()
    assert site.staged() == []


def test_oversized_metadata_is_endless_data_and_refused(server: UpdateServer, site: Site) -> None:
    timestamp = server.metadata_dir("stable") / "timestamp.json"
    document = json.loads(timestamp.read_bytes())
    document["signed"]["padding"] = "x" * 100_000
    timestamp.write_text(json.dumps(document))
    with pytest.raises(ch.MetadataTooLarge, match="endless metadata"):
        site.pull()
    assert site.staged() == []


def test_a_release_dated_after_updates_until_is_refused_by_the_server(
    server: UpdateServer, vendor: Vendor, tmp_path: Path, base_image: Path
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    site = Site(server, vendor, tmp_path / "site", "lic-until", updates_until=today - dt.timedelta(days=1))
    publish(server, vendor.build_bundle("1.4.0", image=base_image, release_date=today))
    site.client.refresh()
    (release,) = site.client.releases()
    assert (
        site.client.available_releases(parse_version("1.0.0"), updates_until=today - dt.timedelta(days=1))
        == []
    )
    with pytest.raises(ch.ChannelRefused) as refused:
        site.client.download(release, site.downloads)
    assert (refused.value.status, refused.value.reason) == (403, "updates-period-ended")
    assert f"after license lic-until's updates-until date {today - dt.timedelta(days=1)}" in str(
        refused.value
    )
    assert list(site.downloads.iterdir()) == []
    # Asked for explicitly, the pull stops at the same refusal, before anything is written.
    with pytest.raises(ch.ChannelRefused, match="updates-period-ended"):
        site.pull(version="1.4.0")
    assert site.staged() == []


def test_a_replayed_download_request_is_refused(server: UpdateServer, site: Site, bundle_110: Path) -> None:
    publish(server, bundle_110)
    path = "/v1/channels/stable/targets/" + served_file(server, bundle_110).name
    headers = server.signed_headers(site.key_file, "lic-site", path)
    first = server.get(path, headers=headers)
    assert first.status == 200
    assert first.data == bundle_110.read_bytes()
    replay = server.get(path, headers=headers)
    assert replay.status == 401
    assert json.loads(replay.data)["reason"] == "replayed-request"


def test_a_ranged_request_cannot_be_replayed_for_other_bytes(
    server: UpdateServer, site: Site, bundle_110: Path
) -> None:
    publish(server, bundle_110)
    path = "/v1/channels/stable/targets/" + served_file(server, bundle_110).name
    headers = server.signed_headers(site.key_file, "lic-site", path, range_header="bytes=100-")
    assert server.get(path, headers={**headers, "Range": "bytes=100-"}).status == 206
    forged = server.get(path, headers={**headers, "Range": "bytes=0-"})
    assert (forged.status, json.loads(forged.data)["reason"]) == (401, "bad-signature")


def test_publishing_an_unsigned_bundle_is_refused(
    server: UpdateServer, vendor: Vendor, base_image: Path
) -> None:
    bundle = vendor.build_bundle("1.5.0", image=base_image)
    writer.rewrite_head(bundle, [], None)
    result = server.cli("publish", str(bundle), check=False)
    assert result.returncode == 2
    assert "signature" in result.stderr
    assert list(server.targets_dir("stable").iterdir()) == []


def test_a_serving_server_keeps_its_short_lived_timestamp_fresh(
    make_server, vendor: Vendor, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server = make_server(channels=("stable",), timestamp_expiry=60, start=False)
    signed = ServerHome.load(server.home).repository("stable").timestamp
    first = signed().signed
    server.start("--refresh-timestamp-every", "1")
    site = Site(server, vendor, tmp_path / "site", "lic-fresh")
    site.client.refresh()
    # Waits for the server's own re-signing (twice), not for the clock to pass an expiry.
    deadline = time.monotonic() + 60  # a hang guard only
    while signed().signed.version < first.version + 2:
        assert time.monotonic() < deadline, "the server did not re-sign its timestamp"
        time.sleep(0.05)
    latest = signed().signed
    assert latest.expires > first.expires  # each re-signing moves the expiry on
    site.client.refresh()
    seen = json.loads((tmp_path / "site" / "state" / "stable" / "metadata" / "timestamp.json").read_bytes())
    assert seen["signed"]["version"] >= latest.version
    assert site.client.releases() == []
