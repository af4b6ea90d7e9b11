"""A download from the channel refuses to start, with one clear message and nothing changed, when it
cannot run: an unknown or bad version, a release already staged, no usable channel, no inventory, or another
download of the same release in progress. Also: the progress callback keeps to the rate limit and writes
progress at most twice a second. The network side is in tests/integration/test_download*.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.unit.test_channel_check_settings import Vendor, init
from updater.config import ServiceConfig, load_config
from updater.services.channel import downloads
from updater.store import queries as q
from updater.store.db import make_engine, session_factory, transaction
from updater.store.models import DownloadState, Outcome, ReleaseDownload, ReleaseSource


@pytest.fixture
def vendor(tmp_path: Path) -> Vendor:
    return Vendor(tmp_path / "vendor-side")


@pytest.fixture
def site(
    tmp_path: Path, vendor: Vendor, capsys: pytest.CaptureFixture[str]
) -> Iterator[tuple[ServiceConfig, sessionmaker[Session]]]:
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"nodes": {"hosts": ["n1", "n2", "n3"]}, "_meta": {"hostvars": {}}}))
    home = tmp_path / "home"
    code, err = init(
        home, *vendor.trust_args(vendor.single), *vendor.channel_args(), "--inventory", str(inventory),
        capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    config = load_config(home)
    engine = make_engine(config.effective_database_url)
    sessions = session_factory(engine)
    with transaction(sessions) as db:
        q.add_release(
            db, version="1.1.0", channel="stable", release_date=date(2026, 11, 1), source=ReleaseSource.PULLED
        )
        staged = str(home / "staging/1.0.5")
        q.add_release(
            db, version="1.0.5", channel="stable", release_date=date(2026, 10, 1),
            source=ReleaseSource.PULLED, staged_path=staged,
        )  # fmt: skip
    yield config, sessions
    engine.dispose()


def refusals(sessions: sessionmaker[Session]) -> list[tuple[str, str]]:
    with transaction(sessions) as db:
        return [(e.target, e.detail) for e in reversed(q.list_audit(db)) if e.outcome is Outcome.REFUSED]


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("1.1", "'1.1' is not a release version"),
        ("9.9.9", "release 9.9.9 is not known here: run a channel check first"),
        ("1.0.5", "release 1.0.5 is already staged at"),
    ],
)
def test_a_download_of_a_release_it_cannot_fetch_is_refused_and_audited(
    site: tuple[ServiceConfig, sessionmaker[Session]], version: str, message: str
) -> None:
    config, sessions = site
    with pytest.raises(downloads.DownloadRefused, match=message.replace(".", r"\.")):
        downloads.download_release(config, sessions, version=version, actor="alice")
    assert refusals(sessions)[-1][0] == version
    assert message in refusals(sessions)[-1][1]
    assert not config.downloads_dir.exists()


def test_a_download_without_an_inventory_is_refused(
    site: tuple[ServiceConfig, sessionmaker[Session]],
) -> None:
    config, sessions = site
    with pytest.raises(downloads.DownloadRefused, match="no inventory is configured"):
        downloads.download_release(
            config.with_overrides(inventory_path=""), sessions, version="1.1.0", actor="a"
        )


def test_a_download_with_an_unusable_channel_is_refused(
    site: tuple[ServiceConfig, sessionmaker[Session]],
) -> None:
    config, sessions = site
    (config.trust_dir / "entitlement-key").write_text("corral-ek1-" + "A" * 43 + "\n")
    with pytest.raises(
        downloads.DownloadRefused, match="the update channel cannot be used: license-mismatch"
    ):
        downloads.download_release(config, sessions, version="1.1.0", actor="a")
    with transaction(sessions) as db:
        assert downloads.download_progress(db, "1.1.0") is None


def test_a_second_download_of_the_same_release_is_refused_while_one_holds_it(
    site: tuple[ServiceConfig, sessionmaker[Session]],
) -> None:
    config, sessions = site
    with (
        downloads._exclusive(config.downloads_dir, "1.1.0"),
        pytest.raises(
            downloads.DownloadRefused, match=r"release 1\.1\.0 is already being downloaded \(by pid"
        ),
    ):
        downloads.download_release(config, sessions, version="1.1.0", actor="bob")
    assert "already being downloaded" in refusals(sessions)[-1][1]
    assert downloads.download_active(config, "1.1.0") is False  # released when its holder let go
    with downloads._exclusive(config.downloads_dir, "1.1.0"):
        assert downloads.download_active(config, "1.1.0") is True
    assert downloads.download_active(config, "1.0.5") is False  # never downloaded: no lock file at all


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_progress_keeps_to_the_rate_limit_and_is_written_at_most_twice_a_second(
    site: tuple[ServiceConfig, sessionmaker[Session]],
) -> None:
    _config, sessions = site
    with transaction(sessions) as db:
        release = q.find_release(db, "1.1.0")
        assert release is not None
        record = ReleaseDownload(
            release_id=release.id, state=DownloadState.RUNNING, started_by="t", bytes_total=10_000_000
        )
        db.add(record)
        db.flush()
        record_id = record.id
    fake = FakeTime()
    progress = downloads._Progress(
        sessions, record_id, start=2_000_000, rate_limit=1_000_000, sleep=fake.sleep, clock=fake.clock
    )
    progress(3_000_000, 10_000_000)  # 1 MB past the resume point at 1 MB/s: one second
    assert fake.slept == [pytest.approx(1.0)]
    with transaction(sessions) as db:
        assert db.get(ReleaseDownload, record_id).bytes_done == 3_000_000  # type: ignore[union-attr]
    fake.now += 5  # a slow link: already behind the limit, no sleep
    progress(3_100_000, 10_000_000)
    assert len(fake.slept) == 1
    with transaction(sessions) as db:
        assert db.get(ReleaseDownload, record_id).bytes_done == 3_100_000  # type: ignore[union-attr]
    unlimited = downloads._Progress(
        sessions, record_id, start=0, rate_limit=0, sleep=fake.sleep, clock=fake.clock
    )
    unlimited(4_000_000, 10_000_000)  # within half a second of its start: not written
    with transaction(sessions) as db:
        assert db.get(ReleaseDownload, record_id).bytes_done == 3_100_000  # type: ignore[union-attr]
    unlimited(10_000_000, 10_000_000)  # the last bytes are always written
    with transaction(sessions) as db:
        assert db.get(ReleaseDownload, record_id).bytes_done == 10_000_000  # type: ignore[union-attr]
    assert len(fake.slept) == 1
