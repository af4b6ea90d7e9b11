"""Importing an uploaded bundle (air-gapped sites): spool, one import at a time, verify and stage, record.

The web app, the API and ``corral-updater import`` all go through here:

1. :func:`spool_file` gives the upload a private file under ``home/imports/`` (mode 0600); the upload is
   streamed into it, never held in memory.
2. :func:`begin` takes the import lock and moves the spooled file to ``imports/<id>.bundle``. The lock is
   ``imports/lock.json``, linked into place whole and flocked (never seen empty), naming its holder (who,
   which file, since when); a second import gets :class:`ImportConflict`. Whoever is working on the import
   (the web thread while it hands over, the worker while it stages) also holds an ``flock`` on it, so a lock
   whose holder died is found stale and taken over instead of blocking imports for ever.
3. :func:`stage` (the Celery task ``corral.stage_upload``, or the CLI directly) stages it the way every path
   does, :func:`updater.services.bundles.release_staging.stage_release` (the one verifier, and a newer keyring
   the bundle carries saved), and records a ``releases`` row with one check per verification check: a
   passing bundle is staged under ``home/staging/<version>``; a failing one is kept as a failed import
   (never as a release: it reserves no version) and nothing is staged. Either way the spool file is
   removed and the lock released.

Progress and the result of each import are kept in ``imports/<id>.json`` for the page and the API to poll.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from updater.config import ServiceConfig
from updater.domain import aead
from updater.domain.bundle import MANIFEST_NAME
from updater.domain.errors import VerificationError
from updater.domain.filenames import display_name
from updater.domain.inventory import InventoryError
from updater.domain.manifest import parse_manifest
from updater.domain.tarformat import BLOCK, parse_header
from updater.services import filelocks
from updater.services.accounts import audit
from updater.services.bundles import reader
from updater.services.bundles.release_staging import stage_release
from updater.services.bundles.staging import StagedRelease
from updater.services.installation.overview import load_inventory
from updater.services.installation.trust import TrustUnreadable
from updater.store import queries
from updater.store.db import transaction
from updater.store.models import Outcome, Release, ReleaseCheck, ReleaseSource

IMPORTS_DIR = "imports"
LOCK_NAME = "lock.json"
# Reads of the lock file while its holder rewrites it (10 ms apart) before it is reported as "starting".
LOCK_READ_ATTEMPTS = 20
# A queued import the worker has not taken within this time is abandoned (its task expires at the same time).
QUEUE_GRACE_SECONDS = 900
MAX_NOTES_BYTES = 64 * 1024
ACTION = "release.import"


class ImportRefused(Exception):
    """The upload cannot be imported (not a bundle, empty, no such import, installation not set up)."""


class ImportConflict(Exception):
    """Another import holds the lock; ``holder`` says who, which file and since when."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"another import is running: {holder}")
        self.holder = holder


# --- where things live --------------------------------------------------------------------------------------


def imports_dir(config: ServiceConfig) -> Path:
    path = config.home / IMPORTS_DIR
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def staging_root(config: ServiceConfig) -> Path:
    """Where releases are staged (``home/staging``, shared with the channel's downloads)."""
    path = config.staging_dir
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def spool_path(config: ServiceConfig, import_id: str) -> Path:
    return imports_dir(config) / f"{_checked_id(import_id)}.bundle"


def _status_path(config: ServiceConfig, import_id: str) -> Path:
    return imports_dir(config) / f"{_checked_id(import_id)}.json"


def _checked_id(import_id: str) -> str:
    # Ids come back from URLs: only our own shape, so a path can never be built from anything else.
    if not (
        import_id.startswith("imp-") and len(import_id) <= 64 and import_id[4:].replace("-", "").isalnum()
    ):
        raise ImportRefused(f"no import {import_id!r}")
    return import_id


