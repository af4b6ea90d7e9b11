"""Downloading a release from the channel: the ``corral.download`` task in a real Celery worker (through a
real Redis), against the real reference update server over HTTPS on 127.0.0.1, on SQLite and PostgreSQL.

The crash test kills the worker with SIGKILL in the middle of a (rate-limited) download, starts a new worker
and sends the task again: the server's access log must show one ranged request for exactly the bytes the
partial file lacked, and no second full download.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.conftest import Tls, UpdateServer, Vendor
from tests.integration.test_channel_check import make_site, publish, sessions_of
from tests.integration.test_channel_pull import carry_rotated_keyring
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer
from tests.support.service_stack import Worker, wait_for
from updater.config import ServiceConfig
from updater.services.channel import downloads
from updater.services.channel.check import check_channel
from updater.services.jobs import TASK_CHECK_CHANNEL, TASK_DOWNLOAD
from updater.store import queries as q
from updater.store.db import transaction
from updater.store.models import DownloadState, Outcome, ReleaseSource
from updater.tasks.app import make_celery

MIB = 1024 * 1024
RATE = 3 * MIB  # bytes per second: slow enough to stop the worker mid-way on loopback


@pytest.fixture(scope="module")
def bundle_110(vendor: Vendor) -> Path:
    return vendor.build_bundle("1.1.0", image=vendor.image("download-image-1.1.0.tar", 12 * MIB))


@pytest.fixture
def server(make_server: Callable[..., UpdateServer]) -> UpdateServer:
    return make_server(channels=("stable",))


@dataclass(frozen=True)
class Channel:
    server: UpdateServer
    vendor: Vendor
    tls: Tls


@pytest.fixture
def channel(server: UpdateServer, vendor: Vendor, tls: Tls) -> Channel:
    return Channel(server, vendor, tls)


def target_requests(server: UpdateServer, bundle: Path) -> list[tuple[int, int]]:
    """(status, bytes sent) of every request for the bundle, in order, from the server's access log."""
    assert server.log is not None
    target = rf"/v1/channels/stable/targets/[0-9a-f]{{64}}\.{re.escape(bundle.name)}"
    pattern = re.compile(rf'"GET {target} [^"]*" (\d+) (\S+)')
    return [
        (int(m.group(1)), int(m.group(2)) if m.group(2).isdigit() else 0)
        for m in pattern.finditer(server.log.read_text())
    ]


def progress_of(sessions: sessionmaker[Session], version: str) -> tuple[DownloadState, int, int, int] | None:
    with transaction(sessions) as db:
        record = downloads.download_progress(db, version)
        if record is None:
            return None
        return record.state, record.bytes_done, record.bytes_total, record.resumed_from


