"""The vendor's release keyring and the installation's trust in it (pure: bytes in, verified objects out).

* :class:`TrustRoot` — the offline root keys' public halves and their threshold. It ships with the
  installation (``trust-root.json``) and is the only thing trusted a priori.
* :class:`Keyring` — a versioned document listing the vendor's Ed25519 keys, which of them may sign releases
  (role ``release``) and licenses (role ``license``) with a threshold each, an expiry and the revoked key ids.
  It travels as a signed envelope (see :mod:`updater.domain.signing`) signed by a threshold of root keys, so
  release keys can be rotated or revoked without re-installing customers.
* :class:`TrustStore` — a root plus the currently trusted keyring; :meth:`TrustStore.with_keyring` accepts a
  newer keyring only if it verifies, refuses an older one (rollback) or a different one of the same version.

Keyring payload (JSON, the exact bytes are signed)::

    {"type": "corral-keyring", "version": 3, "expires": "2027-11-21T00:00:00Z",
     "keys": {"<keyid>": {"keytype": "ed25519", "public": "<64 hex>"}, ...},
     "roles": {"release": {"keyids": [...], "threshold": 2}, "license": {"keyids": [...], "threshold": 1}},
     "revoked": ["<keyid>", ...]}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from updater.domain import signing, strict_json
from updater.domain.errors import KeyringExpired, KeyringRollback, MalformedDocument

ROLES = ("release", "license")
MAX_KEYRING_BYTES = 256 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME = "%Y-%m-%dT%H:%M:%SZ"


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_TIME)


def parse_time(value: object, *, what: str) -> datetime:
    if not isinstance(value, str):
        raise MalformedDocument(f"{what} must be a UTC time string like 2027-01-31T00:00:00Z")
    try:
        return datetime.strptime(value, _TIME).replace(tzinfo=UTC)
    except ValueError:
        raise MalformedDocument(f"{what} {value!r} is not a UTC time like 2027-01-31T00:00:00Z") from None


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")


def _parse_public_keys(value: object, *, what: str) -> dict[str, bytes]:
    if not isinstance(value, dict) or not value:
        raise MalformedDocument(f"{what}: 'keys' must be a non-empty object of key id -> key")
    keys: dict[str, bytes] = {}
    for keyid, entry in value.items():
        if (
            not isinstance(entry, dict)
            or set(entry) != {"keytype", "public"}
            or entry["keytype"] != "ed25519"
            or not isinstance(entry["public"], str)
            or _HEX64.fullmatch(entry["public"]) is None
        ):
            raise MalformedDocument(
                f"{what}: key {keyid!r} must be {{'keytype': 'ed25519', 'public': <hex>}}"
            )
        raw = bytes.fromhex(entry["public"])
        if signing.keyid_of(raw) != keyid:
            raise MalformedDocument(f"{what}: key id {keyid!r} is not the SHA-256 of its public key")
        keys[keyid] = raw
    return keys


def _threshold(value: object, *, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 64:
        raise MalformedDocument(f"{what}: threshold must be an integer from 1 to 64")
    return value


def public_keys_json(keys: Mapping[str, bytes]) -> dict[str, dict[str, str]]:
    return {keyid: {"keytype": "ed25519", "public": raw.hex()} for keyid, raw in sorted(keys.items())}


@dataclass(frozen=True)
class TrustRoot:
    """Offline root public keys and how many of them must sign a keyring."""

    keys: Mapping[str, bytes]
    threshold: int

    def to_bytes(self) -> bytes:
        return strict_json.dumps(
            {"type": "corral-trust-root", "keys": public_keys_json(self.keys), "threshold": self.threshold}
        )


def parse_trust_root(data: bytes) -> TrustRoot:
    """Parse ``trust-root.json`` (not signed: it is the anchor the installation ships with)."""
    doc = strict_json.loads_object(data, what="trust root")
    if set(doc) != {"type", "keys", "threshold"} or doc["type"] != "corral-trust-root":
        raise MalformedDocument("trust root must have exactly type='corral-trust-root', keys and threshold")
    keys = _parse_public_keys(doc["keys"], what="trust root")
    threshold = _threshold(doc["threshold"], what="trust root")
    if threshold > len(keys):
        raise MalformedDocument(f"trust root: threshold {threshold} exceeds its {len(keys)} keys")
    return TrustRoot(keys, threshold)


@dataclass(frozen=True)
class RoleKeys:
    keyids: frozenset[str]
    threshold: int


@dataclass(frozen=True)
class Keyring:
    """A verified keyring. ``envelope`` holds the exact signed file so it can be stored or forwarded as is."""

    version: int
    expires: datetime
    keys: Mapping[str, bytes]
    roles: Mapping[str, RoleKeys]
    revoked: frozenset[str]
    envelope: bytes

    def role_keys(self, role: str) -> dict[str, bytes]:
        """Public keys that may sign for ``role`` (revoked keys never count)."""
        return {k: self.keys[k] for k in self.roles[role].keyids if k not in self.revoked}

    def threshold(self, role: str) -> int:
        return self.roles[role].threshold

    def check_not_expired(self, *, now: datetime) -> None:
        _require_aware(now)
        if now >= self.expires:
            raise KeyringExpired(
                f"trusted keyring version {self.version} expired at {format_time(self.expires)}; "
                "import a newer keyring from the vendor"
            )


def keyring_payload(
    *,
    version: int,
    expires: datetime,
    keys: Mapping[str, bytes],
    roles: Mapping[str, tuple[list[str], int]],
    revoked: list[str],
) -> bytes:
    """Serialise a keyring payload (vendor side); sign it with root keys and wrap it in an envelope."""
    doc: dict[str, Any] = {
        "type": "corral-keyring",
        "version": version,
        "expires": format_time(expires),
        "keys": public_keys_json(keys),
        "roles": {name: {"keyids": sorted(ids), "threshold": t} for name, (ids, t) in roles.items()},
        "revoked": sorted(revoked),
    }
    return strict_json.dumps(doc)


def parse_keyring_payload(payload: bytes, envelope: bytes) -> Keyring:
    doc = strict_json.loads_object(payload, what="keyring")
    expected = {"type", "version", "expires", "keys", "roles", "revoked"}
    if set(doc) != expected or doc["type"] != "corral-keyring":
        raise MalformedDocument(
            f"keyring must have exactly the fields {sorted(expected)} and type corral-keyring"
        )
    version = doc["version"]
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version < 2**53:
        raise MalformedDocument("keyring: version must be a positive integer")
    expires = parse_time(doc["expires"], what="keyring expires")
    keys = _parse_public_keys(doc["keys"], what="keyring")
    revoked = doc["revoked"]
    if not isinstance(revoked, list) or not all(signing.is_keyid(k) for k in revoked):
        raise MalformedDocument("keyring: revoked must be a list of key ids")
    revoked_set = frozenset(revoked)
    roles_doc = doc["roles"]
    if not isinstance(roles_doc, dict) or set(roles_doc) != set(ROLES):
        raise MalformedDocument(f"keyring: roles must be exactly {list(ROLES)}")
    roles: dict[str, RoleKeys] = {}
    for name in ROLES:
        role = roles_doc[name]
        if (
            not isinstance(role, dict)
            or set(role) != {"keyids", "threshold"}
            or not isinstance(role["keyids"], list)
        ):
            raise MalformedDocument(f"keyring: role {name} must have exactly keyids (list) and threshold")
        ids = role["keyids"]
        if len(set(ids)) != len(ids) or not all(isinstance(k, str) and k in keys for k in ids):
            raise MalformedDocument(f"keyring: role {name} lists an unknown or repeated key id")
        threshold = _threshold(role["threshold"], what=f"keyring role {name}")
        usable = [k for k in ids if k not in revoked_set]
        if threshold > len(usable):
            raise MalformedDocument(
                f"keyring: role {name} has threshold {threshold} but only {len(usable)} unrevoked keys"
            )
        roles[name] = RoleKeys(frozenset(ids), threshold)
    return Keyring(version, expires, keys, roles, revoked_set, envelope)


def verify_keyring(data: bytes, root: TrustRoot, *, now: datetime, allow_expired: bool = False) -> Keyring:
    """Verify a keyring envelope against the root keys' threshold, then its schema and (unless
    ``allow_expired``) its expiry."""
    _require_aware(now)
    if len(data) > MAX_KEYRING_BYTES:
        raise MalformedDocument(f"keyring is larger than {MAX_KEYRING_BYTES} bytes")
    payload, signatures = signing.open_envelope(data, what="keyring")
    signing.verify_threshold(
        payload, signatures, context="keyring", keys=root.keys, threshold=root.threshold, what="keyring"
    )
    keyring = parse_keyring_payload(payload, data)
    if not allow_expired:
        keyring.check_not_expired(now=now)
    return keyring


@dataclass(frozen=True)
class TrustStore:
    """What an installation trusts: the root anchor and the newest keyring it has verified."""

    root: TrustRoot
    keyring: Keyring

    @classmethod
    def load(cls, root_bytes: bytes, keyring_bytes: bytes, *, now: datetime) -> TrustStore:
        """Build from stored files; the stored keyring is re-verified against the root.

        An expired stored keyring still loads (so a newer one, e.g. carried in a bundle, can replace it);
        every verification made with it checks expiry and fails with :class:`KeyringExpired`.
        """
        root = parse_trust_root(root_bytes)
        return cls(root, verify_keyring(keyring_bytes, root, now=now, allow_expired=True))

    def with_keyring(self, candidate: bytes, *, now: datetime) -> TrustStore:
        """Return a store trusting ``candidate`` if it verifies and is newer; same bytes is a no-op.

        Raises :class:`KeyringRollback` for an older version or a different keyring with the same version.
        """
        if candidate == self.keyring.envelope:
            return self
        # Rollback is judged on the signed version, so the signature is checked first (an unsigned document
        # claiming an old version must not be reported as a rollback) — expiry is checked after rollback so an
        # old, expired keyring is reported as the rollback it is.
        payload, signatures = signing.open_envelope(candidate, what="keyring")
        signing.verify_threshold(
            payload,
            signatures,
            context="keyring",
            keys=self.root.keys,
            threshold=self.root.threshold,
            what="keyring",
        )
        offered = parse_keyring_payload(payload, candidate)
        if offered.version < self.keyring.version:
            raise KeyringRollback(
                f"keyring version {offered.version} is older than the trusted version {self.keyring.version}"
            )
        if offered.version == self.keyring.version:
            raise KeyringRollback(
                f"keyring version {offered.version} differs from the trusted keyring of the same version"
            )
        offered.check_not_expired(now=now)
        return TrustStore(self.root, offered)