def _new_id(now: datetime) -> str:
    return f"imp-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def spool_file(config: ServiceConfig) -> tuple[Path, Any]:
    """A new private file for an upload to stream into: ``(path, open binary handle)``."""
    directory = imports_dir(config)
    path = directory / f"upload-{secrets.token_hex(8)}.part"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return path, os.fdopen(fd, "w+b")


# --- status of one import -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class ImportStatus:
    """Where one import is: ``queued`` → ``staging`` → ``staged`` or ``failed``."""

    import_id: str
    actor: str
    filename: str
    size: int
    state: str
    started_at: str
    finished_at: str | None = None
    version: str | None = None
    message: str = ""
    checks: tuple[CheckOutcome, ...] = field(default=())

    @property
    def done(self) -> bool:
        return self.state in ("staged", "failed")

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [asdict(c) for c in self.checks]
        data["done"] = self.done
        return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def _save_status(config: ServiceConfig, status: ImportStatus) -> ImportStatus:
    data = status.as_json()
    del data["done"]
    _write_json(_status_path(config, status.import_id), data)
    return status


def read_status(config: ServiceConfig, import_id: str) -> ImportStatus:
    try:
        data = json.loads(_status_path(config, import_id).read_text())
    except FileNotFoundError:
        raise ImportRefused(f"no import {import_id!r}") from None
    checks = tuple(CheckOutcome(**c) for c in data.pop("checks"))
    return ImportStatus(**data, checks=checks)


# --- the lock -----------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lock_path(config: ServiceConfig) -> Path:
    return imports_dir(config) / LOCK_NAME


def describe_holder(holder: dict[str, Any]) -> str:
    return (
        f"import {holder.get('import_id')} of {holder.get('filename')!r} by {holder.get('actor')} "
        f"since {holder.get('since')} ({holder.get('phase')})"
    )


def lock_holder(config: ServiceConfig) -> dict[str, Any] | None:
    """Who holds the import lock (``import_id``, ``actor``, ``filename``, ``since``, ``phase``), or None."""
    # The holder rewrites the file in place when its phase changes (the flock stays on the file): a read in
    # that instant sees it empty or half-written, so it is read again for a moment before giving up.
    for attempt in range(LOCK_READ_ATTEMPTS):
        try:
            data = json.loads(_lock_path(config).read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            if attempt + 1 < LOCK_READ_ATTEMPTS:
                time.sleep(0.01)
            continue
        return data if isinstance(data, dict) else None
    return {"import_id": "?", "actor": "?", "filename": "?", "since": "?", "phase": "starting"}


def _is_stale(config: ServiceConfig, handle: Any, holder: dict[str, Any] | None, now: datetime) -> bool:
    """A lock nobody holds an flock on is stale unless it is a fresh hand-over waiting for the worker."""
    if not filelocks.try_lock(handle):
        return False  # a live web thread or worker is on it
    if holder is None or holder.get("phase") != "queued":
        return True  # being uploaded or staged, yet its process is gone
    try:
        since = datetime.fromisoformat(str(holder["since_queued"]))
    except (KeyError, ValueError):
        return True
    return (now - since).total_seconds() > QUEUE_GRACE_SECONDS


def _abandon(config: ServiceConfig, holder: dict[str, Any] | None, now: datetime) -> None:
    if holder is None:
        return
    import_id = str(holder.get("import_id", ""))
    with contextlib.suppress(ImportRefused):
        spool_path(config, import_id).unlink(missing_ok=True)
        status = read_status(config, import_id)
        if not status.done:
            _save_status(
                config,
                replace(
                    status,
                    state="failed",
                    finished_at=_iso(now),
                    message="abandoned: its process stopped before it finished (nothing was staged)",
                ),
            )


def _take_lock(config: ServiceConfig, holder: dict[str, Any], now: datetime) -> Any:
    """Create the lock file naming ``holder`` and flock it; the open handle keeps the flock."""
    path = _lock_path(config)
    for _ in range(2):
        try:
            return _create_lock(path, holder)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError), path.open("rb") as existing:
                current = lock_holder(config)
                if not _is_stale(config, existing, current, now):
                    raise ImportConflict(describe_holder(current or {})) from None
                if os.fstat(existing.fileno()).st_ino == os.stat(path).st_ino:
                    _abandon(config, current, now)
                    path.unlink()
            continue
    holder_now = lock_holder(config)
    raise ImportConflict(describe_holder(holder_now or {}))


