"""Download a release the channel offers, resumably, with progress, then verify and stage it.

:func:`download_release` is what the ``corral.download`` task (and any button or command) calls:

* one download per release at a time: an exclusive ``flock`` on ``downloads/<version>.lock`` that the kernel
  releases when the process holding it dies, so a worker killed mid-download never blocks the next one;
* the bytes come through :class:`updater.services.channel.client.ChannelClient` (TUF-verified target, signed
  requests, ``Range`` resume of ``downloads/<name>.part``), at most ``download_rate_limit_bytes`` per second;
* progress (bytes done of total, where it resumed from) is written to ``release_downloads`` about twice a
  second, for the web to show; a killed worker leaves it ``running`` (:func:`download_active` tells the
  difference) and the next download takes it over;
* the downloaded file is staged the way every path stages a bundle
  (:func:`updater.services.bundles.release_staging.stage_release`: the one verifier, and a newer keyring the
  bundle carries saved) and removed afterwards whatever the outcome; every check's result is recorded on the
  release (``release_checks``), a failure names the check that failed.

Refusals (nothing changed, audited as refused) raise :class:`DownloadRefused`; outcomes of an attempted
download (staged, failed, interrupted) are returned and audited.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from updater.config import ServiceConfig
from updater.domain.errors import VerificationError
from updater.domain.inventory import InventoryError
from updater.domain.semver import parse_version
from updater.services import filelocks
from updater.services.accounts import audit
from updater.services.bundles.release_staging import stage_release
from updater.services.bundles.staging import StagedRelease
from updater.services.channel.client import ChannelClient, ChannelError, DownloadIncomplete, Release
from updater.services.channel.setup import ChannelContext, load_channel
from updater.services.installation.overview import load_inventory
from updater.services.installation.trust import TrustUnreadable
from updater.store import queries
from updater.store.db import transaction
from updater.store.models import DownloadState, Outcome, ReleaseCheck, ReleaseDownload, utcnow
from updater.store.models import Release as ReleaseRow

ACTION = "release.download"
TUF_CHECK = "channel-target"  # length and SHA-256 equal what the channel's signed targets metadata names
PROGRESS_EVERY_SECONDS = 0.5
MAX_NOTES_BYTES = 256 * 1024


class DownloadRefused(Exception):
    """The download cannot start; nothing was changed. The message says why."""


@dataclass(frozen=True)
class DownloadResult:
    version: str
    state: DownloadState
    message: str
    failed_check: str | None = None
    staged_path: str | None = None


@dataclass(frozen=True)
class _Job:
    """What one download needs, gathered (and refused if missing) before anything is written."""

    version: str
    release_id: int
    context: ChannelContext
    node_count: int
    installed_version: str | None


def download_progress(session: Session, version: str) -> ReleaseDownload | None:
    """The latest download record of ``version`` (for the Updates page and the API), or None."""
    return session.scalars(
        sa.select(ReleaseDownload).join(ReleaseRow).where(ReleaseRow.version == version)
    ).one_or_none()


def download_release(
    config: ServiceConfig,
    sessions: sessionmaker[Session],
    *,
    version: str,
    actor: str,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> DownloadResult:
    """Download ``version`` from the channel (resuming a partial file), verify it and stage it."""
    try:
        job = _prepare(config, sessions, version, now=now())
        with _exclusive(config.downloads_dir, job.version):
            return _run(config, sessions, job, actor=actor, now=now, sleep=sleep, clock=clock)
    except DownloadRefused as refusal:
        audit.record_separately(
            sessions, actor=actor, action=ACTION, target=version, outcome=Outcome.REFUSED, detail=str(refusal)
        )
        raise


def _prepare(config: ServiceConfig, sessions: sessionmaker[Session], version: str, *, now: datetime) -> _Job:
    try:
        wanted = str(parse_version(version))
    except VerificationError as error:
        raise DownloadRefused(f"{version!r} is not a release version: {error.message}") from None
    with transaction(sessions) as session:
        row = queries.find_release(session, wanted)
        if row is None:
            raise DownloadRefused(f"release {wanted} is not known here: run a channel check first")
        if row.staged_path:
            raise DownloadRefused(f"release {wanted} is already staged at {row.staged_path}")
        release_id = row.id
        installed = queries.installed_release(session)
        installed_version = installed.version if installed else None
    try:
        context = load_channel(config, now=now)
    except (ChannelError, VerificationError) as error:
        raise DownloadRefused(f"the update channel cannot be used: {error}") from None
    if not config.inventory_path:
        raise DownloadRefused(
            "no inventory is configured: the license's node entitlement is checked against the cluster's "
            "nodes"
        )
    try:
        node_count = len(load_inventory(config.inventory_path).nodes)
    except (InventoryError, OSError) as error:
        raise DownloadRefused(f"the inventory cannot be read: {error}") from None
    return _Job(wanted, release_id, context, node_count, installed_version)


def download_active(config: ServiceConfig, version: str) -> bool:
    """Whether a process is downloading ``version`` now. A record left ``running`` by a killed worker is not:
    the kernel released its lock, and the next download of the release resumes its partial file."""
    return filelocks.is_held(config.downloads_dir / f"{version}.lock")


@contextmanager
def _exclusive(downloads_dir: Path, version: str) -> Iterator[None]:
    """Hold ``<version>.lock`` for the whole download; refuse while another process holds it."""
    downloads_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        held = filelocks.take(downloads_dir / f"{version}.lock", holder=f"{os.getpid()}")
    except filelocks.Busy as busy:
        holder = busy.holder or "another process"
        raise DownloadRefused(f"release {version} is already being downloaded (by pid {holder})") from None
    with held:
        yield


class _Progress:
    """The client's progress callback: keeps to the rate limit and writes progress at most twice a second."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        download_id: int,
        *,
        start: int,
        rate_limit: int,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        self._sessions, self._id, self._start = sessions, download_id, start
        self._rate, self._sleep, self._clock = rate_limit, sleep, clock
        self._began = self._last_write = clock()

    def __call__(self, done: int, total: int) -> None:
        if self._rate:
            ahead = (done - self._start) / self._rate - (self._clock() - self._began)
            if ahead > 0:
                self._sleep(ahead)
        if done >= total or self._clock() - self._last_write >= PROGRESS_EVERY_SECONDS:
            self._last_write = self._clock()
            with transaction(self._sessions) as session:
                session.execute(
                    sa.update(ReleaseDownload)
                    .where(ReleaseDownload.id == self._id)
                    .values(bytes_done=done, updated_at=utcnow())
                )


