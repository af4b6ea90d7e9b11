"""The update service's channel check against the real reference update server over HTTPS on 127.0.0.1.

The installation is set up by ``corral-updater init`` with the channel options (URL, CA, channel root,
license), then ``check_channel`` (what the ``corral.check_channel`` task calls) refreshes the signed
metadata with python-tuf's real client and records what it finds. Every way the channel can fail is a
recorded answer.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.conftest import Tls, UpdateServer, Vendor
from updater.cli.updater import main
from updater.config import ServiceConfig, load_config
from updater.services.channel.check import check_channel
from updater.store import queries as q
from updater.store.db import make_engine, session_factory, transaction
from updater.store.models import AuditEntry, Outcome, ReleaseSource

MIB = 1024 * 1024


def make_site(
    root: Path,
    server: UpdateServer,
    vendor: Vendor,
    tls: Tls,
    license_id: str,
    *,
    nodes: int = 3,
    extra: tuple[str, ...] = (),
    **lic: object,
) -> ServiceConfig:
    """An update service home made by ``corral-updater init`` following the server's stable channel."""
    root.mkdir(parents=True, exist_ok=True)
    license_file, key_file = vendor.issue_license(license_id, channels=["stable"], **lic)  # type: ignore[arg-type]
    server.add_license(license_file, key_file)
    channel_root = root / "stable-root.json"
    channel_root.write_bytes(server.root("stable"))
    inventory = root / "inventory.json"
    hosts = [f"node{i}" for i in range(1, nodes + 1)]
    inventory.write_text(json.dumps({"nodes": {"hosts": hosts}, "_meta": {"hostvars": {}}}))
    code = main(
        [
            "--home", str(root / "home"), "init", "--bind", "127.0.0.1:18443",
            "--trust-root", str(vendor.trust_root), "--keyring", str(vendor.keyring),
            "--license", str(license_file), "--entitlement-key", str(key_file),
            "--channel-url", server.url, "--channel-ca", str(tls.ca_file),
            "--channel-root", str(channel_root),
            "--inventory", str(inventory), *extra,
        ]
    )  # fmt: skip
    assert code == 0
    return load_config(root / "home")


def publish(server: UpdateServer, bundle: Path) -> None:
    assert "published" in server.cli("publish", str(bundle)).stdout


def sessions_of(config: ServiceConfig) -> sessionmaker[Session]:
    return session_factory(make_engine(config.effective_database_url))


def checks_audited(sessions: sessionmaker[Session]) -> list[AuditEntry]:
    with transaction(sessions) as db:
        return list(db.scalars(sa.select(AuditEntry).where(AuditEntry.action == "channel.check")))


@pytest.fixture
def server(make_server: Callable[..., UpdateServer]) -> UpdateServer:
    return make_server(channels=("stable",))


@pytest.fixture(scope="module")
def bundles(vendor: Vendor) -> dict[str, Path]:
    image = vendor.image("check-image.tar", MIB)
    return {version: vendor.build_bundle(version, image=image) for version in ("1.1.0", "1.2.0", "1.0.0")}


def test_the_check_records_every_release_the_channel_offers_that_the_store_does_not_know(
    server: UpdateServer, vendor: Vendor, tls: Tls, tmp_path: Path, bundles: dict[str, Path]
) -> None:
    publish(server, bundles["1.1.0"])
    publish(server, bundles["1.2.0"])
    config = make_site(tmp_path / "site", server, vendor, tls, "lic-check")
    sessions = sessions_of(config)

    result = check_channel(config, sessions, actor="beat")

    assert result.checked is True
    assert result.new_releases == ("1.1.0", "1.2.0")
    assert result.message == f"channel stable at {server.url}: 2 release(s) offered; new: 1.1.0, 1.2.0"
    with transaction(sessions) as db:
        rows = {r.version: r for r in q.list_releases(db)}
        assert sorted(rows) == ["1.1.0", "1.2.0"]
        for row in rows.values():
            assert (row.source, row.channel, row.staged_path, row.checks) == (
                ReleaseSource.PULLED,
                "stable",
                None,  # not staged until it is downloaded
                [],
            )
        assert rows["1.2.0"].notes.startswith("Corral 1.2.0 (stable), released ")
        assert "Upgrades from >=0.1.0." in rows["1.2.0"].notes
    (entry,) = checks_audited(sessions)
    assert (entry.actor, entry.outcome, entry.target, entry.detail) == (
        "beat",
        Outcome.OK,
        "stable",
        result.message,
    )

    publish(server, bundles["1.0.0"])
    again = check_channel(config, sessions, actor="alice")
    assert again.new_releases == ("1.0.0",)
    third = check_channel(config, sessions, actor="beat")
    assert third.checked is True
    assert third.new_releases == ()
    assert third.message.endswith("3 release(s) offered; nothing new")
    with transaction(sessions) as db:
        assert len(q.list_releases(db)) == 3


