"""The server's license registry and its access policy (which license may fetch what, and why not).

The registry keeps, per license, the signed license document (re-verified against the vendor keyring on every
request, so expiry is judged at request time), the *derived* request key (never the raw entitlement key) and
whether the vendor revoked it. One JSON file per license, mode 0600, read on every request so that a
revocation takes effect at once.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from updater.domain.errors import VerificationError
from updater.domain.keyring import Keyring
from updater.domain.license import License, check_channel, check_release_date, verify_license

_LICENSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class LicenseRefused(Exception):
    """A license may not fetch this; ``reason`` is a stable short name, the message is for humans."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class LicenseRecord:
    """What the server keeps per license: the signed document, the derived request key, a revocation."""

    license_id: str
    document: bytes
    request_key: bytes
    revoked: str | None = None  # the reason, when revoked

    def to_json(self) -> dict[str, Any]:
        return {
            "license_id": self.license_id,
            "document": base64.b64encode(self.document).decode("ascii"),
            "request_key": self.request_key.hex(),
            "revoked": self.revoked,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LicenseRecord:
        return cls(
            license_id=data["license_id"],
            document=base64.b64decode(data["document"]),
            request_key=bytes.fromhex(data["request_key"]),
            revoked=data["revoked"],
        )


def check_access(
    record: LicenseRecord,
    keyring: Keyring,
    *,
    channel: str,
    now: datetime,
    release_date: date | None = None,
) -> License:
    """Revoked, then the license's own checks (signature, validity dates, channel, updates-until).

    The license checks are part A's (``updater.domain.license``), so the server and an installation judge a
    license the same way; their failure names become the refusal's reason.
    """
    if record.revoked is not None:
        raise LicenseRefused("license-revoked", f"license {record.license_id} was revoked: {record.revoked}")
    try:
        lic = verify_license(record.document, keyring, now=now)
        check_channel(lic, channel)
        if release_date is not None:
            check_release_date(lic, release_date)
    except VerificationError as error:
        raise LicenseRefused(error.check, error.message) from None
    return lic


class LicenseRegistry:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def _path(self, license_id: str) -> Path:
        if not _LICENSE_ID.fullmatch(license_id):
            raise ValueError(f"{license_id!r} is not a valid license id")
        return self.dir / f"{license_id}.json"

    def get(self, license_id: str) -> LicenseRecord | None:
        try:
            data = json.loads(self._path(license_id).read_text())
        except FileNotFoundError:
            return None
        return LicenseRecord.from_json(data)

    def _write(self, record: LicenseRecord) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".license.")  # mkstemp creates it 0600
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(record.to_json(), handle, indent=2)
            os.replace(tmp, self._path(record.license_id))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def add(self, record: LicenseRecord) -> None:
        existing = self.get(record.license_id)
        if existing is not None and existing.revoked is not None:
            raise ValueError(f"license {record.license_id} was revoked; a revoked license cannot be re-added")
        self._write(record)

    def revoke(self, license_id: str, reason: str) -> LicenseRecord:
        record = self.get(license_id)
        if record is None:
            raise ValueError(f"no license {license_id} on this server")
        revoked = replace(record, revoked=reason or f"revoked on {datetime.now(UTC).date().isoformat()}")
        self._write(revoked)
        return revoked
