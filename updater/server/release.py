"""What the channel says about a release: taken from the bundle's own signed manifest, never typed in.

Publishing checks the manifest's release signatures with part A's verifier (the same threshold, keyring and
carried-keyring rules an installation applies), so the server never publishes a bundle an installation would
refuse for its signature. The payload is not re-hashed here: TUF's target hash pins the exact file, and every
installation runs all of the bundle checks on it before anything is staged.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from updater.domain.bundle import effective_trust, verify_manifest
from updater.domain.keyring import TrustStore
from updater.domain.signing import dump_signature_list
from updater.services.bundles.reader import read_head


def release_info(bundle: Path, trust: TrustStore, *, now: datetime) -> dict[str, Any]:
    """Verify ``bundle``'s signed manifest; return the TUF custom fields the client lists and filters on."""
    head = read_head(bundle)
    keyring = effective_trust(trust, head.keyring, now=now).keyring
    manifest, _signers = verify_manifest(
        head.manifest_bytes, dump_signature_list(head.signatures), keyring, now=now
    )
    return {
        "version": str(manifest.version),
        "channel": manifest.channel,
        "release_date": manifest.release_date.isoformat(),
        "upgrade_from": str(manifest.upgrade_from),
        "delta_base_sha256": manifest.image.delta_base_sha256,
        "image_sha256": manifest.image.sha256,
    }