def _create_lock(path: Path, holder: dict[str, Any]) -> Any:
    """The lock file at ``path``, appearing already flocked and naming ``holder`` (FileExistsError if taken).

    Written and flocked under a private name first, then linked into place: a lock created empty and
    filled afterwards was read in between by a second import (an empty holder, "import ? of '?'"), and
    one that came before the flock would have judged it stale and removed it.
    """
    return filelocks.create_locked(path, json.dumps(holder).encode())


def _rewrite_lock(handle: Any, holder: dict[str, Any]) -> None:
    filelocks.rewrite(handle, json.dumps(holder).encode())


def _release_lock(config: ServiceConfig, import_id: str) -> None:
    holder = lock_holder(config)
    if holder is not None and holder.get("import_id") == import_id:
        _lock_path(config).unlink(missing_ok=True)


# --- starting an import -------------------------------------------------------------------------------------


def check_looks_like_bundle(path: Path) -> None:
    """Refuse at once a file that is not even shaped like a bundle (the verifier decides the rest)."""
    with path.open("rb") as handle:
        head = handle.read(BLOCK)
    if not head:
        raise ImportRefused("the uploaded file is empty: choose a Corral bundle (.bundle)")
    if aead.is_encrypted(head):
        return
    try:
        member = parse_header(head) if len(head) == BLOCK else None
    except VerificationError as error:
        raise ImportRefused(f"the uploaded file is not a Corral bundle ({error.message})") from None
    if member is None or member.name != MANIFEST_NAME:
        raise ImportRefused(
            f"the uploaded file is not a Corral bundle (it does not start with {MANIFEST_NAME})"
        )


@dataclass
class Ticket:
    """An import that holds the lock until :meth:`hand_over` (to the worker) or :meth:`cancel`."""

    config: ServiceConfig
    status: ImportStatus
    _handle: Any

    @property
    def import_id(self) -> str:
        return self.status.import_id

    def hand_over(self, *, now: datetime | None = None) -> None:
        """Mark the import queued for the worker and let go of the flock (the lock file stays)."""
        holder = lock_holder(self.config) or {}
        _rewrite_lock(self._handle, {**holder, "phase": "queued", "since_queued": _iso(now or _now())})
        self._close()

    def cancel(self, message: str) -> None:
        """Give up before staging: the spool file goes, the lock is released, the status says why."""
        spool_path(self.config, self.import_id).unlink(missing_ok=True)
        _save_status(
            self.config, replace(self.status, state="failed", finished_at=_iso(_now()), message=message)
        )
        _release_lock(self.config, self.import_id)
        self._close()

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def begin(
    config: ServiceConfig, upload: Path, *, actor: str, filename: str, now: datetime | None = None
) -> Ticket:
    """Take the import lock for the spooled ``upload`` and move it to ``imports/<id>.bundle``.

    Raises :class:`ImportRefused` for a file that is not shaped like a bundle and :class:`ImportConflict`
    while another import runs; in both cases ``upload`` is removed and nothing else changes.
    """
    moment = now or _now()
    safe_name = display_name(filename)  # sent by the client: never kept or shown with control characters
    try:
        check_looks_like_bundle(upload)
        import_id = _new_id(moment)
        holder = {
            "import_id": import_id,
            "actor": actor,
            "filename": safe_name,
            "since": _iso(moment),
            "phase": "uploaded",
        }
        handle = _take_lock(config, holder, moment)
    except BaseException:
        upload.unlink(missing_ok=True)
        raise
    try:
        os.replace(upload, spool_path(config, import_id))
        status = ImportStatus(
            import_id=import_id,
            actor=actor,
            filename=safe_name,
            size=spool_path(config, import_id).stat().st_size,
            state="queued",
            started_at=_iso(moment),
        )
        _save_status(config, status)
    except BaseException:
        upload.unlink(missing_ok=True)
        _release_lock(config, import_id)
        handle.close()
        raise
    return Ticket(config, status, handle)


