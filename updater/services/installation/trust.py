"""The installation's trust directory (``home/trust``, or the ``trust_dir`` a playbook names): what it holds,
reading it into what the bundle verifier needs, and saving a newer keyring a verified bundle carried.

    trust-root.json   the vendor's root keys: the anchor, written by ``corral-updater init``, never replaced
    keyring.json      the vendor's root-signed keyring; replaced by a newer one a verified bundle carries
    license.json      the vendor-signed license
    entitlement-key   the license's secret key (0600): decrypts encrypted bundles, signs channel requests

Every path that stages a release (an import, a channel download, ``pull_and_stage``, the playbook's
``release_stage``) reads it with :func:`read_trust` through
:func:`updater.services.bundles.release_staging.stage_release`; the channel's set-up and the Overview read it
here too. A directory that cannot be used raises :class:`TrustUnreadable` with a message that says what to
do; each caller may wrap it into its own refusal.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from updater.config import ENTITLEMENT_KEY_FILE, KEYRING_FILE, LICENSE_FILE, TRUST_ROOT_FILE
from updater.domain.errors import VerificationError
from updater.domain.keyring import TrustStore, verify_keyring
from updater.domain.license import parse_entitlement_key

__all__ = [
    "ENTITLEMENT_KEY_FILE",
    "KEYRING_FILE",
    "LICENSE_FILE",
    "TRUST_ROOT_FILE",
    "InstalledTrust",
    "TrustUnreadable",
    "read_trust",
    "save_carried_keyring",
]


class TrustUnreadable(Exception):
    """The trust directory lacks a file, cannot be read, or holds something that does not verify."""


@dataclass(frozen=True)
class InstalledTrust:
    """What the installation trusts, as read from ``directory``: the verifier's inputs."""

    directory: Path
    store: TrustStore  # the trust root and the stored keyring, re-verified against it
    license_document: bytes = field(repr=False)
    entitlement_key: bytes | None = field(repr=False)  # None when no key is installed (plain bundles only)


def _read(trust_dir: Path, name: str) -> bytes:
    path = trust_dir / name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TrustUnreadable(
            f"the trust directory {trust_dir} lacks {name}: it needs {TRUST_ROOT_FILE}, {KEYRING_FILE} and "
            f"{LICENSE_FILE} (and {ENTITLEMENT_KEY_FILE} for encrypted bundles and the channel); "
            "corral-updater init --trust-root --keyring --license --entitlement-key writes them"
        ) from None
    except OSError as error:
        raise TrustUnreadable(f"cannot read {path}: {error.strerror or error}") from None


def read_trust(trust_dir: Path, *, now: datetime, entitlement_key: bool = True) -> InstalledTrust:
    """The trust root, keyring (re-verified against the root), license document and, if installed and
    ``entitlement_key`` is asked for, the parsed entitlement key. The license's own signature and dates are
    the verifier's checks, not this reader's. Raises :class:`TrustUnreadable`."""
    root, keyring = _read(trust_dir, TRUST_ROOT_FILE), _read(trust_dir, KEYRING_FILE)
    license_document = _read(trust_dir, LICENSE_FILE)
    key_text = None
    if entitlement_key and (trust_dir / ENTITLEMENT_KEY_FILE).exists():
        key_text = _read(trust_dir, ENTITLEMENT_KEY_FILE).decode("utf-8", "replace")
    try:
        store = TrustStore.load(root, keyring, now=now)
        key = parse_entitlement_key(key_text) if key_text is not None else None
    except VerificationError as error:
        raise TrustUnreadable(f"the trust directory {trust_dir} is not valid: {error}") from None
    return InstalledTrust(trust_dir, store, license_document, key)


def save_carried_keyring(installed: InstalledTrust, verified: TrustStore) -> bool:
    """Store the keyring a bundle carried once the bundle verified (``verified`` is the trust it verified
    under); True if ``keyring.json`` was replaced.

    Nothing is written when the bundle carried no newer keyring. The file is replaced atomically (written
    beside it, fsynced, renamed) under an ``flock`` on the directory, and only when the new keyring's signed
    version is above the stored one's: two stagings finishing together never roll the stored keyring back.
    """
    envelope = verified.keyring.envelope
    if envelope == installed.store.keyring.envelope:
        return False
    path = installed.directory / KEYRING_FILE
    with _locked(installed.directory):
        try:
            stored = verify_keyring(
                path.read_bytes(), installed.store.root, now=datetime.now(UTC), allow_expired=True
            )
        except (OSError, VerificationError):
            stored = None  # unreadable now: the verified keyring is certainly better than nothing
        if stored is not None and stored.version >= verified.keyring.version:
            return False
        _replace_atomically(path, envelope)
    return True


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _replace_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
