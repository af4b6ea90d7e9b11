"""Action ``corral.cloud.release_stage``: verify and stage a bundle (or find a staged release), install its
collection offline into a versioned path, and publish its node image to the boot service.

A thin wrapper (runs on the controller) around ``updater.services.rollouts.release`` (``stage_bundle`` /
``staged_release``), which stages through the one path every way in shares,
``updater.services.bundles.release_staging.stage_release`` (the installation's trust, the one verifier,
a carried keyring saved).
Documentation: ``plugins/modules/release_stage.py``. The entitlement key is read from its file by the
verifier and never appears in the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.plugins.action import ActionBase  # type: ignore[import-untyped]

try:
    from updater.domain.manifest import parse_manifest
    from updater.services.bundles import reader
    from updater.services.cluster.boot import BootServiceError, open_boot_service
    from updater.services.rollouts.release import RolloutRunnerError, stage_bundle, staged_release
except ImportError as error:  # pragma: no cover - exercised only on a controller without the package
    IMPORT_ERROR: ImportError | None = error
else:
    IMPORT_ERROR = None

ARGUMENT_SPEC: dict[str, Any] = {
    "bundle": {"type": "path"},
    "release": {"type": "str"},
    "trust_dir": {"type": "path", "default": "/var/lib/corral-updater/trust"},
    "staging_root": {"type": "path", "default": "/var/lib/corral/staging"},
    "releases_root": {"type": "path", "default": "/var/lib/corral/releases"},
    "installed_version": {"type": "str"},
    "node_count": {"type": "int", "required": True},
    "backend": {"type": "str", "default": "lab"},
    "lab": {"type": "str"},
    "lab_root": {"type": "path", "default": "/var/lib/corral-lab"},
}


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        if IMPORT_ERROR is not None:
            return {
                **result,
                "failed": True,
                "msg": f"corral.cloud.release_stage needs corral-updater: {IMPORT_ERROR}",
            }
        args = self.validate_argument_spec(
            argument_spec=ARGUMENT_SPEC, mutually_exclusive=[["bundle", "release"]]
        )[1]
        if not args["bundle"] and not args["release"]:
            return {
                **result,
                "failed": True,
                "msg": "give bundle (a bundle file) or release (a staged version)",
            }
        try:
            if self._task.check_mode:
                return {**result, "changed": False, "release": self._peek(args)}
            boot = open_boot_service(args["backend"], lab=args["lab"], lab_root=Path(args["lab_root"]))
            if args["bundle"]:
                info = stage_bundle(
                    Path(args["bundle"]),
                    trust_dir=Path(args["trust_dir"]),
                    staging_root=Path(args["staging_root"]),
                    releases_root=Path(args["releases_root"]),
                    installed_version=args["installed_version"] or None,
                    node_count=args["node_count"],
                    boot=boot,
                )
            else:
                info = staged_release(
                    args["release"],
                    staging_root=Path(args["staging_root"]),
                    releases_root=Path(args["releases_root"]),
                    boot=boot,
                )
        except (BootServiceError, RolloutRunnerError) as error:
            return {**result, "failed": True, "msg": str(error)}
        return {**result, "changed": info.newly_staged, "release": info.to_dict()}

    @staticmethod
    def _peek(args: dict[str, Any]) -> dict[str, Any]:
        """Check mode: the target version and image from the bundle's manifest, nothing verified or kept."""
        if args["release"]:
            return {"version": args["release"], "image_id": None}
        try:
            manifest = parse_manifest(reader.read_head(Path(args["bundle"])).manifest_bytes)
        except Exception as error:
            raise RolloutRunnerError(f"cannot read the bundle {args['bundle']}: {error}") from None
        return {"version": str(manifest.version), "image_id": manifest.image.sha256}
