"""Licenses and entitlement keys: vendor-signed, time-bounded, never disclosed."""

from __future__ import annotations

import logging
import stat
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from tests.unit import bundle_kit as kit_
from tests.unit.bundle_kit import NOW, Kit
from updater.domain import errors, signing
from updater.domain import license as lic_mod
from updater.domain.license import (
    derive_request_key,
    license_entitles,
    parse_entitlement_key,
    verify_license,
)


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return kit_.make_kit(tmp_path)


def test_issued_license_verifies_and_carries_its_terms(kit: Kit) -> None:
    issued = kit_.issue(kit, channels=("stable", "lts"), nodes=7, license_id="lic-acme")
    lic = verify_license(issued.document, kit.trust().keyring, now=NOW)
    assert lic.license_id == "lic-acme"
    assert lic.customer == "ACME Corp"
    assert lic.channels == frozenset({"stable", "lts"})
    assert lic.node_entitlement == 7
    assert lic.updates_until == date(2027, 11, 1)
    assert lic.expires == date(2028, 1, 1)
    assert lic.issued == NOW.date()
    lic_mod.check_entitlement_key(lic, issued.key)


def test_license_and_key_files_are_0600(kit: Kit) -> None:
    issued = kit_.issue(kit)
    for path in (issued.license_path, issued.key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_license_signed_by_the_wrong_key_is_refused(kit: Kit, tmp_path: Path) -> None:
    stranger = kit_.make_kit(tmp_path / "stranger")
    with pytest.raises(errors.LicenseSignatureInvalid):
        verify_license(kit_.issue(stranger).document, kit.trust().keyring, now=NOW)


def test_license_signed_by_a_release_key_is_refused(kit: Kit) -> None:
    issued = kit_.issue(kit)
    payload, _ = signing.open_envelope(issued.document, what="license")
    release = kit.vendor.private_keys("release").values()
    forged = signing.make_envelope(payload, [signing.sign(k, "license", payload) for k in release])
    with pytest.raises(errors.LicenseSignatureInvalid):
        verify_license(forged, kit.trust().keyring, now=NOW)


def test_tampered_license_is_refused(kit: Kit) -> None:
    issued = kit_.issue(kit, nodes=5)
    payload, signatures = signing.open_envelope(issued.document, what="license")
    forged = signing.make_envelope(
        payload.replace(b'"node_entitlement":5', b'"node_entitlement":500'), signatures
    )
    with pytest.raises(errors.LicenseSignatureInvalid, match="tampered"):
        verify_license(forged, kit.trust().keyring, now=NOW)


def test_expired_license_is_refused(kit: Kit) -> None:
    issued = kit_.issue(kit, expires=date(2027, 1, 1), updates_until=date(2027, 1, 1))
    keyring = kit.trust().keyring
    verify_license(issued.document, keyring, now=datetime(2027, 1, 1, 23, 59, tzinfo=UTC))
    with pytest.raises(errors.LicenseExpired, match="expired on 2027-01-01"):
        verify_license(issued.document, keyring, now=datetime(2027, 1, 2, tzinfo=UTC))


def test_license_from_the_future_is_refused(kit: Kit) -> None:
    issued = kit_.issue(kit)
    with pytest.raises(errors.LicenseNotYetValid):
        verify_license(issued.document, kit.trust().keyring, now=datetime(2026, 11, 20, tzinfo=UTC))


def test_license_with_duplicate_key_is_refused(kit: Kit) -> None:
    issued = kit_.issue(kit)
    payload, _ = signing.open_envelope(issued.document, what="license")
    doubled = payload.replace(b'"node_entitlement":5', b'"node_entitlement":5,"node_entitlement":900')
    key = next(iter(kit.vendor.private_keys("license").values()))
    forged = signing.make_envelope(doubled, [signing.sign(key, "license", doubled)])
    with pytest.raises(errors.LicenseDuplicateKey, match="twice"):
        verify_license(forged, kit.trust().keyring, now=NOW)


def test_entitlement_checks_name_what_is_not_covered(kit: Kit) -> None:
    lic = kit_.issue(kit, channels=("stable",), nodes=4, updates_until=date(2027, 6, 30)).license
    license_entitles(lic, channel="stable", release_date=date(2027, 6, 30), node_count=4)
    with pytest.raises(errors.ChannelNotEntitled, match="'edge'"):
        license_entitles(lic, channel="edge", release_date=date(2027, 1, 1), node_count=1)
    with pytest.raises(errors.UpdatesPeriodEnded, match="2027-07-01"):
        license_entitles(lic, channel="stable", release_date=date(2027, 7, 1), node_count=1)
    with pytest.raises(errors.NodeCountExceeded, match="5 nodes"):
        license_entitles(lic, channel="stable", release_date=date(2027, 1, 1), node_count=5)


def test_entitlement_key_of_another_license_is_refused(kit: Kit) -> None:
    one, two = kit_.issue(kit), kit_.issue(kit)
    with pytest.raises(errors.LicenseMismatch):
        lic_mod.check_entitlement_key(one.license, two.key)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "corral-ek1-",
        "corral-ek2-" + "A" * 43,
        "corral-ek1-" + "A" * 42,
        "corral-ek1-" + "!" * 43,
        "hunter2",
    ],
)
def test_malformed_entitlement_key_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(errors.InvalidEntitlementKey) as caught:
        parse_entitlement_key(text)
    if len(text) > 11:
        assert text not in str(caught.value)


def test_entitlement_key_text_round_trips() -> None:
    key = lic_mod.generate_entitlement_key()
    text = lic_mod.format_entitlement_key(key)
    assert parse_entitlement_key(f"  {text}\n") == key


def test_request_key_is_derived_not_the_key_and_is_stable() -> None:
    key = lic_mod.generate_entitlement_key()
    request_key = derive_request_key(key)
    assert len(request_key) == 32
    assert request_key != key
    assert derive_request_key(key) == request_key
    assert derive_request_key(lic_mod.generate_entitlement_key()) != request_key
    assert lic_mod.entitlement_key_id(key) not in (key.hex(), request_key.hex())


def test_license_repr_and_errors_never_contain_the_entitlement_key(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    issued = kit_.issue(kit)
    secret_forms = {
        issued.key.hex(),
        lic_mod.format_entitlement_key(issued.key),
        issued.key_path.read_text().strip(),
    }
    texts = [repr(issued.license), str(issued.license)]
    other = kit_.issue(kit)
    with pytest.raises(errors.LicenseMismatch) as caught:
        lic_mod.check_entitlement_key(other.license, issued.key)
    texts.append(str(caught.value))
    texts.append(caplog.text)
    for text in texts:
        for secret in secret_forms:
            assert secret not in text


def test_license_cannot_be_verified_with_an_expired_keyring(kit: Kit) -> None:
    issued = kit_.issue(kit)
    later = datetime(2027, 12, 1, tzinfo=UTC)  # license still valid, keyring (365 days) expired
    with pytest.raises(errors.KeyringExpired):
        verify_license(issued.document, kit.trust(now=later).keyring, now=later)
