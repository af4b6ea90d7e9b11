"""Verify a bundle file and stage it atomically: the one entry point for pulled and imported bundles alike.

* :func:`verify_bundle_file` runs every bundle and license check and keeps nothing.
* :func:`verify_and_stage` runs the same checks while streaming the payload into a temporary directory beside
  the destination, after checking free space; only when every check passed (and a delta was rebuilt into the
  exact image) is the directory fsynced and renamed to ``staging_root/<version>``. On any failure — a failed
  check, ENOSPC mid-way, an interrupted read — the temporary directory is removed: nothing is left behind.

A staged release looks like this::

    staging_root/1.3.0/manifest.json    exact signed bytes        (+ manifest.sig, keyring.json if carried)
    staging_root/1.3.0/payload/...      payload files as the manifest names them
    staging_root/1.3.0/image.tar        the node image (hard link to the payload file, or rebuilt delta)
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TypeVar

from updater.domain import delta
from updater.domain.bundle import KEYRING_NAME, MANIFEST_NAME, SIGNATURES_NAME, VerifiedBundle
from updater.domain.errors import (
    AlreadyStaged,
    DeltaInvalid,
    NotEnoughSpace,
    StagingWriteFailed,
    VerificationError,
)
from updater.domain.keyring import TrustStore
from updater.domain.manifest import Manifest, PayloadFile
from updater.domain.semver import Version, parse_version
from updater.services.bundles.reader import BaseImage, Installation, run_checks

_T = TypeVar("_T")
IMAGE_NAME = "image.tar"
DEFAULT_SPACE_MARGIN = 16 * 1024 * 1024


@dataclass(frozen=True)
class StagedRelease:
    """A verified release ready for the rolling update. Paths are inside ``path``."""

    version: Version
    path: Path
    verified: VerifiedBundle
    image: Path
    collection: Path
    service_package: Path
    notes: Path


def required_space(manifest: Manifest, margin: int = DEFAULT_SPACE_MARGIN) -> int:
    """Bytes staging needs: the payload, the image rebuilt from a delta, and a margin for metadata."""
    rebuilt = manifest.image.size if manifest.is_delta else 0
    return manifest.payload_size + rebuilt + margin


def free_space(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _as_version(value: Version | str | None) -> Version | None:
    return parse_version(value) if isinstance(value, str) else value


def _installation(
    *,
    trust: TrustStore,
    now: datetime,
    license_document: bytes | None,
    entitlement_key: bytes | None,
    installed_version: Version | str | None,
    node_count: int | None,
    base_images_dir: Path | None,
) -> Installation:
    return Installation(
        trust=trust,
        now=now,
        installed_version=_as_version(installed_version),
        node_count=node_count,
        base_images_dir=base_images_dir,
        license_document=license_document,
        entitlement_key=entitlement_key,
    )


def verify_bundle_file(
    bundle_path: Path,
    *,
    trust: TrustStore,
    now: datetime,
    license_document: bytes | None = None,
    entitlement_key: bytes | None = None,
    installed_version: Version | str | None = None,
    node_count: int | None = None,
    base_images_dir: Path | None = None,
) -> VerifiedBundle:
    """Run every bundle check (and every license check when ``license_document`` is given); keep nothing.

    ``trust`` is the installation's root + trusted keyring; a newer keyring carried in the bundle is used if
    it verifies (see ``VerifiedBundle.trust``). ``installed_version=None`` skips the upgrade-path check
    (vendor side, fresh installs); ``node_count=None`` skips the node-count check. An encrypted bundle needs
    ``license_document`` and ``entitlement_key``. A delta bundle needs its base image in ``base_images_dir``
    (``<sha256>.tar``); verify-only checks the base's presence and hash, staging also rebuilds the image.
    Raises the failed check's :class:`~updater.domain.errors.VerificationError`.
    """
    inst = _installation(
        trust=trust,
        now=now,
        license_document=license_document,
        entitlement_key=entitlement_key,
        installed_version=installed_version,
        node_count=node_count,
        base_images_dir=base_images_dir,
    )
    return run_checks(bundle_path, inst)


class _StagingSink:
    def __init__(self, staging_root: Path, margin: int) -> None:
        self.root = staging_root
        self.margin = margin
        self.tmp: Path | None = None
        self.dest: Path | None = None
        self.manifest: Manifest | None = None
        self.handles: list[BinaryIO] = []
        self.base: BaseImage | None = None

    def prepare(
        self,
        manifest: Manifest,
        manifest_bytes: bytes,
        signatures: bytes,
        keyring: bytes | None,
        base: BaseImage | None,
    ) -> None:
        self.base = base
        dest = self.root / str(manifest.version)
        if dest.exists():
            raise AlreadyStaged(f"release {manifest.version} is already staged at {dest}")
        need, have = required_space(manifest, self.margin), free_space(self.root)
        if have < need:
            raise NotEnoughSpace(f"not enough free space on {self.root}: need {need} bytes, have {have}")
        self.tmp = Path(tempfile.mkdtemp(prefix=f".staging-{manifest.version}-", dir=self.root))
        self.dest, self.manifest = dest, manifest
        for name, data in (
            (MANIFEST_NAME, manifest_bytes),
            (SIGNATURES_NAME, signatures),
            (KEYRING_NAME, keyring),
        ):
            if data is not None:
                with self._create(self.tmp / name) as handle:
                    handle.write(data)
                    self._sync(handle)

    def _create(self, path: Path) -> BinaryIO:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        return os.fdopen(fd, "wb")

    @staticmethod
    def _sync(handle: BinaryIO) -> None:
        handle.flush()
        os.fsync(handle.fileno())

    def open(self, entry: PayloadFile) -> BinaryIO:
        handle = self._create(_required(self.tmp) / entry.name)
        self.handles.append(handle)
        return handle

    def close(self, entry: PayloadFile, handle: BinaryIO) -> None:
        self._sync(handle)
        handle.close()
        self.handles.remove(handle)

    def finish_image(self) -> None:
        tmp, manifest = _required(self.tmp), _required(self.manifest)
        target = tmp / IMAGE_NAME
        base_sha = manifest.image.delta_base_sha256
        if base_sha is None:
            whole = _required(manifest.file_by_role("image"))
            os.link(tmp / whole.name, target)
            return
        entry = _required(manifest.file_by_role("image-delta"))
        delta_path = tmp / entry.name
        base = _required(self.base)
        with (
            delta_path.open("rb") as recipe,
            delta_path.open("rb") as literals,
            base.path.open("rb") as base_in,
        ):
            head = delta.read_delta_head(recipe, delta_size=entry.size)
            if head.base_sha256 != base_sha:
                raise DeltaInvalid("the delta was made over another base than the manifest names")
            literals.seek(head.literals_offset)
            with self._create(target) as out:
                delta.apply_delta(
                    head,
                    recipe=recipe,
                    literals=literals,
                    base=base_in,
                    base_index=base.index,
                    out=out,
                    expected_size=manifest.image.size,
                    expected_sha256=manifest.image.sha256,
                )
                self._sync(out)

    def commit(self) -> Path:
        tmp, dest = _required(self.tmp), _required(self.dest)
        for directory, _, _ in os.walk(tmp):
            _fsync_dir(Path(directory))
        try:
            os.rename(tmp, dest)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # another import of this version won the race
                raise AlreadyStaged(f"release {dest.name} was staged at {dest} meanwhile") from None
            raise
        _fsync_dir(self.root)
        self.tmp = None
        return dest

    def discard(self) -> None:
        for handle in self.handles:
            with contextlib.suppress(OSError):
                handle.close()
        self.handles.clear()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def _required(value: _T | None) -> _T:
    if value is None:  # a programming error: the sink's steps ran out of order
        raise RuntimeError("staging step called out of order")
    return value


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_and_stage(
    bundle_path: Path,
    *,
    trust: TrustStore,
    now: datetime,
    license_document: bytes,
    entitlement_key: bytes | None,
    installed_version: Version | str | None,
    node_count: int,
    base_images_dir: Path | None,
    staging_root: Path,
    space_margin: int = DEFAULT_SPACE_MARGIN,
) -> StagedRelease:
    """Run every bundle and license check on ``bundle_path`` and stage it atomically at
    ``staging_root/<version>``; the same function for pulled and imported (and encrypted) bundles.

    Free space is checked (statvfs) as soon as the manifest is trusted, before any payload is written:
    :class:`~updater.domain.errors.NotEnoughSpace` says "not enough free space on X: need N, have M". Any
    failed check raises its :class:`~updater.domain.errors.VerificationError`; an OS error while writing
    (e.g. ENOSPC) raises :class:`~updater.domain.errors.StagingWriteFailed`. Either way nothing is left in
    ``staging_root``. Callers that persist trust should store ``result.verified.trust.keyring.envelope``.
    """
    if not staging_root.is_dir():
        raise StagingWriteFailed(f"staging directory {staging_root} does not exist")
    inst = _installation(
        trust=trust,
        now=now,
        license_document=license_document,
        entitlement_key=entitlement_key,
        installed_version=installed_version,
        node_count=node_count,
        base_images_dir=base_images_dir,
    )
    sink = _StagingSink(staging_root, space_margin)
    try:
        verified = run_checks(bundle_path, inst, sink)
        sink.finish_image()
        dest = sink.commit()
    except VerificationError:
        sink.discard()
        raise
    except OSError as exc:
        sink.discard()
        reason = "no space left" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
        raise StagingWriteFailed(
            f"writing the staged release under {staging_root} failed ({reason}); nothing was kept"
        ) from None
    except BaseException:
        sink.discard()
        raise
    manifest = verified.manifest

    def path_of(role: str) -> Path:
        entry = manifest.file_by_role(role)
        if entry is None:  # pragma: no cover - the manifest parser requires every role
            raise StagingWriteFailed(f"manifest has no {role} file")
        return dest / entry.name

    return StagedRelease(
        version=manifest.version,
        path=dest,
        verified=verified,
        image=dest / IMAGE_NAME,
        collection=path_of("collection"),
        service_package=path_of("service"),
        notes=path_of("notes"),
    )
