"""Licenses and entitlement keys (pure: bytes and parsed objects in, verified objects or an error out).

A license is a signed envelope (:mod:`updater.domain.signing`, context ``license``) signed by a threshold of
the keyring's ``license`` role. Its payload (JSON, exact bytes signed)::

    {"type": "corral-license", "license_id": "lic-…", "customer": "ACME", "channels": ["stable"],
     "node_entitlement": 16, "updates_until": "2027-12-31", "expires": "2028-06-30",
     "issued": "2026-11-21", "entitlement_key_id": "<64 hex>"}

The entitlement key is 32 random bytes issued with the license, written as text ``corral-ek1-<base64url>``.
It is a secret: stored 0600, never printed or logged. ``entitlement_key_id`` (an HKDF derivation of the key,
not the key) lets an installation check that a key belongs to a license. The vendor's update server stores
only :func:`derive_request_key` of it, which authenticates download requests.

Dates are whole days (UTC): a license is valid through its ``expires`` day, and entitles releases dated up to
and including ``updates_until``.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from updater.domain import signing, strict_json
from updater.domain.errors import (
    ChannelNotEntitled,
    InvalidEntitlementKey,
    LicenseDuplicateKey,
    LicenseExpired,
    LicenseInvalid,
    LicenseMismatch,
    LicenseNotYetValid,
    LicenseSignatureInvalid,
    MalformedDocument,
    NodeCountExceeded,
    UpdatesPeriodEnded,
)
from updater.domain.keyring import Keyring

LICENSE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CHANNEL_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
ENTITLEMENT_KEY_PREFIX = "corral-ek1-"
ENTITLEMENT_KEY_BYTES = 32
MAX_LICENSE_BYTES = 64 * 1024
_FIELDS = {
    "type",
    "license_id",
    "customer",
    "channels",
    "node_entitlement",
    "updates_until",
    "expires",
    "issued",
    "entitlement_key_id",
}


@dataclass(frozen=True)
class License:
    """A license whose signature has been verified. ``document`` is the exact signed file."""

    license_id: str
    customer: str
    channels: frozenset[str]
    node_entitlement: int
    updates_until: date
    expires: date
    issued: date
    entitlement_key_id: str
    document: bytes = field(default=b"", repr=False, compare=False)


def _hkdf(key: bytes, *, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)


def generate_entitlement_key() -> bytes:
    return secrets.token_bytes(ENTITLEMENT_KEY_BYTES)


def format_entitlement_key(key: bytes) -> str:
    """The text form written to ``<license_id>.key`` (with a trailing newline added by the writer)."""
    if len(key) != ENTITLEMENT_KEY_BYTES:
        raise InvalidEntitlementKey("an entitlement key is 32 bytes")
    return ENTITLEMENT_KEY_PREFIX + base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


def parse_entitlement_key(text: str) -> bytes:
    """Parse ``corral-ek1-<base64url>`` (surrounding whitespace ignored) into the 32 key bytes.

    The error message never repeats the text (it may be a mistyped secret).
    """
    value = text.strip()
    if not value.startswith(ENTITLEMENT_KEY_PREFIX):
        raise InvalidEntitlementKey(f"entitlement key must start with {ENTITLEMENT_KEY_PREFIX!r}")
    body = value[len(ENTITLEMENT_KEY_PREFIX) :]
    if not re.fullmatch(r"[A-Za-z0-9_-]{43}", body):
        raise InvalidEntitlementKey("entitlement key must be 43 base64url characters after its prefix")
    try:
        key = base64.urlsafe_b64decode(body + "=")
    except (binascii.Error, ValueError):
        raise InvalidEntitlementKey("entitlement key is not valid base64url") from None
    if len(key) != ENTITLEMENT_KEY_BYTES or format_entitlement_key(key) != value:
        raise InvalidEntitlementKey("entitlement key is not in canonical form")
    return key


def derive_request_key(entitlement_key: bytes) -> bytes:
    """HKDF-SHA256 key that authenticates download requests; the update server stores this, never the key."""
    if len(entitlement_key) != ENTITLEMENT_KEY_BYTES:
        raise InvalidEntitlementKey("an entitlement key is 32 bytes")
    return _hkdf(
        entitlement_key, salt=b"corral-request-key-v1", info=b"corral download request authentication"
    )


def entitlement_key_id(entitlement_key: bytes) -> str:
    """Public identifier of a key (stored in the license); reveals nothing usable about the key."""
    if len(entitlement_key) != ENTITLEMENT_KEY_BYTES:
        raise InvalidEntitlementKey("an entitlement key is 32 bytes")
    return _hkdf(entitlement_key, salt=b"corral-key-id-v1", info=b"corral entitlement key id").hex()


def license_payload(
    *,
    license_id: str,
    customer: str,
    channels: list[str],
    node_entitlement: int,
    updates_until: date,
    expires: date,
    issued: date,
    entitlement_key: bytes,
) -> bytes:
    """Serialise a license payload (vendor side); checked by the same parser customers use."""
    payload = strict_json.dumps(
        {
            "type": "corral-license",
            "license_id": license_id,
            "customer": customer,
            "channels": sorted(channels),
            "node_entitlement": node_entitlement,
            "updates_until": updates_until.isoformat(),
            "expires": expires.isoformat(),
            "issued": issued.isoformat(),
            "entitlement_key_id": entitlement_key_id(entitlement_key),
        }
    )
    parse_license_payload(payload)
    return payload


def _date(value: object, name: str) -> date:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise LicenseInvalid(f"license field {name} must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise LicenseInvalid(f"license field {name} {value!r} is not a real date") from None


def parse_license_payload(payload: bytes, document: bytes = b"") -> License:
    """Validate the payload's schema (no signature check: use :func:`verify_license`)."""
    doc = strict_json.loads_object(
        payload, what="license", error=LicenseInvalid, duplicate_error=LicenseDuplicateKey
    )
    if set(doc) != _FIELDS or doc["type"] != "corral-license":
        raise LicenseInvalid(
            f"license must have exactly the fields {sorted(_FIELDS)} and type corral-license"
        )
    license_id, customer, channels = doc["license_id"], doc["customer"], doc["channels"]
    if not isinstance(license_id, str) or not LICENSE_ID_PATTERN.fullmatch(license_id):
        raise LicenseInvalid("license_id must be 1-64 of [A-Za-z0-9._-], starting with a letter or digit")
    if not isinstance(customer, str) or not customer.strip() or len(customer) > 200:
        raise LicenseInvalid("customer must be a non-empty string of at most 200 characters")
    if (
        not isinstance(channels, list)
        or not channels
        or len(set(channels)) != len(channels)
        or not all(isinstance(c, str) and CHANNEL_PATTERN.fullmatch(c) for c in channels)
    ):
        raise LicenseInvalid("channels must be a non-empty list of distinct channel names")
    nodes = doc["node_entitlement"]
    if not isinstance(nodes, int) or isinstance(nodes, bool) or not 1 <= nodes <= 1_000_000:
        raise LicenseInvalid("node_entitlement must be an integer from 1 to 1000000")
    key_id = doc["entitlement_key_id"]
    if not signing.is_keyid(key_id):
        raise LicenseInvalid("entitlement_key_id must be 64 lowercase hex characters")
    issued, expires = _date(doc["issued"], "issued"), _date(doc["expires"], "expires")
    updates_until = _date(doc["updates_until"], "updates_until")
    if expires < issued or updates_until < issued:
        raise LicenseInvalid("license dates must not end before the license was issued")
    return License(
        license_id, customer, frozenset(channels), nodes, updates_until, expires, issued, key_id, document
    )


