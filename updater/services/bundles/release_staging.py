"""Stage a release for this installation: the one function every path that stages a bundle calls.

:func:`stage_release` reads the installation's trust directory
(:func:`updater.services.installation.trust.read_trust`), runs the one verifier and atomic staging
(:func:`updater.services.bundles.staging.verify_and_stage`) and, only when the bundle verified and was staged,
saves the newer keyring it carried (:func:`updater.services.installation.trust.save_carried_keyring`), so the
next bundle, signed by a rotated-in key, verifies. The callers keep only their own job: the import its
spool, lock and record; the channel download its progress and resume; ``pull_and_stage`` the channel; the
playbook's ``release_stage`` the collection install and image publication.

It lives beside, not inside, :mod:`~updater.services.bundles.staging`: that module verifies and stages under
whatever trust it is handed (``corral-bundle verify`` and the vendor's tools use it with no installation at
all); this one knows the installation's trust directory.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from updater.domain.errors import StagingWriteFailed
from updater.domain.semver import Version
from updater.services.bundles.staging import StagedRelease, verify_and_stage
from updater.services.installation.trust import read_trust, save_carried_keyring


def stage_release(
    bundle: Path,
    *,
    trust_dir: Path,
    now: datetime,
    installed_version: Version | str | None,
    node_count: int,
    base_images_dir: Path | None,
    staging_root: Path,
) -> StagedRelease:
    """Verify ``bundle`` against the trust in ``trust_dir``, stage it at ``staging_root/<version>`` and keep
    the newer keyring it carried.

    Raises :class:`~updater.services.installation.trust.TrustUnreadable` when the trust directory cannot be
    used (nothing read further), or the failed check's :class:`~updater.domain.errors.VerificationError`
    (including :class:`~updater.domain.errors.StagingWriteFailed`): then nothing is staged and the trust
    directory is untouched. A release is never left staged without the keyring it was verified under saved.
    """
    installed = read_trust(trust_dir, now=now)
    staged = verify_and_stage(
        bundle,
        trust=installed.store,
        now=now,
        license_document=installed.license_document,
        entitlement_key=installed.entitlement_key,
        installed_version=installed_version,
        node_count=node_count,
        base_images_dir=base_images_dir,
        staging_root=staging_root,
    )
    try:
        save_carried_keyring(installed, staged.verified.trust)
    except OSError as error:
        shutil.rmtree(staged.path, ignore_errors=True)
        raise StagingWriteFailed(
            f"saving the keyring release {staged.version} carried to {trust_dir} failed "
            f"({error.strerror or error}); nothing was kept"
        ) from None
    return staged