def _run(
    config: ServiceConfig,
    sessions: sessionmaker[Session],
    job: _Job,
    *,
    actor: str,
    now: Callable[[], datetime],
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> DownloadResult:
    client = ChannelClient(job.context.settings)
    try:
        client.refresh()
        release = client.release(parse_version(job.version))
    except ChannelError as error:
        return _finish(sessions, job, actor, DownloadState.FAILED, str(error), failed_check=error.check)
    part = config.downloads_dir / f"{release.name}.part"
    resumed = part.stat().st_size if part.exists() else 0
    resumed = resumed if resumed <= release.length else 0
    download_id = _start_record(sessions, job, actor, release, resumed)
    progress = _Progress(
        sessions,
        download_id,
        start=resumed,
        rate_limit=config.download_rate_limit_bytes,
        sleep=sleep,
        clock=clock,
    )
    try:
        bundle = client.download(release, config.downloads_dir, progress=progress)
    except DownloadIncomplete as error:
        return _finish(sessions, job, actor, DownloadState.INTERRUPTED, str(error))
    except ChannelError as error:
        checks = [(TUF_CHECK, False, error.message)] if error.check.startswith("download-") else None
        return _finish(
            sessions, job, actor, DownloadState.FAILED, str(error), failed_check=error.check, checks=checks
        )
    passed_tuf = (TUF_CHECK, True, f"{release.length} bytes, SHA-256 {release.sha256} as the channel signed")
    try:
        staged = _stage(config, job, bundle, now=now())
    except VerificationError as error:
        return _finish(
            sessions,
            job,
            actor,
            DownloadState.FAILED,
            f"{error}; the download was removed",
            failed_check=error.check,
            checks=[passed_tuf, (error.check, False, error.message)],
        )
    except TrustUnreadable as error:
        return _finish(sessions, job, actor, DownloadState.FAILED, f"{error}; the download was removed")
    finally:
        bundle.unlink(missing_ok=True)
    return _finish(
        sessions,
        job,
        actor,
        DownloadState.STAGED,
        f"release {job.version} verified and staged at {staged.path}",
        checks=[passed_tuf, *((name, True, "") for name in staged.verified.checks)],
        staged=staged,
    )


def _stage(config: ServiceConfig, job: _Job, bundle: Path, *, now: datetime) -> StagedRelease:
    config.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    return stage_release(
        bundle,
        trust_dir=config.trust_dir,
        now=now,
        installed_version=job.installed_version,
        node_count=job.node_count,
        base_images_dir=config.base_images_dir if config.base_images_dir.is_dir() else None,
        staging_root=config.staging_dir,
    )


def _start_record(
    sessions: sessionmaker[Session], job: _Job, actor: str, release: Release, resumed: int
) -> int:
    message = f"resuming from byte {resumed}" if resumed else "downloading"
    with transaction(sessions) as session:
        record = session.scalars(
            sa.select(ReleaseDownload).where(ReleaseDownload.release_id == job.release_id)
        ).one_or_none()
        if record is None:
            record = ReleaseDownload(
                release_id=job.release_id, started_by=actor[:64], state=DownloadState.RUNNING
            )
            session.add(record)
        record.state, record.started_by, record.started_at = DownloadState.RUNNING, actor[:64], utcnow()
        record.bytes_done, record.bytes_total, record.resumed_from = resumed, release.length, resumed
        record.updated_at, record.finished_at, record.failed_check, record.message = (
            utcnow(),
            None,
            None,
            message,
        )
        session.flush()
        return record.id


def _finish(
    sessions: sessionmaker[Session],
    job: _Job,
    actor: str,
    state: DownloadState,
    message: str,
    *,
    failed_check: str | None = None,
    checks: list[tuple[str, bool, str]] | None = None,
    staged: StagedRelease | None = None,
) -> DownloadResult:
    """Record the outcome (progress record, the release's checks and notes, audit) in one transaction."""
    with transaction(sessions) as session:
        row = session.get(ReleaseRow, job.release_id)
        if row is None:  # removed while downloading: keep nothing, say so
            raise DownloadRefused(f"release {job.version} was removed from the store during its download")
        if checks is not None:
            row.checks.clear()
            session.flush()
            row.checks.extend(ReleaseCheck(name=n[:64], passed=ok, detail=d) for n, ok, d in checks)
        if staged is not None:
            row.staged_path = str(staged.path)
            row.notes = _read_notes(staged.notes) or row.notes
        record = session.scalars(
            sa.select(ReleaseDownload).where(ReleaseDownload.release_id == job.release_id)
        ).one_or_none()
        if record is not None:
            record.state, record.message, record.failed_check = state, message, failed_check
            record.updated_at = record.finished_at = utcnow()
        outcome = Outcome.OK if state is DownloadState.STAGED else Outcome.FAILED
        audit.record(session, actor=actor, action=ACTION, target=job.version, outcome=outcome, detail=message)
    return DownloadResult(
        job.version, state, message, failed_check, str(staged.path) if staged is not None else None
    )


def _read_notes(path: Path) -> str:
    with path.open("rb") as handle:
        return handle.read(MAX_NOTES_BYTES).decode("utf-8", "replace")