def test_releases_not_newer_than_the_installed_one_are_counted_but_not_recorded(
    server: UpdateServer, vendor: Vendor, tls: Tls, tmp_path: Path, bundles: dict[str, Path]
) -> None:
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        publish(server, bundles[version])
    config = make_site(tmp_path / "site", server, vendor, tls, "lic-installed")
    sessions = sessions_of(config)
    with transaction(sessions) as db:
        installed = q.add_release(
            db,
            version="1.1.0",
            channel="stable",
            release_date=dt.datetime.now(dt.UTC).date(),
            source=ReleaseSource.IMPORTED,
        )
        q.mark_installed(db, installed)
    result = check_channel(config, sessions, actor="beat")
    assert result.new_releases == ("1.2.0",)
    assert "2 not newer than the installed release" in result.message  # 1.0.0 and 1.1.0 itself
    with transaction(sessions) as db:
        assert sorted(r.version for r in q.list_releases(db)) == ["1.1.0", "1.2.0"]


def _failed_check(config: ServiceConfig, sessions: sessionmaker[Session]) -> str:
    result = check_channel(config, sessions, actor="beat")
    assert result.checked is False
    entry = checks_audited(sessions)[-1]
    assert (entry.outcome, entry.detail) == (Outcome.FAILED, result.message)
    with transaction(sessions) as db:
        assert q.list_releases(db) == []
    return result.message


def test_an_unreachable_channel_is_a_recorded_failure_and_the_next_check_still_runs(
    server: UpdateServer, vendor: Vendor, tls: Tls, tmp_path: Path, bundles: dict[str, Path]
) -> None:
    publish(server, bundles["1.1.0"])
    config = make_site(tmp_path / "site", server, vendor, tls, "lic-down")
    sessions = sessions_of(config)
    server.stop()
    message = _failed_check(config, sessions)
    assert message.startswith(f"channel stable at {server.url}: channel-unreachable: ")
    server.start("--refresh-timestamp-every", "0")
    assert check_channel(config, sessions, actor="beat").new_releases == ("1.1.0",)


def test_a_revoked_license_is_recorded_with_the_servers_reason(
    server: UpdateServer, vendor: Vendor, tls: Tls, tmp_path: Path
) -> None:
    config = make_site(tmp_path / "site", server, vendor, tls, "lic-revoked")
    server.cli("license", "revoke", "lic-revoked", "--reason", "contract ended")
    message = _failed_check(config, sessions_of(config))
    assert "channel-refused: update server refused (403 license-revoked)" in message
    assert "contract ended" in message


def test_a_server_certificate_from_another_ca_is_a_recorded_failure(
    server: UpdateServer, vendor: Vendor, tls: Tls, tmp_path: Path
) -> None:
    config = make_site(tmp_path / "site", server, vendor, tls, "lic-ca")
    (config.home / "trust/channel-ca.pem").write_bytes(tls.other_ca_file.read_bytes())
    message = _failed_check(config, sessions_of(config))
    assert "channel-unreachable" in message
    assert "CERTIFICATE_VERIFY_FAILED" in message


def test_rolled_back_channel_metadata_is_refused_and_recorded(
    server: UpdateServer, vendor: Vendor, tls: Tls, tmp_path: Path, bundles: dict[str, Path]
) -> None:
    old_timestamp = (server.metadata_dir("stable") / "timestamp.json").read_bytes()
    publish(server, bundles["1.1.0"])
    config = make_site(tmp_path / "site", server, vendor, tls, "lic-rollback")
    sessions = sessions_of(config)
    assert check_channel(config, sessions, actor="beat").new_releases == ("1.1.0",)
    (server.metadata_dir("stable") / "timestamp.json").write_bytes(old_timestamp)
    result = check_channel(config, sessions, actor="beat")
    assert result.checked is False
    assert "metadata-rollback" in result.message
    assert checks_audited(sessions)[-1].outcome is Outcome.FAILED


def test_expired_channel_metadata_is_a_freeze_and_recorded(
    make_server: Callable[..., UpdateServer], vendor: Vendor, tls: Tls, tmp_path: Path
) -> None:
    server = make_server(channels=("stable",), timestamp_expiry=3)  # never re-signed: it expires
    config = make_site(tmp_path / "site", server, vendor, tls, "lic-frozen")
    sessions = sessions_of(config)
    time.sleep(4.5)
    message = _failed_check(config, sessions)
    assert "metadata-expired" in message
    assert "frozen or serving replayed old metadata" in message