def start_worker(config: ServiceConfig, log: Path) -> Worker:
    worker = Worker(config.home, log)
    celery = make_celery(config)
    try:
        wait_for(lambda: celery.control.ping(timeout=0.5), 60, "worker ready", worker)
    finally:
        celery.close()
    return worker


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_worker_killed_mid_download_is_resumed_by_the_next_with_one_ranged_request(
    backend: str, channel: Channel, redis: RedisServer, tmp_path: Path, bundle_110: Path
) -> None:
    server, vendor, tls = channel.server, channel.vendor, channel.tls
    publish(server, bundle_110)
    total = bundle_110.stat().st_size
    with ExitStack() as cleanup:
        database: tuple[str, ...] = ()
        if backend == "postgresql":
            postgres = PostgresServer()
            cleanup.callback(postgres.stop)
            postgres.start()
            database = ("--database-url", postgres.create_database())
        config = make_site(
            tmp_path / "site", server, vendor, tls, f"lic-resume-{backend}",
            extra=("--redis-url", redis.url, "--download-rate-limit", str(RATE), *database),
        )  # fmt: skip
        sessions = sessions_of(config)
        cleanup.callback(sessions.kw["bind"].dispose)
        celery = make_celery(config)
        cleanup.callback(celery.close)

        first = start_worker(config, tmp_path / "worker1.log")
        cleanup.callback(first.stop)
        checked = celery.send_task(TASK_CHECK_CHANNEL, kwargs={"actor": "beat"}).get(timeout=60)
        assert checked["checked"] is True, checked
        assert checked["message"].endswith("1 release(s) offered; new: 1.1.0")
        celery.send_task(TASK_DOWNLOAD, kwargs={"version": "1.1.0", "actor": "alice"})
        wait_for(
            lambda: (p := progress_of(sessions, "1.1.0")) is not None and p[1] >= 4 * MIB,
            60,
            "4 MiB downloaded",
            first,
        )
        # One download per release: a second one is refused while the worker holds it.
        with pytest.raises(
            downloads.DownloadRefused, match=r"1\.1\.0 is already being downloaded \(by pid \d+\)"
        ):
            downloads.download_release(config, sessions, version="1.1.0", actor="bob")

        assert downloads.download_active(config, "1.1.0") is True
        os.killpg(first.proc.pid, signal.SIGKILL)  # the worker and its pool child, mid-download
        first.proc.wait()
        # The kernel releases the dead pool child's lock when that child has exited, which can be a moment
        # after its parent (the one this test reaps) is gone.
        wait_for(
            lambda: downloads.download_active(config, "1.1.0") is False,
            10,
            "the kernel releasing the killed worker's lock",
        )
        part = config.downloads_dir / f"{bundle_110.name}.part"
        kept = part.stat().st_size
        assert 4 * MIB <= kept < total
        state, done, of, _ = progress_of(sessions, "1.1.0")  # type: ignore[misc]
        assert (state, of) == (DownloadState.RUNNING, total)  # as the killed worker left it
        assert 4 * MIB <= done <= kept
        assert [status for status, _ in target_requests(server, bundle_110)] in ([], [200])

        second = start_worker(config, tmp_path / "worker2.log")
        cleanup.callback(second.stop)
        result = celery.send_task(TASK_DOWNLOAD, kwargs={"version": "1.1.0", "actor": "alice"}).get(
            timeout=120
        )
        assert result["state"] == "staged", result
        assert progress_of(sessions, "1.1.0") == (DownloadState.STAGED, total, total, kept)
        requests = target_requests(server, bundle_110)
        assert requests[-1] == (206, total - kept)  # the new worker asked only for the bytes it lacked ...
        assert [status for status, _ in requests] in (
            [206],
            [200, 206],
        )  # ... and never for the whole file again
        assert not part.exists()
        assert list(config.downloads_dir.glob("*.bundle*")) == []
        with transaction(sessions) as db:
            release = q.find_release(db, "1.1.0")
            assert release is not None
            assert release.staged_path == str(config.staging_dir / "1.1.0")
            assert release.notes == "# Corral 1.1.0\n"  # the bundle's own release notes replace the summary
            checks = {c.name: c.passed for c in release.checks}
            assert all(checks.values())
            assert {"channel-target", "signature-threshold", "license-entitlement", "payload"} <= set(checks)
            audit = [
                (e.actor, e.action, e.outcome) for e in q.list_audit(db) if e.action == "release.download"
            ]
        assert audit[0] == ("alice", "release.download", Outcome.OK)
        assert ("bob", "release.download", Outcome.REFUSED) in audit
        assert (config.staging_dir / "1.1.0" / "image.tar").read_bytes() == (
            vendor.work / "images" / "download-image-1.1.0.tar"
        ).read_bytes()


def test_a_bundle_that_fails_verification_is_removed_and_the_failed_check_named(
    server: UpdateServer, vendor: Vendor, tls: Tls, tmp_path: Path
) -> None:
    bundle = vendor.build_bundle("1.3.0", image=vendor.image("download-image-1.3.0.tar", MIB))
    publish(server, bundle)
    # The license entitles 16 nodes; this cluster has 17: the bundle's license check refuses it.
    config = make_site(tmp_path / "site", server, vendor, tls, "lic-too-many", nodes=17)
    sessions = sessions_of(config)
    check_channel(config, sessions, actor="beat")

    result = downloads.download_release(config, sessions, version="1.3.0", actor="alice")

    assert (result.state, result.failed_check) == (DownloadState.FAILED, "node-count-exceeded")
    assert "cluster has 17 nodes; license lic-too-many entitles 16" in result.message
    assert result.message.endswith("; the download was removed")
    assert list(config.downloads_dir.glob("*.bundle*")) == []
    assert not (config.staging_dir / "1.3.0").exists()
    with transaction(sessions) as db:
        release = q.find_release(db, "1.3.0")
        assert release is not None
        assert release.staged_path is None
        assert [(c.name, c.passed) for c in release.checks] == [
            ("channel-target", True),
            ("node-count-exceeded", False),
        ]
        record = downloads.download_progress(db, "1.3.0")
        assert record is not None
        assert (record.state, record.failed_check) == (DownloadState.FAILED, "node-count-exceeded")
        entry = q.list_audit(db, limit=1)[0]
        assert (entry.action, entry.outcome, entry.target) == ("release.download", Outcome.FAILED, "1.3.0")