# --- verify, stage and record -------------------------------------------------------------------------------


def _node_count(config: ServiceConfig) -> int:
    if not config.inventory_path:
        raise ImportRefused(
            "no inventory configured (inventory_path in updater.json): the node count is checked"
        )
    try:
        return len(load_inventory(config.inventory_path).nodes)
    except (InventoryError, OSError) as error:
        raise ImportRefused(f"inventory: {error}") from None


def _details(staged: StagedRelease, installed: str | None) -> dict[str, str]:
    verified, manifest = staged.verified, staged.verified.manifest
    lic = verified.license
    return {
        "decryption": f"decrypted with the entitlement key of license {verified.encrypted_to}",
        "keyring": f"trusted keyring version {verified.trust.keyring.version}",
        "signature-threshold": "signed by keys " + ", ".join(sorted(k[:16] for k in verified.signed_by)),
        "manifest": f"corral {manifest.version}, channel {manifest.channel}, of {manifest.release_date}",
        "upgrade-path": f"{installed} → {manifest.version} is an allowed upgrade ({manifest.upgrade_from})",
        "license": f"license {lic.license_id} for {lic.customer}" if lic else "license verified",
        "entitlement-key": "the installed entitlement key matches the license",
        "license-entitlement": "channel, node count and update period are within the license",
        "delta-base": "the delta's base image is present",
        "payload": f"{len(manifest.files)} files, {manifest.payload_size} bytes, every SHA-256 as listed",
    }


def _unverified_head(path: Path) -> tuple[str, str, Any] | None:
    """Version, channel, date a plain bundle's (unverified) manifest claims: where a failure is filed."""
    try:
        manifest = parse_manifest(reader.read_head(path).manifest_bytes)
    except (VerificationError, OSError):
        return None
    return str(manifest.version), manifest.channel, manifest.release_date


