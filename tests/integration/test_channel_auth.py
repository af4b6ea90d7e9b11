"""The update server's front door (real server, HTTPS): who may fetch channel metadata, and why not."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
import urllib3

from tests.integration.conftest import UpdateServer, Vendor, run_cli
from updater.domain import license as license_mod
from updater.domain.request_auth import LICENSE_HEADER
from updater.server.licenses import LicenseRecord, LicenseRegistry
from updater.services.channel.client import ChannelRefused, ChannelUnreachable
from updater.services.vendor import keys as vendor_service

TIMESTAMP = "/v1/channels/stable/metadata/timestamp.json"


def refusal(response: urllib3.BaseHTTPResponse) -> tuple[int, str, str]:
    body = json.loads(response.data)
    return response.status, body["reason"], body["error"]


@pytest.fixture
def server(make_server) -> UpdateServer:  # type: ignore[no-untyped-def]
    return make_server()  # type: ignore[no-any-return]


@pytest.fixture
def stable_license(server: UpdateServer, vendor: Vendor) -> tuple[Path, Path]:
    files = vendor.issue_license("lic-stable", channels=["stable"])
    server.add_license(*files)
    return files


def test_a_licensed_installation_refreshes_the_channel(
    server: UpdateServer, stable_license: tuple[Path, Path], tmp_path: Path
) -> None:
    client = server.client(*stable_license, "stable", tmp_path)
    client.refresh()
    assert client.releases() == []
    assert (tmp_path / "stable" / "metadata" / "timestamp.json").exists()


def test_a_request_without_auth_headers_is_401(server: UpdateServer) -> None:
    status, reason, message = refusal(server.get(TIMESTAMP))
    assert (status, reason) == (401, "missing-auth")
    assert "X-Corral-Signature" in message


def test_a_request_signed_with_the_wrong_key_is_401(
    server: UpdateServer, stable_license: tuple[Path, Path], vendor: Vendor
) -> None:
    _other_license, other_key = vendor.issue_license("lic-other", channels=["stable"])
    headers = server.signed_headers(other_key, "lic-stable", TIMESTAMP)
    status, reason, message = refusal(server.get(TIMESTAMP, headers=headers))
    assert (status, reason) == (401, "bad-signature")
    assert "signature does not match" in message


def test_a_replayed_request_is_401_even_though_the_first_was_served(
    server: UpdateServer, stable_license: tuple[Path, Path]
) -> None:
    headers = server.signed_headers(stable_license[1], "lic-stable", TIMESTAMP)
    assert server.get(TIMESTAMP, headers=headers).status == 200
    status, reason, message = refusal(server.get(TIMESTAMP, headers=headers))
    assert (status, reason) == (401, "replayed-request")
    assert "replayed request" in message


def test_a_request_signed_for_another_path_is_401(
    server: UpdateServer, stable_license: tuple[Path, Path]
) -> None:
    headers = server.signed_headers(
        stable_license[1], "lic-stable", "/v1/channels/stable/metadata/1.root.json"
    )
    assert refusal(server.get(TIMESTAMP, headers=headers))[:2] == (401, "bad-signature")


def test_a_stale_request_is_401(server: UpdateServer, stable_license: tuple[Path, Path]) -> None:
    headers = server.signed_headers(stable_license[1], "lic-stable", TIMESTAMP, now=time.time() - 3600)
    status, reason, message = refusal(server.get(TIMESTAMP, headers=headers))
    assert (status, reason) == (401, "stale-request")
    assert "behind the server clock" in message


def test_an_unknown_license_is_403(server: UpdateServer, vendor: Vendor) -> None:
    _license_file, key_file = vendor.issue_license("lic-never-added", channels=["stable"])
    headers = server.signed_headers(key_file, "lic-never-added", TIMESTAMP)
    status, reason, message = refusal(server.get(TIMESTAMP, headers=headers))
    assert (status, reason) == (403, "unknown-license")
    assert "lic-never-added is not known" in message


def test_a_revoked_license_is_refused_at_once_with_the_reason(
    server: UpdateServer, stable_license: tuple[Path, Path], tmp_path: Path
) -> None:
    client = server.client(*stable_license, "stable", tmp_path)
    client.refresh()
    server.cli("license", "revoke", "lic-stable", "--reason", "contract ended")
    with pytest.raises(ChannelRefused) as refused:
        client.refresh()
    assert (refused.value.status, refused.value.reason) == (403, "license-revoked")
    assert "contract ended" in str(refused.value)


def test_an_expired_license_is_403(server: UpdateServer, vendor: Vendor, tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    license_file, key_file = vendor.issue_license(
        "lic-expired",
        channels=["stable"],
        issued_days_ago=400,
        updates_until=today - dt.timedelta(days=40),
        expires=today - dt.timedelta(days=1),
    )
    # The server refuses to register an already expired license ...
    refused_add = server.cli("license", "add", str(license_file), str(key_file), check=False)
    assert refused_add.returncode == 2
    assert "license-expired" in refused_add.stderr
    # ... so register it as it was while it was valid (the registry is the server's own state), then ask.
    key = license_mod.derive_request_key(license_mod.parse_entitlement_key(key_file.read_text()))
    LicenseRegistry(server.home / "licenses").add(
        LicenseRecord("lic-expired", license_file.read_bytes(), key)
    )
    with pytest.raises(ChannelRefused) as refused:
        server.client(license_file, key_file, "stable", tmp_path).refresh()
    assert (refused.value.status, refused.value.reason) == (403, "license-expired")
    assert f"expired on {today - dt.timedelta(days=1)}" in str(refused.value)


def test_a_channel_the_license_does_not_cover_is_403(
    server: UpdateServer, stable_license: tuple[Path, Path], tmp_path: Path
) -> None:
    with pytest.raises(ChannelRefused) as refused:
        server.client(*stable_license, "beta", tmp_path).refresh()
    assert (refused.value.status, refused.value.reason) == (403, "channel-not-entitled")
    assert "not 'beta'" in str(refused.value)
    assert not (tmp_path / "beta" / "metadata" / "timestamp.json").exists()


def test_a_license_signed_by_a_key_the_vendor_keyring_does_not_hold_cannot_be_registered(
    server: UpdateServer, vendor: Vendor
) -> None:
    files = vendor.forge_license("lic-forged", channels=["stable"])
    result = server.cli("license", "add", *map(str, files), check=False)
    assert result.returncode == 2
    assert "license-signature-invalid" in result.stderr
    assert not (server.home / "licenses" / "lic-forged.json").exists()


def test_the_server_keeps_only_the_derived_request_key(
    server: UpdateServer, stable_license: tuple[Path, Path]
) -> None:
    stored = (server.home / "licenses" / "lic-stable.json").read_text()
    entitlement_key = license_mod.parse_entitlement_key(stable_license[1].read_text())
    assert stable_license[1].read_text().strip() not in stored
    assert entitlement_key.hex() not in stored
    assert license_mod.derive_request_key(entitlement_key).hex() in stored
    assert (server.home / "licenses" / "lic-stable.json").stat().st_mode & 0o077 == 0


def test_a_server_certificate_from_another_ca_is_refused(
    server: UpdateServer, stable_license: tuple[Path, Path], tmp_path: Path
) -> None:
    client = server.client(*stable_license, "stable", tmp_path)
    client.fetcher = type(client.fetcher)(
        type(client.settings)(**{**client.settings.__dict__, "ca_file": server.tls.other_ca_file})
    )
    with pytest.raises(ChannelUnreachable, match="certificate verify failed"):
        client.refresh()


def test_plain_http_is_not_served(server: UpdateServer) -> None:
    pool = urllib3.PoolManager()
    with pytest.raises(urllib3.exceptions.HTTPError):
        pool.request("GET", server.url.replace("https://", "http://") + TIMESTAMP, retries=False)


def test_license_headers_are_never_written_to_the_access_log(
    server: UpdateServer, stable_license: tuple[Path, Path], tmp_path: Path
) -> None:
    server.client(*stable_license, "stable", tmp_path).refresh()
    server.stop()
    log = server.log.read_text() if server.log else ""
    assert "timestamp.json" in log
    assert LICENSE_HEADER not in log
    assert "X-Corral-Signature" not in log
    assert stable_license[1].read_text().strip() not in log


def test_the_server_follows_a_vendor_key_rotation_and_refuses_an_older_keyring(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    vendor_dir = tmp_path / "vendor"
    first = vendor_service.init_vendor(
        vendor_dir, now=now, root_keys=1, root_threshold=1, release_keys=1, release_threshold=1
    )
    vendor_files = vendor_service.VendorDir(vendor_dir)
    home = tmp_path / "home"
    run_cli(
        home, "init", "--trust-root", str(vendor_files.trust_root), "--keyring", str(vendor_files.keyring)
    )
    old_keyring = tmp_path / "keyring-v1.json"
    old_keyring.write_bytes(vendor_files.keyring.read_bytes())
    (old_license_key,) = first.roles["license"].keyids
    vendor_service.rotate_key(vendor_dir, now=now, role="license")
    vendor_service.revoke_key(vendor_dir, old_license_key, now=now)
    _lic, license_file, key_file = vendor_service.issue_license(
        vendor_dir,
        tmp_path / "licenses",
        now=now,
        customer="ACME",
        channels=["stable"],
        node_entitlement=3,
        updates_until=now.date() + dt.timedelta(days=30),
        expires=now.date() + dt.timedelta(days=60),
        license_id="lic-rotated",
    )
    refused = run_cli(home, "license", "add", str(license_file), str(key_file), check=False)
    assert refused.returncode == 2
    assert "license-signature-invalid" in refused.stderr  # signed by a key the server does not know yet

    assert "keyring version 3 trusted" in run_cli(home, "keyring", "update", str(vendor_files.keyring)).stdout
    run_cli(home, "license", "add", str(license_file), str(key_file))

    rollback = run_cli(home, "keyring", "update", str(old_keyring), check=False)
    assert rollback.returncode == 2
    assert "keyring-rollback" in rollback.stderr
    assert (home / "trust" / "keyring.json").read_bytes() == vendor_files.keyring.read_bytes()


def test_init_with_a_bad_keyring_creates_nothing(tmp_path: Path, vendor: Vendor) -> None:
    forged = tmp_path / "keyring.json"
    envelope = json.loads(vendor.keyring.read_bytes())
    first_hex = envelope["signatures"][0]["sig"][0]
    envelope["signatures"][0]["sig"] = ("1" if first_hex == "0" else "0") + envelope["signatures"][0]["sig"][
        1:
    ]
    forged.write_text(json.dumps(envelope))
    home = tmp_path / "home"
    result = run_cli(
        home, "init", "--trust-root", str(vendor.trust_root), "--keyring", str(forged), check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith("corral-update-server: ")
    assert not home.exists()
