"""One update channel as a TUF repository on disk (root, targets, snapshot, timestamp; consistent snapshots).

Layout of a channel directory, exactly as the server serves it::

    metadata/1.root.json  metadata/N.targets.json  metadata/N.snapshot.json  metadata/timestamp.json
    targets/<sha256>.<bundle file name>

Every change writes the new versioned files first and replaces ``timestamp.json`` last (atomically), so a
client that fetches during a publish sees either the old or the new repository state, never a mix.
The timestamp carries the snapshot's length and hashes, and the snapshot the targets' length and hashes, so a
swapped file is caught by its hash as well as by its version.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

# These packages re-export their classes without __all__, which mypy --strict does not count as an export.
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

TOP_LEVEL_ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
HASH_ALGORITHMS = ["sha256"]
_SERIALIZER = JSONSerializer(compact=False)


class RepositoryError(Exception):
    """The channel repository cannot be created or changed; the message says why."""


@dataclass(frozen=True)
class ExpiryPolicy:
    """How long each role's metadata stays valid. The timestamp is short: it is what defeats a freeze."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=30)
    snapshot: timedelta = timedelta(days=30)
    timestamp: timedelta = timedelta(days=1)

    def to_dict(self) -> dict[str, float]:
        return {role: getattr(self, role).total_seconds() for role in TOP_LEVEL_ROLES}

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> ExpiryPolicy:
        return cls(**{role: timedelta(seconds=float(data[role])) for role in TOP_LEVEL_ROLES})


class RoleKeys:
    """The four top-level signing keys (Ed25519), kept as PEM files with mode 0600 in one directory."""

    def __init__(self, signers: Mapping[str, CryptoSigner]) -> None:
        self.signers = dict(signers)

    @classmethod
    def generate(cls, key_dir: Path) -> RoleKeys:
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        signers: dict[str, CryptoSigner] = {}
        for role in TOP_LEVEL_ROLES:
            path = key_dir / f"{role}.pem"
            if path.exists():
                raise RepositoryError(f"{path} exists: refusing to overwrite a signing key")
            signer = CryptoSigner(Ed25519PrivateKey.generate())
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(signer.private_bytes)
            signers[role] = signer
        return cls(signers)

    @classmethod
    def load(cls, key_dir: Path) -> RoleKeys:
        signers: dict[str, CryptoSigner] = {}
        for role in TOP_LEVEL_ROLES:
            path = key_dir / f"{role}.pem"
            try:
                private_key = load_pem_private_key(path.read_bytes(), None)
            except FileNotFoundError:
                raise RepositoryError(
                    f"signing key {path} is missing (run `corral-update-server init`)"
                ) from None
            signers[role] = CryptoSigner(private_key)
        return cls(signers)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _expiry(now: datetime, delta: timedelta) -> datetime:
    # TUF metadata carries whole seconds; round up so a short expiry is never shortened.
    return (now + delta).replace(microsecond=0) + timedelta(seconds=1)


