"""Customer side of the update channel: TUF refresh, resumable authenticated download, hand-off to staging.

* :class:`ChannelClient.refresh` runs python-tuf's ngclient against the channel, so freeze (expired metadata),
  rollback, mix-and-match and endless-data attacks on the metadata are refused by the library.
* :meth:`ChannelClient.available_releases` lists the verified targets newer than what runs.
* :meth:`ChannelClient.download` fetches one release into ``<dest>/<name>.part`` with HTTP Range (resuming
  what is already there), refuses any byte beyond the length TUF signed, checks length and SHA-256 against the
  TUF target info and only then renames the file to ``<dest>/<name>``.
* :func:`pull_and_stage` runs the three and stages the file the way every path stages a bundle
  (:func:`updater.services.bundles.release_staging.stage_release`: the same checks an air-gapped import runs,
  and a newer keyring the bundle carries saved in the installation's trust directory).

Every request is signed with the license's derived request key (:mod:`updater.domain.request_auth`) and goes
over HTTPS to a server whose certificate must chain to the CA file the installation was given.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, TargetFile, Targets  # type: ignore[attr-defined]
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from updater.domain import request_auth
from updater.domain.errors import VerificationError
from updater.domain.license import verify_license
from updater.domain.semver import Version, parse_version
from updater.services.bundles.release_staging import stage_release
from updater.services.bundles.staging import StagedRelease
from updater.services.installation.trust import read_trust

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(bytes_done, bytes_total)`` during a download (``bytes_done`` counts a resume)."""

CHUNK_SIZE = 1 << 20


class ChannelError(Exception):
    """The channel could not be used; ``check`` names what failed (stable), the message says it for humans."""

    check = "channel"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"


class ChannelRefused(ChannelError):
    """The update server refused the request (HTTP 4xx/5xx); ``reason`` is the server's reason."""

    check = "channel-refused"

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class ChannelUnreachable(ChannelError):
    """No answer, a TLS failure (wrong CA, wrong name) or a connection broken before any data."""

    check = "channel-unreachable"


class MetadataExpired(ChannelError):
    """Signed channel metadata is past its expiry: a frozen channel or replayed old metadata."""

    check = "metadata-expired"


class MetadataRollback(ChannelError):
    """A metadata version is older than one already trusted, or not the version another role names."""

    check = "metadata-rollback"


class MetadataMismatch(ChannelError):
    """Metadata does not match the length/hash the signed timestamp or snapshot gives (mix-and-match)."""

    check = "metadata-mismatch"


class MetadataTooLarge(ChannelError):
    """The server sent more metadata bytes than allowed (endless data)."""

    check = "metadata-too-large"


class MetadataInvalid(ChannelError):
    """Metadata is unsigned, signed by the wrong keys or malformed."""

    check = "metadata-invalid"


class DownloadTooLarge(ChannelError):
    """The server sent more bundle bytes than the TUF target length (endless data); nothing is kept."""

    check = "download-too-large"


class DownloadIncomplete(ChannelError):
    """The download stopped before the TUF target length; the ``.part`` file is kept to resume."""

    check = "download-incomplete"


class DownloadHashMismatch(ChannelError):
    """The downloaded bytes do not hash to the TUF target's SHA-256; the ``.part`` file is deleted."""

    check = "download-hash-mismatch"


class UnknownRelease(ChannelError):
    """The requested release is not among the channel's verified targets."""

    check = "unknown-release"


@dataclass(frozen=True)
class ChannelSettings:
    """Where the channel is and how this installation proves its license. ``request_key`` is derived."""

    base_url: str  # https://updates.example.com  (no trailing /v1)
    channel: str
    license_id: str
    request_key: bytes
    ca_file: Path
    state_dir: Path  # holds <channel>/metadata (TUF's trusted cache)
    trusted_root: bytes  # the channel's 1.root.json the installation was shipped with
    timeout_seconds: float = 30.0

    def channel_url(self, kind: str) -> str:
        return f"{self.base_url.rstrip('/')}/v1/channels/{self.channel}/{kind}/"


