"""The release a rollout runs: stage its bundle the way every path does
(:func:`updater.services.bundles.release_staging.stage_release`: the one verifier, and a newer keyring the
bundle carries saved in the trust directory), install the release's collection offline into
``releases_root/<version>/collections`` (the per-node plays run from there: docs/update.md says why), and
publish its node image to the boot service. Behind the ``corral.cloud.release_stage`` action and the worker.

Nothing here prints or returns a secret: the entitlement key is read from its file and handed to the verifier.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from updater.domain.errors import VerificationError
from updater.domain.manifest import Manifest, parse_manifest
from updater.services.bundles import reader
from updater.services.bundles.release_staging import stage_release
from updater.services.bundles.staging import IMAGE_NAME
from updater.services.cluster.boot import BootService
from updater.services.installation.trust import TrustUnreadable

COLLECTION_SUBPATH = ("ansible_collections", "corral", "cloud")


class RolloutRunnerError(RuntimeError):
    """A controller-side step failed; ``str()`` is a complete message for the operator."""


# --- the release --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReleaseInfo:
    version: str
    staged_path: Path
    image_id: str
    collections_path: Path  # put first in ANSIBLE_COLLECTIONS_PATH for the per-node plays
    newly_staged: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "staged_path": str(self.staged_path),
            "image_id": self.image_id,
            "collections_path": str(self.collections_path),
            "newly_staged": self.newly_staged,
        }


def _manifest_of_bundle(bundle: Path) -> Manifest:
    try:
        return parse_manifest(reader.read_head(bundle).manifest_bytes)
    except VerificationError as error:
        raise RolloutRunnerError(f"{bundle} is not a Corral bundle: {error}") from None
    except OSError as error:
        raise RolloutRunnerError(f"cannot read the bundle {bundle}: {error.strerror or error}") from None


def _staged_manifest(staging_root: Path, version: str) -> tuple[Path, Manifest]:
    staged = staging_root / version
    try:
        raw = (staged / "manifest.json").read_bytes()
    except FileNotFoundError:
        raise RolloutRunnerError(
            f"release {version} is not staged in {staging_root}: run with -e corral_bundle=FILE to stage it"
        ) from None
    try:
        return staged, parse_manifest(raw)
    except VerificationError as error:
        raise RolloutRunnerError(f"the staged manifest of {version} is not valid: {error}") from None


def _ansible_galaxy() -> str:
    beside = Path(sys.executable).with_name("ansible-galaxy")
    found = str(beside) if beside.exists() else shutil.which("ansible-galaxy")
    if found is None:
        raise RolloutRunnerError("ansible-galaxy is not installed (it comes with ansible-core)")
    return found


def install_collection(tarball: Path, releases_root: Path, version: str) -> Path:
    """Install the release's collection offline into ``releases_root/<version>/collections``, atomically.

    Installed once: a second call finds it. A failed install leaves nothing behind.
    """
    target = releases_root / version / "collections"
    if (target.joinpath(*COLLECTION_SUBPATH) / "MANIFEST.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".collections-", dir=target.parent))
    try:
        result = subprocess.run(
            [
                _ansible_galaxy(),
                "collection",
                "install",
                "--offline",
                "--force",
                "-p",
                str(work),
                str(tarball),
            ],
            capture_output=True,
            stdin=subprocess.DEVNULL,  # ansible refuses the non-blocking stdin an action plugin's process has
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
        )
        if result.returncode != 0 or not (work.joinpath(*COLLECTION_SUBPATH) / "MANIFEST.json").is_file():
            detail = (result.stderr.strip() or result.stdout.strip())[-1500:]
            raise RolloutRunnerError(
                f"installing the collection of release {version} from {tarball} failed: {detail}"
            )
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _publish(
    staged: Path, manifest: Manifest, releases_root: Path, boot: BootService, newly: bool
) -> ReleaseInfo:
    version = str(manifest.version)
    collection = manifest.file_by_role("collection")
    if collection is None:  # pragma: no cover - the manifest parser requires it
        raise RolloutRunnerError(f"release {version} has no collection")
    collections = install_collection(staged / collection.name, releases_root, version)
    try:
        image_id = boot.publish_image(staged / IMAGE_NAME, manifest.image.sha256)
    except RuntimeError as error:
        raise RolloutRunnerError(str(error)) from None
    return ReleaseInfo(version, staged, image_id, collections, newly)


def stage_bundle(
    bundle: Path,
    *,
    trust_dir: Path,
    staging_root: Path,
    releases_root: Path,
    installed_version: str | None,
    node_count: int,
    boot: BootService,
    now: datetime | None = None,
) -> ReleaseInfo:
    """Verify and stage ``bundle`` (the one verifier), install its collection, publish its image.

    A bundle whose release is already staged is not staged again: its manifest must be byte for byte the
    staged one (so it is the bundle verified then), and the rest (install, publish) is idempotent.
    """
    now = now or datetime.now(UTC)
    if not bundle.is_file():
        raise RolloutRunnerError(f"bundle {bundle} not found")
    manifest = _manifest_of_bundle(bundle)
    version = str(manifest.version)
    if (staging_root / version).exists():
        staged, staged_manifest = _staged_manifest(staging_root, version)
        if staged_manifest != manifest:
            raise RolloutRunnerError(
                f"release {version} is already staged from another bundle (different manifest): remove "
                f"{staged} or use -e corral_release={version}"
            )
        return _publish(staged, staged_manifest, releases_root, boot, newly=False)
    staging_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        result = stage_release(
            bundle,
            trust_dir=trust_dir,
            now=now,
            installed_version=installed_version,
            node_count=node_count,
            base_images_dir=None,
            staging_root=staging_root,
        )
    except TrustUnreadable as error:
        raise RolloutRunnerError(str(error)) from None
    except VerificationError as error:
        raise RolloutRunnerError(f"bundle {bundle} refused ({error.check}): {error.message}") from None
    return _publish(result.path, result.verified.manifest, releases_root, boot, newly=True)


def staged_release(
    version: str, *, staging_root: Path, releases_root: Path, boot: BootService
) -> ReleaseInfo:
    """An already staged release (``-e corral_release=<version>``): install and publish are idempotent, and
    publishing re-checks the image's SHA-256 against the signed manifest."""
    staged, manifest = _staged_manifest(staging_root, version)
    return _publish(staged, manifest, releases_root, boot, newly=False)