class ChannelRepository:
    """Create, publish to and re-sign one channel. Not for concurrent writers: callers hold :meth:`locked`."""

    def __init__(self, channel_dir: Path, keys: RoleKeys, expiry: ExpiryPolicy) -> None:
        self.dir = channel_dir
        self.metadata_dir = channel_dir / "metadata"
        self.targets_dir = channel_dir / "targets"
        self.keys = keys
        self.expiry = expiry

    # --- reading the current state -------------------------------------------------------------------------
    def _load(self, filename: str) -> Metadata[Any]:
        return Metadata.from_file(str(self.metadata_dir / filename))

    def timestamp(self) -> Metadata[Timestamp]:
        return self._load("timestamp.json")

    def snapshot(self) -> Metadata[Snapshot]:
        return self._load(f"{self.timestamp().signed.snapshot_meta.version}.snapshot.json")

    def targets(self) -> Metadata[Targets]:
        return self._load(f"{self.snapshot().signed.meta['targets.json'].version}.targets.json")

    def root_bytes(self) -> bytes:
        """The trusted root an installation is shipped with (the client's bootstrap)."""
        return (self.metadata_dir / "1.root.json").read_bytes()

    # --- writing -------------------------------------------------------------------------------------------
    def _sign_and_write(self, metadata: Metadata[Any], filename: str) -> bytes:
        metadata.signatures.clear()
        metadata.sign(self.keys.signers[metadata.signed.type])
        data = metadata.to_bytes(_SERIALIZER)
        _write_atomically(self.metadata_dir / filename, data)
        return data

    def create(self, *, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        if self.metadata_dir.exists():
            raise RepositoryError(f"{self.dir} already holds a channel repository")
        self.metadata_dir.mkdir(parents=True)
        self.targets_dir.mkdir(parents=True)
        root = Root(expires=_expiry(now, self.expiry.root), consistent_snapshot=True)
        for role in TOP_LEVEL_ROLES:
            root.add_key(self.keys.signers[role].public_key, role)
        self._sign_and_write(Metadata(root), "1.root.json")
        targets = Metadata(Targets(expires=_expiry(now, self.expiry.targets)))
        self._commit(targets, now=now)

    def _commit(self, targets: Metadata[Targets], *, now: datetime) -> None:
        """Write targets, then a snapshot naming it, then the timestamp naming the snapshot."""
        targets_bytes = self._sign_and_write(targets, f"{targets.signed.version}.targets.json")
        if (self.metadata_dir / "timestamp.json").exists():
            snapshot = self.snapshot()
            snapshot.signed.version += 1
        else:
            snapshot = Metadata(Snapshot())
        snapshot.signed.expires = _expiry(now, self.expiry.snapshot)
        snapshot.signed.meta["targets.json"] = MetaFile(
            version=targets.signed.version,
            length=len(targets_bytes),
            hashes={"sha256": hashlib.sha256(targets_bytes).hexdigest()},
        )
        snapshot_bytes = self._sign_and_write(snapshot, f"{snapshot.signed.version}.snapshot.json")
        self._write_timestamp(snapshot.signed.version, snapshot_bytes, now=now)

    def _write_timestamp(self, snapshot_version: int, snapshot_bytes: bytes, *, now: datetime) -> None:
        path = self.metadata_dir / "timestamp.json"
        version = Metadata[Timestamp].from_file(str(path)).signed.version + 1 if path.exists() else 1
        timestamp = Timestamp(
            version=version,
            expires=_expiry(now, self.expiry.timestamp),
            snapshot_meta=MetaFile(
                version=snapshot_version,
                length=len(snapshot_bytes),
                hashes={"sha256": hashlib.sha256(snapshot_bytes).hexdigest()},
            ),
        )
        self._sign_and_write(Metadata(timestamp), "timestamp.json")

    def refresh_timestamp(self, *, now: datetime | None = None) -> int:
        """Re-sign the timestamp with a new expiry (the online job that keeps a channel from freezing)."""
        now = now or datetime.now(UTC)
        snapshot_version = self.timestamp().signed.snapshot_meta.version
        snapshot_bytes = (self.metadata_dir / f"{snapshot_version}.snapshot.json").read_bytes()
        self._write_timestamp(snapshot_version, snapshot_bytes, now=now)
        return self.timestamp().signed.version

    def publish(self, bundle: Path, custom: Mapping[str, Any], *, now: datetime | None = None) -> TargetFile:
        """Add a bundle file as a target; ``custom`` (version, channel, release date...) is for the client."""
        now = now or datetime.now(UTC)
        name = bundle.name
        if not bundle.is_file():
            raise RepositoryError(f"{bundle} is not a file")
        targets = self.targets()
        if name in targets.signed.targets:
            raise RepositoryError(f"{name} is already published in this channel; a release is never replaced")
        target = TargetFile.from_file(name, str(bundle), HASH_ALGORITHMS)
        target.unrecognized_fields["custom"] = dict(custom)
        served = self.targets_dir / f"{target.hashes['sha256']}.{name}"
        tmp = served.with_name(f".{served.name}.tmp")
        try:
            shutil.copyfile(bundle, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, served)
        finally:
            tmp.unlink(missing_ok=True)
        targets.signed.targets[name] = target
        targets.signed.version += 1
        targets.signed.expires = _expiry(now, self.expiry.targets)
        self._commit(targets, now=now)
        return target

    @contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock so two publishes (or a publish and a timestamp refresh) never interleave."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