@dataclass(frozen=True)
class Release:
    """One verified target of the channel, with what the vendor published about it."""

    name: str
    version: Version
    channel: str
    release_date: date
    delta_base_sha256: str | None
    target: TargetFile

    @property
    def length(self) -> int:
        return int(self.target.length)

    @property
    def sha256(self) -> str:
        return str(self.target.hashes["sha256"])


def _refusal(status: int, body: bytes, url: str) -> ChannelRefused:
    try:
        payload = json.loads(body.decode("utf-8"))
        message, reason = str(payload["error"]), str(payload["reason"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        message, reason = f"HTTP {status} from {urlsplit(url).path}", f"http-{status}"
    return ChannelRefused(
        f"update server refused ({status} {reason}): {message}", status=status, reason=reason
    )


class _RefusedHTTPError(tuf_errors.DownloadHTTPError):
    """A DownloadHTTPError (so ngclient treats 403/404 on a root version as 'no newer root') that keeps the
    server's JSON reason for the error the caller sees."""

    def __init__(self, refusal: ChannelRefused) -> None:
        super().__init__(refusal.message, refusal.status)
        self.refusal = refusal


class SignedFetcher(FetcherInterface):
    """ngclient's only I/O: HTTPS to the channel with the signed auth headers, certificate checked against the
    installation's CA file, no proxies, no redirects, no retries (a retry would replay a nonce)."""

    def __init__(self, settings: ChannelSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._pool = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(settings.ca_file),
            retries=False,
            timeout=urllib3.Timeout(connect=settings.timeout_seconds, read=settings.timeout_seconds),
        )

    def request(self, url: str, *, range_header: str | None = None) -> urllib3.BaseHTTPResponse:
        """Send one signed GET; return the streaming response, or raise :class:`ChannelRefused`."""
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise ChannelUnreachable(f"refusing non-HTTPS channel URL {url}")
        path = f"{parts.path}?{parts.query}" if parts.query else parts.path
        headers = request_auth.sign_request(
            self._settings.request_key,
            license_id=self._settings.license_id,
            method="GET",
            path=path,
            now=self._clock(),
            range_header=range_header,
        )
        if range_header is not None:
            headers["Range"] = range_header
        try:
            response = self._pool.request(
                "GET", url, headers=headers, preload_content=False, redirect=False, decode_content=False
            )
        except urllib3.exceptions.HTTPError as error:
            raise ChannelUnreachable(f"cannot reach {parts.netloc}: {error}") from error
        if response.status >= 400:
            body = response.read(64 * 1024)
            response.release_conn()
            raise _refusal(response.status, body, url)
        return response

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            response = self.request(url)
        except ChannelRefused as refusal:
            raise _RefusedHTTPError(refusal) from None
        return self._chunks(response)

    @staticmethod
    def _chunks(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
        try:
            yield from response.stream(CHUNK_SIZE)
        except urllib3.exceptions.HTTPError as error:
            raise tuf_errors.DownloadError(f"connection lost while fetching metadata: {error}") from error
        finally:
            response.release_conn()


_TUF_REFUSALS: tuple[tuple[type[Exception], type[ChannelError], str], ...] = (
    (
        tuf_errors.ExpiredMetadataError,
        MetadataExpired,
        "the channel is frozen or serving replayed old metadata (nothing was downloaded)",
    ),
    (
        tuf_errors.BadVersionNumberError,
        MetadataRollback,
        "the server offers older or mismatched metadata (rollback or mix-and-match)",
    ),
    (
        tuf_errors.LengthOrHashMismatchError,
        MetadataMismatch,
        "metadata does not match what the signed timestamp/snapshot names (mix-and-match)",
    ),
    (tuf_errors.DownloadLengthMismatchError, MetadataTooLarge, "refusing endless metadata"),
    (tuf_errors.RepositoryError, MetadataInvalid, "channel metadata refused"),
    (tuf_errors.SlowRetrievalError, ChannelUnreachable, "the update server stopped sending data"),
)


def _translate_tuf_error(error: Exception) -> ChannelError:
    """One clear error per way the channel's metadata can be refused (most specific first)."""
    if isinstance(error, _RefusedHTTPError):
        return error.refusal
    if isinstance(error.__cause__, ChannelError):
        return error.__cause__
    for tuf_type, ours, explanation in _TUF_REFUSALS:
        if isinstance(error, tuf_type):
            return ours(f"{error}; {explanation}")
    return ChannelUnreachable(f"channel metadata could not be fetched: {error}")


class ChannelClient:
    def __init__(self, settings: ChannelSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.fetcher = SignedFetcher(settings, clock=clock)
        self.metadata_dir = settings.state_dir / settings.channel / "metadata"
        self._updater: Updater | None = None

    def refresh(self) -> None:
        """Fetch and verify root → timestamp → snapshot → targets (each refresh is a fresh ngclient run)."""
        self.metadata_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        updater = Updater(
            str(self.metadata_dir),
            self.settings.channel_url("metadata"),
            target_base_url=self.settings.channel_url("targets"),
            fetcher=self.fetcher,
            config=UpdaterConfig(prefix_targets_with_hash=True),
            bootstrap=self.settings.trusted_root,
        )
        try:
            updater.refresh()
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as error:
            raise _translate_tuf_error(error) from error
        self._updater = updater

    def releases(self) -> list[Release]:
        """Every release the freshly verified targets metadata lists, oldest first."""
        if self._updater is None:
            raise ChannelError("refresh() the channel before listing releases")
        # ngclient persists only metadata it has verified; the top-level targets names every release.
        targets: Metadata[Targets] = Metadata.from_file(str(self.metadata_dir / "targets.json"))
        found = []
        for name in targets.signed.targets:
            info = self._updater.get_targetinfo(name)
            if info is not None:
                found.append(_release(info))
        return sorted(found, key=lambda r: r.version)

    def available_releases(self, installed: Version, *, updates_until: date | None = None) -> list[Release]:
        """Releases of this channel newer than ``installed`` (and dated by ``updates_until``, if given)."""
        return [
            r
            for r in self.releases()
            if r.channel == self.settings.channel
            and r.version > installed
            and (updates_until is None or r.release_date <= updates_until)
        ]

    def release(self, version: Version) -> Release:
        for r in self.releases():
            if r.version == version:
                return r
        raise UnknownRelease(f"channel {self.settings.channel} has no release {version}")

    def download(self, release: Release, dest_dir: Path, *, progress: ProgressCallback | None = None) -> Path:
        """Download (or resume) one release; return its path only once length and SHA-256 match TUF's."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        final = dest_dir / release.name
        part = dest_dir / f"{release.name}.part"
        digest = hashlib.sha256()
        done = 0
        if part.exists():
            done = part.stat().st_size
            if done > release.length:
                part.unlink()
                done = 0
            else:
                with part.open("rb") as handle:
                    while chunk := handle.read(CHUNK_SIZE):
                        digest.update(chunk)
        if done < release.length:
            done, digest = self._fetch_into(release, part, done, digest, progress)
        if done != release.length:
            raise DownloadIncomplete(
                f"{release.name}: received {done} of {release.length} bytes; run the download again to resume"
            )
        if digest.hexdigest() != release.sha256:
            part.unlink()
            raise DownloadHashMismatch(
                f"{release.name}: SHA-256 {digest.hexdigest()} is not the signed {release.sha256}; deleted"
            )
        os.replace(part, final)
        return final

    def _fetch_into(
        self,
        release: Release,
        part: Path,
        done: int,
        digest: Any,
        progress: ProgressCallback | None,
    ) -> tuple[int, Any]:
        url = f"{self.settings.channel_url('targets')}{release.sha256}.{release.name}"
        response = self.fetcher.request(url, range_header=f"bytes={done}-" if done else None)
        try:
            if done and response.status == 200:
                done, digest = 0, hashlib.sha256()  # the server ignored the Range: start again from byte 0
            elif done and not str(response.headers.get("Content-Range", "")).startswith(f"bytes {done}-"):
                raise ChannelError(f"{release.name}: server answered a resume with the wrong byte range")
            with part.open("ab" if done else "wb") as handle:
                try:
                    for chunk in response.stream(CHUNK_SIZE):
                        if done + len(chunk) > release.length:
                            raise DownloadTooLarge(
                                f"{release.name}: the server sent more than the signed {release.length} "
                                "bytes; download refused and deleted"
                            )
                        handle.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, release.length)
                except urllib3.exceptions.HTTPError as error:
                    handle.flush()
                    raise DownloadIncomplete(
                        f"{release.name}: connection lost after {done} of {release.length} bytes ({error}); "
                        "run the download again to resume"
                    ) from error
                handle.flush()
                os.fsync(handle.fileno())
        except DownloadTooLarge:
            part.unlink(missing_ok=True)
            raise
        finally:
            response.release_conn()
        return done, digest


def _release(target: TargetFile) -> Release:
    custom = target.custom if isinstance(target.custom, dict) else {}
    try:
        return Release(
            name=target.path,
            version=parse_version(str(custom["version"])),
            channel=str(custom["channel"]),
            release_date=date.fromisoformat(str(custom["release_date"])),
            delta_base_sha256=custom.get("delta_base_sha256"),
            target=target,
        )
    except (KeyError, ValueError, VerificationError) as error:
        raise MetadataInvalid(f"target {target.path} lacks valid release information: {error}") from None


class NoNewerRelease(ChannelError):
    """The channel offers nothing newer than what runs (within the license's updates-until date)."""

    check = "no-newer-release"


def choose_release(
    client: ChannelClient, *, installed_version: Version, version: Version | None, updates_until: date | None
) -> Release:
    """The release to pull: the one asked for, or else the newest the channel offers past what runs."""
    if version is not None:
        return client.release(version)
    candidates = client.available_releases(installed_version, updates_until=updates_until)
    if not candidates:
        raise NoNewerRelease(
            f"channel {client.settings.channel} has no release newer than {installed_version} "
            "that this license entitles"
        )
    return candidates[-1]


def pull_and_stage(
    client: ChannelClient,
    *,
    installed_version: Version,
    download_dir: Path,
    trust_dir: Path,
    node_count: int,
    base_images_dir: Path | None,
    staging_root: Path,
    version: Version | None = None,
    progress: ProgressCallback | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> StagedRelease:
    """Refresh, pick, download (resuming), then run every bundle and license check and stage (part A).

    The trust (keyring, license, entitlement key) is the installation's, read from ``trust_dir``; a newer
    keyring the bundle carries is saved there once it is staged. The downloaded file is removed once it is
    staged or refused; an interrupted download keeps its ``.part`` so the next call resumes it. Nothing is
    staged unless every check passed. Raises :class:`ChannelError`, the failed check's
    :class:`~updater.domain.errors.VerificationError`, or
    :class:`~updater.services.installation.trust.TrustUnreadable` before anything is fetched.
    """
    installed = read_trust(trust_dir, now=now())
    lic = verify_license(installed.license_document, installed.store.keyring, now=now())
    client.refresh()
    release = choose_release(
        client, installed_version=installed_version, version=version, updates_until=lic.updates_until
    )
    bundle = client.download(release, download_dir, progress=progress)
    try:
        return stage_release(
            bundle,
            trust_dir=trust_dir,
            now=now(),
            installed_version=installed_version,
            node_count=node_count,
            base_images_dir=base_images_dir,
            staging_root=staging_root,
        )
    finally:
        bundle.unlink(missing_ok=True)
