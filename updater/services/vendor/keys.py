"""The vendor's trust material on disk: root/release/license keys, the signed keyring, licenses.

Layout written by ``corral-bundle keys init --dir VENDOR`` (private keys 0600 in 0700 directories)::

    VENDOR/trust-root.json              root public keys + threshold: ship this to every installation
    VENDOR/keyring.json                 the current keyring envelope (signed by a threshold of root keys)
    VENDOR/keyrings/<version>.json      every keyring ever published
    VENDOR/private/root/<keyid>.pem     offline root keys (Ed25519, PKCS#8 PEM)
    VENDOR/private/release/<keyid>.pem  release keys (sign bundle manifests)
    VENDOR/private/license/<keyid>.pem  license keys (sign licenses)

``license issue --out DIR`` writes ``DIR/<license_id>.license`` (the signed document, 0600) and
``DIR/<license_id>.key`` (the entitlement key, 0600). Nothing here prints or logs key material.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from updater.domain import signing
from updater.domain.errors import MalformedDocument
from updater.domain.keyring import (
    Keyring,
    TrustRoot,
    keyring_payload,
    parse_trust_root,
    verify_keyring,
)
from updater.domain.license import (
    LICENSE_ID_PATTERN,
    License,
    format_entitlement_key,
    generate_entitlement_key,
    license_payload,
    verify_license,
)


class VendorError(Exception):
    """A vendor-side operation cannot proceed (bad arguments, missing keys); the message says why."""


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never readable by others, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class VendorDir:
    path: Path

    @property
    def trust_root(self) -> Path:
        return self.path / "trust-root.json"

    @property
    def keyring(self) -> Path:
        return self.path / "keyring.json"

    @property
    def history(self) -> Path:
        return self.path / "keyrings"

    def private(self, role: str) -> Path:
        return self.path / "private" / role

    def load_root(self) -> TrustRoot:
        return parse_trust_root(self.trust_root.read_bytes())

    def load_keyring(self, *, now: datetime) -> Keyring:
        return verify_keyring(self.keyring.read_bytes(), self.load_root(), now=now)

    def private_keys(self, role: str) -> dict[str, Ed25519PrivateKey]:
        keys = {}
        directory = self.private(role)
        if not directory.is_dir():
            raise VendorError(f"{directory} does not exist: run `corral-bundle keys init --dir {self.path}`")
        for pem in sorted(directory.glob("*.pem")):
            key = signing.private_key_from_pem(pem.read_bytes())
            keys[signing.keyid_of(signing.public_raw(key))] = key
        return keys

    def _new_key(self, role: str) -> tuple[str, bytes]:
        key = Ed25519PrivateKey.generate()
        raw = signing.public_raw(key)
        keyid = signing.keyid_of(raw)
        write_secret(self.private(role) / f"{keyid}.pem", signing.private_key_to_pem(key))
        return keyid, raw

    def _publish(
        self,
        *,
        version: int,
        now: datetime,
        expires_days: int,
        keys: dict[str, bytes],
        roles: dict[str, tuple[list[str], int]],
        revoked: list[str],
    ) -> Keyring:
        payload = keyring_payload(
            version=version,
            expires=now + timedelta(days=expires_days),
            keys=keys,
            roles=roles,
            revoked=revoked,
        )
        root = self.load_root()
        signers = [k for keyid, k in self.private_keys("root").items() if keyid in root.keys][
            : root.threshold
        ]
        if len(signers) < root.threshold:
            raise VendorError(f"need {root.threshold} root keys to sign the keyring, found {len(signers)}")
        envelope = signing.make_envelope(payload, [signing.sign(k, "keyring", payload) for k in signers])
        keyring = verify_keyring(envelope, root, now=now)
        self.history.mkdir(exist_ok=True)
        _write_public(self.history / f"{version}.json", envelope)
        _write_public(self.keyring, envelope)
        return keyring


def init_vendor(
    path: Path,
    *,
    now: datetime,
    root_keys: int = 3,
    root_threshold: int = 2,
    release_keys: int = 2,
    release_threshold: int = 2,
    license_keys: int = 1,
    expires_days: int = 365,
) -> Keyring:
    """Create a new vendor directory (refuses an existing keyring: keys are never silently replaced)."""
    if not 1 <= root_threshold <= root_keys or not 1 <= release_threshold <= release_keys or license_keys < 1:
        raise VendorError("each threshold must be between 1 and the number of keys of its role")
    vendor = VendorDir(path)
    if vendor.keyring.exists() or vendor.trust_root.exists():
        raise VendorError(f"{path} already holds vendor keys; use `keys rotate` or `keys revoke`")
    path.mkdir(parents=True, exist_ok=True)
    for role in ("root", "release", "license"):
        vendor.private(role).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(vendor.private(role), 0o700)
    os.chmod(path / "private", 0o700)
    roots = dict(vendor._new_key("root") for _ in range(root_keys))
    _write_public(vendor.trust_root, TrustRoot(roots, root_threshold).to_bytes())
    release = dict(vendor._new_key("release") for _ in range(release_keys))
    licensing = dict(vendor._new_key("license") for _ in range(license_keys))
    return vendor._publish(
        version=1,
        now=now,
        expires_days=expires_days,
        keys=release | licensing,
        roles={"release": (list(release), release_threshold), "license": (list(licensing), 1)},
        revoked=[],
    )


def _current(vendor: VendorDir, now: datetime) -> Keyring:
    """The vendor's current keyring; an expired one is still accepted here so it can be re-signed."""
    return verify_keyring(vendor.keyring.read_bytes(), vendor.load_root(), now=now, allow_expired=True)