def verify_license(document: bytes, keyring: Keyring, *, now: datetime) -> License:
    """Verify a license envelope against the keyring's ``license`` role and ``now`` (timezone-aware).

    Raises :class:`~updater.domain.errors.KeyringExpired` (the keyring itself is stale),
    :class:`LicenseInvalid` (malformed), :class:`LicenseSignatureInvalid` (not signed by a threshold of
    license keys: wrong key, revoked key, tampered), :class:`LicenseNotYetValid`, :class:`LicenseExpired`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    if len(document) > MAX_LICENSE_BYTES:
        raise LicenseInvalid(f"license is larger than {MAX_LICENSE_BYTES} bytes")
    keyring.check_not_expired(now=now)
    try:
        payload, signatures = signing.open_envelope(document, what="license", error=LicenseInvalid)
    except MalformedDocument as exc:
        raise LicenseInvalid(exc.message) from None
    signing.verify_threshold(
        payload,
        signatures,
        context="license",
        keys=keyring.role_keys("license"),
        threshold=keyring.threshold("license"),
        revoked=keyring.revoked,
        what="license",
        failure=LicenseSignatureInvalid,
    )
    lic = parse_license_payload(payload, document)
    today = now.date()
    if today < lic.issued:
        raise LicenseNotYetValid(f"license {lic.license_id} is issued {lic.issued}, after today ({today})")
    if today > lic.expires:
        raise LicenseExpired(f"license {lic.license_id} expired on {lic.expires}")
    return lic


def check_entitlement_key(lic: License, entitlement_key: bytes) -> None:
    """Raise :class:`LicenseMismatch` unless ``entitlement_key`` is the key issued with ``lic``."""
    if not secrets.compare_digest(entitlement_key_id(entitlement_key), lic.entitlement_key_id):
        raise LicenseMismatch(f"the entitlement key given is not the key of license {lic.license_id}")


def check_channel(lic: License, channel: str) -> None:
    if channel not in lic.channels:
        raise ChannelNotEntitled(
            f"license {lic.license_id} covers channel(s) {', '.join(sorted(lic.channels))}, not {channel!r}"
        )


def check_release_date(lic: License, release_date: date) -> None:
    if release_date > lic.updates_until:
        raise UpdatesPeriodEnded(
            f"release dated {release_date} is after license {lic.license_id}'s updates-until date "
            f"{lic.updates_until}"
        )


def check_node_count(lic: License, node_count: int) -> None:
    if node_count > lic.node_entitlement:
        raise NodeCountExceeded(
            f"cluster has {node_count} nodes; license {lic.license_id} entitles {lic.node_entitlement}"
        )


def license_entitles(lic: License, *, channel: str, release_date: date, node_count: int | None) -> None:
    """Raise the first failing entitlement check: channel, release date vs updates-until, node count.

    ``node_count=None`` skips the node check (the vendor's server does not know the cluster's size).
    """
    check_channel(lic, channel)
    check_release_date(lic, release_date)
    if node_count is not None:
        check_node_count(lic, node_count)