def _read_notes(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return handle.read(MAX_NOTES_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""


def _record(
    db: Session,
    *,
    version: str,
    channel: str,
    release_date: Any,
    checks: list[CheckOutcome],
    staged: StagedRelease | None,
) -> None:
    release = queries.find_release(db, version)
    results = [queries.CheckResult(c.name, c.passed, c.detail) for c in checks]
    if release is None:
        queries.add_release(
            db,
            version=version,
            channel=channel,
            release_date=release_date,
            source=ReleaseSource.IMPORTED,
            notes=_read_notes(staged.notes) if staged else "",
            staged_path=str(staged.path) if staged else None,
            checks=results,
        )
        return
    _replace_checks(db, release, results)
    if staged is not None:
        release.staged_path = str(staged.path)
        release.notes = _read_notes(staged.notes) or release.notes


def _replace_checks(db: Session, release: Release, results: list[queries.CheckResult]) -> None:
    release.checks.clear()
    db.flush()  # the unique (release, name) pairs must be gone before the new ones are inserted
    release.checks.extend(ReleaseCheck(name=c.name, passed=c.passed, detail=c.detail) for c in results)
    db.flush()


@contextlib.contextmanager
def _worker_lock(config: ServiceConfig, import_id: str) -> Iterator[None]:
    """Hold the import's lock (flock) while staging; refuse if the lock is no longer this import's."""
    path = _lock_path(config)
    try:
        handle = path.open("r+b")
    except FileNotFoundError:
        raise ImportRefused(f"import {import_id} no longer holds the import lock (abandoned)") from None
    with handle:
        if not filelocks.try_lock(handle):
            raise ImportRefused(f"import {import_id}: another process holds the import lock")
        holder = lock_holder(config) or {}
        if holder.get("import_id") != import_id:
            raise ImportRefused(f"import {import_id} no longer holds the import lock (abandoned)")
        _rewrite_lock(handle, {**holder, "phase": "staging"})
        try:
            yield
        finally:
            _release_lock(config, import_id)


def stage(
    config: ServiceConfig, sessions: sessionmaker[Session], import_id: str, *, now: datetime | None = None
) -> ImportStatus:
    """Verify and stage an import's spooled bundle and record the result (the ``corral.stage_upload`` task).

    Returns the final status (``staged`` or ``failed``); never leaves the spool file or a partial staging.
    """
    status = read_status(config, import_id)
    if status.done:
        return status  # a repeated task: the result is already recorded
    spool = spool_path(config, import_id)
    try:
        with _worker_lock(config, import_id):
            status = _save_status(config, replace(status, state="staging"))
            try:
                status = _verify_stage_record(config, sessions, status, spool, now or _now())
            finally:
                spool.unlink(missing_ok=True)
    except ImportRefused as error:
        spool.unlink(missing_ok=True)
        status = replace(status, state="failed", message=str(error))
    status = _save_status(config, replace(status, finished_at=_iso(_now())))
    audit.record_separately(
        sessions,
        actor=status.actor,
        action=ACTION,
        target=status.version or status.filename,
        outcome=Outcome.OK if status.state == "staged" else Outcome.FAILED,
        detail=f"{status.import_id}: {status.message}",
    )
    if status.state == "failed":
        _keep_failed_import(sessions, status)
    return status


def _keep_failed_import(sessions: sessionmaker[Session], status: ImportStatus) -> None:
    with transaction(sessions) as db:
        queries.add_failed_import(
            db,
            import_id=status.import_id,
            filename=status.filename,
            actor=status.actor,
            claimed_version=status.version,
            failed_check=status.checks[0].name if status.checks else None,
            message=status.message,
        )


def _verify_stage_record(
    config: ServiceConfig, sessions: sessionmaker[Session], status: ImportStatus, spool: Path, now: datetime
) -> ImportStatus:
    head = _unverified_head(spool)  # read before staging: the spool file is gone afterwards
    node_count = _node_count(config)
    with transaction(sessions) as db:
        installed = queries.installed_release(db)
        installed_version = installed.version if installed else None
    try:
        staged = stage_release(
            spool,
            trust_dir=config.trust_dir,
            now=now,
            installed_version=installed_version,
            node_count=node_count,
            base_images_dir=config.base_images_dir,  # a delta bundle is rebuilt over its base image
            staging_root=staging_root(config),
        )
    except TrustUnreadable as error:
        raise ImportRefused(str(error)) from None
    except VerificationError as error:
        failed = [CheckOutcome(error.check, False, error.message)]
        version = head[0] if head else None
        # stage() keeps it as a failed import, never as a release: a release row would reserve the version
        # its unverified manifest claims, and the channel check would never offer the genuine release.
        return replace(status, state="failed", version=version, checks=tuple(failed), message=str(error))
    manifest = staged.verified.manifest
    details = _details(staged, installed_version)
    checks = [CheckOutcome(name, True, details.get(name, "passed")) for name in staged.verified.checks]
    checks.append(CheckOutcome("staged", True, f"staged at {staged.path}"))
    with transaction(sessions) as db:
        _record(
            db,
            version=str(manifest.version),
            channel=manifest.channel,
            release_date=manifest.release_date,
            checks=checks,
            staged=staged,
        )
    return replace(
        status,
        state="staged",
        version=str(manifest.version),
        checks=tuple(checks),
        message=f"release {manifest.version} verified and staged",
    )