def rotate_key(
    path: Path, *, now: datetime, role: str = "release", retire: str | None = None, expires_days: int = 365
) -> tuple[str, Keyring]:
    """Add a new key to ``role`` (optionally retiring one from the role); publish keyring version+1."""
    vendor = VendorDir(path)
    current = _current(vendor, now)
    if role not in current.roles:
        raise VendorError(f"unknown role {role!r}")
    if retire is not None and retire not in current.roles[role].keyids:
        raise VendorError(f"key {retire[:16]} is not a {role} key")
    new_id, raw = vendor._new_key(role)
    keys = dict(current.keys) | {new_id: raw}
    ids = [k for k in current.roles[role].keyids if k != retire] + [new_id]
    roles = {name: (list(r.keyids), r.threshold) for name, r in current.roles.items()}
    roles[role] = (ids, min(current.roles[role].threshold, len([k for k in ids if k not in current.revoked])))
    keyring = vendor._publish(
        version=current.version + 1,
        now=now,
        expires_days=expires_days,
        keys=keys,
        roles=roles,
        revoked=sorted(current.revoked),
    )
    return new_id, keyring


def revoke_key(path: Path, keyid: str, *, now: datetime, expires_days: int = 365) -> Keyring:
    """Revoke a release or license key (it never counts again); publish version+1."""
    vendor = VendorDir(path)
    current = _current(vendor, now)
    if keyid not in current.keys:
        raise VendorError(f"key {keyid[:16]} is not in keyring version {current.version}")
    roles = {}
    for name, role in current.roles.items():
        ids = [k for k in role.keyids if k != keyid]
        usable = [k for k in ids if k not in current.revoked]
        if len(usable) < role.threshold:
            raise VendorError(
                f"revoking {keyid[:16]} would leave role {name} {len(usable)} usable keys, below its"
                f" threshold {role.threshold}: rotate a new key in first"
            )
        roles[name] = (ids, role.threshold)
    return vendor._publish(
        version=current.version + 1,
        now=now,
        expires_days=expires_days,
        keys=dict(current.keys),
        roles=roles,
        revoked=sorted(current.revoked | {keyid}),
    )


def sign_manifest(
    path: Path, manifest_bytes: bytes, *, now: datetime, keyids: list[str] | None = None
) -> list[signing.Signature]:
    """Sign with the vendor's current release keys (all of them, or the ones named)."""
    vendor = VendorDir(path)
    keyring = vendor.load_keyring(now=now)
    usable = keyring.role_keys("release")
    private = {k: v for k, v in vendor.private_keys("release").items() if k in usable}
    if keyids is not None:
        missing = [k for k in keyids if k not in private]
        if missing:
            raise VendorError(f"no usable release key {missing[0][:16]} in {vendor.private('release')}")
        private = {k: private[k] for k in keyids}
    if not private:
        raise VendorError("no usable release key to sign with")
    return [signing.sign(key, "manifest", manifest_bytes) for key in private.values()]


def issue_license(
    path: Path,
    out_dir: Path,
    *,
    now: datetime,
    customer: str,
    channels: list[str],
    node_entitlement: int,
    updates_until: date,
    expires: date,
    license_id: str | None = None,
) -> tuple[License, Path, Path]:
    """Write ``<id>.license`` and ``<id>.key`` (both 0600) to ``out_dir``; returns the license and paths."""
    vendor = VendorDir(path)
    keyring = vendor.load_keyring(now=now)
    license_id = license_id or f"lic-{secrets.token_hex(8)}"
    if not LICENSE_ID_PATTERN.fullmatch(license_id):
        raise VendorError(f"license id {license_id!r} must be 1-64 of [A-Za-z0-9._-]")
    out_dir.mkdir(parents=True, exist_ok=True)
    license_path, key_path = out_dir / f"{license_id}.license", out_dir / f"{license_id}.key"
    if license_path.exists() or key_path.exists():
        raise VendorError(f"license {license_id} already exists in {out_dir}")
    key = generate_entitlement_key()
    try:
        payload = license_payload(
            license_id=license_id,
            customer=customer,
            channels=channels,
            node_entitlement=node_entitlement,
            updates_until=updates_until,
            expires=expires,
            issued=now.date(),
            entitlement_key=key,
        )
    except MalformedDocument as exc:
        raise VendorError(exc.message) from None
    usable = keyring.role_keys("license")
    signers = [k for keyid, k in vendor.private_keys("license").items() if keyid in usable]
    signers = signers[: keyring.threshold("license")]
    document = signing.make_envelope(payload, [signing.sign(k, "license", payload) for k in signers])
    lic = verify_license(document, keyring, now=now)
    write_secret(license_path, document)
    write_secret(key_path, (format_entitlement_key(key) + "\n").encode("ascii"))
    return lic, license_path, key_path
