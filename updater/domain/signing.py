"""Ed25519 signatures over exact bytes, key ids, signed envelopes and the k-of-n threshold check.

Every signature is made over ``b"corral-sig-v1\\0" + context + b"\\0" + data`` where ``context`` names what is
signed (``manifest``, ``keyring``, ``license``): a signature made for one kind of document can never be
replayed as another. Key id = SHA-256 (hex) of the raw 32-byte public key.

Detached signatures (``manifest.sig``) and envelopes (keyring, license) store signatures as a JSON list of
``{"keyid": <hex>, "sig": <hex>}``. An envelope is ``{"payload": <base64 of the exact signed bytes>,
"signatures": [...]}`` so the signed bytes are never re-serialised.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from updater.domain import strict_json
from updater.domain.errors import (
    MalformedDocument,
    RevokedSigningKey,
    SignatureError,
    SignatureInvalid,
    SignatureThresholdNotMet,
    UnknownSigningKey,
    Unsigned,
)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
MAX_SIGNATURES = 64


def keyid_of(public_raw: bytes) -> str:
    """The key id of a raw Ed25519 public key: SHA-256 hex of its 32 bytes."""
    return hashlib.sha256(public_raw).hexdigest()


def public_raw(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_key_to_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_key_from_pem(data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise MalformedDocument("private key file is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise MalformedDocument("private key file does not hold an Ed25519 key")
    return key


def is_keyid(value: object) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def signed_message(context: str, data: bytes) -> bytes:
    return b"corral-sig-v1\x00" + context.encode("ascii") + b"\x00" + data


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes

    def to_json(self) -> dict[str, str]:
        return {"keyid": self.keyid, "sig": self.sig.hex()}


def sign(private_key: Ed25519PrivateKey, context: str, data: bytes) -> Signature:
    """Sign ``data`` for ``context`` with ``private_key``."""
    return Signature(keyid_of(public_raw(private_key)), private_key.sign(signed_message(context, data)))


def parse_signatures(value: object, *, what: str) -> list[Signature]:
    """Validate a JSON signature list (as parsed) into :class:`Signature` objects."""
    if not isinstance(value, list):
        raise MalformedDocument(f"{what}: signatures must be a JSON list")
    if len(value) > MAX_SIGNATURES:
        raise MalformedDocument(f"{what}: more than {MAX_SIGNATURES} signatures")
    result = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"keyid", "sig"}:
            raise MalformedDocument(f"{what}: each signature must be an object with exactly keyid and sig")
        keyid, sig = item["keyid"], item["sig"]
        if not is_keyid(keyid) or not isinstance(sig, str) or _HEX128.fullmatch(sig) is None:
            raise MalformedDocument(
                f"{what}: signature entries need a hex key id and a 64-byte hex signature"
            )
        result.append(Signature(keyid, bytes.fromhex(sig)))
    return result


def parse_signature_list(data: bytes, *, what: str) -> list[Signature]:
    """Parse a detached signature file (``manifest.sig``)."""
    return parse_signatures(strict_json.loads_any(data, what=what), what=what)


def dump_signature_list(signatures: Iterable[Signature]) -> bytes:
    return strict_json.dumps([s.to_json() for s in signatures])


def make_envelope(payload: bytes, signatures: Iterable[Signature]) -> bytes:
    return strict_json.dumps(
        {
            "payload": base64.b64encode(payload).decode("ascii"),
            "signatures": [s.to_json() for s in signatures],
        }
    )


def open_envelope(
    data: bytes, *, what: str, error: type[MalformedDocument] = MalformedDocument
) -> tuple[bytes, list[Signature]]:
    """Split an envelope into the exact signed payload bytes and its signatures (nothing is verified yet)."""
    doc = strict_json.loads_object(data, what=what, error=error)
    if set(doc) != {"payload", "signatures"} or not isinstance(doc["payload"], str):
        raise error(f"{what}: expected an envelope with exactly 'payload' (base64) and 'signatures'")
    try:
        payload = base64.b64decode(doc["payload"].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise error(f"{what}: payload is not valid base64") from None
    try:
        signatures = parse_signatures(doc["signatures"], what=what)
    except MalformedDocument as exc:
        raise error(exc.message) from None
    return payload, signatures


def _verifies(public: bytes, signature: Signature, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature.sig, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_threshold(
    data: bytes,
    signatures: Iterable[Signature],
    *,
    context: str,
    keys: Mapping[str, bytes],
    threshold: int,
    revoked: Iterable[str] = (),
    what: str,
    failure: type[SignatureError] | None = None,
) -> frozenset[str]:
    """Check that at least ``threshold`` distinct, unrevoked keys in ``keys`` signed ``data`` for ``context``.

    Returns the key ids whose signatures verified. On failure raises the most telling reason, in this order:
    a signature by a trusted key that does not verify (:class:`SignatureInvalid`: the bytes were changed),
    no signature at all (:class:`Unsigned`), only revoked keys (:class:`RevokedSigningKey`), only unknown keys
    (:class:`UnknownSigningKey`), otherwise :class:`SignatureThresholdNotMet`. If ``failure`` is given, that
    class is raised instead, with the same message (used for licenses).
    """
    if threshold < 1:
        raise SignatureThresholdNotMet(f"{what}: threshold must be at least 1")
    revoked_set = frozenset(revoked)
    message = signed_message(context, data)
    sigs = list(signatures)
    valid: set[str] = set()
    invalid: set[str] = set()
    revoked_seen: set[str] = set()
    unknown: set[str] = set()
    for signature in sigs:
        if signature.keyid in revoked_set:
            revoked_seen.add(signature.keyid)
        elif signature.keyid not in keys:
            unknown.add(signature.keyid)
        elif _verifies(keys[signature.keyid], signature, message):
            valid.add(signature.keyid)
        else:
            invalid.add(signature.keyid)
    if len(valid) >= threshold:
        return frozenset(valid)
    error = _threshold_failure(
        what,
        threshold,
        valid=valid,
        invalid=invalid,
        revoked=revoked_seen,
        unknown=unknown,
        signed=bool(sigs),
    )
    if failure is not None:
        raise failure(error.message)
    raise error


def _threshold_failure(
    what: str,
    threshold: int,
    *,
    valid: set[str],
    invalid: set[str],
    revoked: set[str],
    unknown: set[str],
    signed: bool,
) -> SignatureError:
    counted = f"{len(valid)} valid of {threshold} required"
    if invalid:
        return SignatureInvalid(
            f"{what}: signature by trusted key {sorted(invalid)[0][:16]} does not match the stored bytes"
            f" (tampered or re-serialised); {counted}"
        )
    if not signed:
        return Unsigned(f"{what} carries no signature; {threshold} required")
    if revoked:
        return RevokedSigningKey(
            f"{what}: signed by revoked key {sorted(revoked)[0][:16]}, which never counts; {counted}"
        )
    if unknown and not valid:
        return UnknownSigningKey(f"{what}: signed only by keys the trusted keyring does not know; {counted}")
    return SignatureThresholdNotMet(f"{what}: {counted}")