def test_a_tampered_file_on_the_server_fails_the_channels_hash_and_keeps_nothing(
    server: UpdateServer, vendor: Vendor, tls: Tls, tmp_path: Path
) -> None:
    bundle = vendor.build_bundle("1.4.0", image=vendor.image("download-image-1.4.0.tar", MIB))
    publish(server, bundle)
    (served,) = server.targets_dir("stable").glob(f"*.{bundle.name}")
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0xFF
    served.write_bytes(bytes(data))
    config = make_site(tmp_path / "site", server, vendor, tls, "lic-tampered")
    sessions = sessions_of(config)
    check_channel(config, sessions, actor="beat")

    result = downloads.download_release(config, sessions, version="1.4.0", actor="alice")

    assert (result.state, result.failed_check) == (DownloadState.FAILED, "download-hash-mismatch")
    assert list(config.downloads_dir.glob("*.bundle*")) == []
    with transaction(sessions) as db:
        release = q.find_release(db, "1.4.0")
        assert release is not None
        assert [(c.name, c.passed) for c in release.checks] == [("channel-target", False)]
        assert release.staged_path is None


def test_a_release_the_channel_no_longer_lists_fails_with_the_channels_answer(
    server: UpdateServer, vendor: Vendor, tls: Tls, tmp_path: Path
) -> None:
    config = make_site(tmp_path / "site", server, vendor, tls, "lic-gone")
    sessions = sessions_of(config)
    with transaction(sessions) as db:
        q.add_release(
            db,
            version="2.0.0",
            channel="stable",
            release_date=dt.date(2026, 1, 1),
            source=ReleaseSource.PULLED,
        )
    result = downloads.download_release(config, sessions, version="2.0.0", actor="alice")
    assert (result.state, result.failed_check) == (DownloadState.FAILED, "unknown-release")
    assert "channel stable has no release 2.0.0" in result.message


def test_a_downloaded_bundle_carrying_a_rotated_keyring_leaves_the_installation_trusting_it(
    server: UpdateServer, vendor: Vendor, tls: Tls, tmp_path: Path
) -> None:
    bundle = vendor.build_bundle("1.6.0", image=vendor.image("download-image-1.6.0.tar", MIB))
    rotated = carry_rotated_keyring(vendor, bundle, tmp_path)
    publish(server, bundle)
    config = make_site(tmp_path / "site", server, vendor, tls, "lic-rotation")
    installed = config.trust_dir / "keyring.json"
    assert installed.read_bytes() == vendor.keyring.read_bytes()  # version 1, as init wrote it
    sessions = sessions_of(config)
    check_channel(config, sessions, actor="beat")

    result = downloads.download_release(config, sessions, version="1.6.0", actor="alice")

    assert result.state is DownloadState.STAGED, result.message
    assert installed.read_bytes() == rotated  # the next bundle may be signed by the new key alone
    assert sorted(p.name for p in config.trust_dir.iterdir() if p.name.startswith(".")) == []


def test_a_downloaded_bundle_carrying_a_rotated_keyring_that_fails_a_check_leaves_the_keyring_alone(
    server: UpdateServer, vendor: Vendor, tls: Tls, tmp_path: Path
) -> None:
    bundle = vendor.build_bundle("1.6.1", image=vendor.image("download-image-1.6.1.tar", MIB))
    carry_rotated_keyring(vendor, bundle, tmp_path)
    publish(server, bundle)
    # The license entitles 16 nodes; this cluster has 17: the keyring verifies, the license check refuses.
    config = make_site(tmp_path / "site", server, vendor, tls, "lic-rotation-refused", nodes=17)
    sessions = sessions_of(config)
    check_channel(config, sessions, actor="beat")

    result = downloads.download_release(config, sessions, version="1.6.1", actor="alice")

    assert (result.state, result.failed_check) == (DownloadState.FAILED, "node-count-exceeded")
    assert (config.trust_dir / "keyring.json").read_bytes() == vendor.keyring.read_bytes()
    assert not (config.staging_dir / "1.6.1").exists()
