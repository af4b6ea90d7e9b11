"""The update server's TUF channel repository, checked by python-tuf's own client reading its files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_errors
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from updater.server.repository import ChannelRepository, ExpiryPolicy, RepositoryError, RoleKeys

BASE = "https://updates.invalid/v1/channels/stable/"


class FileFetcher(FetcherInterface):
    """Serve the channel directory as the HTTP server would, without a network."""

    def __init__(self, channel_dir: Path) -> None:
        self.channel_dir = channel_dir
        self.fetched: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        relative = url.removeprefix(BASE)
        self.fetched.append(relative)
        path = self.channel_dir / relative
        if not path.is_file():
            raise tuf_errors.DownloadHTTPError(f"{relative} not found", 404)
        return iter([path.read_bytes()])


@pytest.fixture
def repo(tmp_path: Path) -> ChannelRepository:
    repository = ChannelRepository(tmp_path / "stable", RoleKeys.generate(tmp_path / "keys"), ExpiryPolicy())
    repository.create()
    return repository


def client(repo: ChannelRepository, state: Path) -> tuple[Updater, FileFetcher]:
    state.mkdir(exist_ok=True)
    fetcher = FileFetcher(repo.dir)
    updater = Updater(
        str(state), BASE + "metadata/", None, BASE + "targets/", fetcher, bootstrap=repo.root_bytes()
    )
    return updater, fetcher


def bundle(tmp_path: Path, name: str, size: int = 4096) -> Path:
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * (size // 256))
    return path


def test_a_new_channel_verifies_with_python_tuf_and_lists_nothing(
    repo: ChannelRepository, tmp_path: Path
) -> None:
    updater, fetcher = client(repo, tmp_path / "state")
    updater.refresh()
    assert updater.get_targetinfo("corral-1.0.0.bundle") is None
    assert fetcher.fetched == [
        "metadata/2.root.json",
        "metadata/timestamp.json",
        "metadata/1.snapshot.json",
        "metadata/1.targets.json",
    ]


def test_a_published_bundle_is_a_verified_target_with_its_release_info(
    repo: ChannelRepository, tmp_path: Path
) -> None:
    path = bundle(tmp_path, "corral-1.1.0.bundle")
    repo.publish(path, {"version": "1.1.0", "channel": "stable", "release_date": "2026-11-20"})
    updater, _ = client(repo, tmp_path / "state")
    updater.refresh()
    info = updater.get_targetinfo("corral-1.1.0.bundle")
    assert info is not None
    assert info.length == path.stat().st_size
    assert info.hashes["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.custom["version"] == "1.1.0"
    served = repo.targets_dir / f"{info.hashes['sha256']}.corral-1.1.0.bundle"
    assert served.read_bytes() == path.read_bytes()
    downloaded = updater.download_target(info, str(tmp_path / "out.bundle"))
    assert Path(downloaded).read_bytes() == path.read_bytes()


def test_each_publish_moves_every_role_forward_and_pins_lengths_and_hashes(
    repo: ChannelRepository, tmp_path: Path
) -> None:
    repo.publish(bundle(tmp_path, "corral-1.1.0.bundle"), {"version": "1.1.0"})
    repo.publish(bundle(tmp_path, "corral-1.2.0.bundle"), {"version": "1.2.0"})
    timestamp = repo.timestamp().signed
    snapshot_bytes = (repo.metadata_dir / "3.snapshot.json").read_bytes()
    targets_bytes = (repo.metadata_dir / "3.targets.json").read_bytes()
    assert (timestamp.version, timestamp.snapshot_meta.version) == (3, 3)
    assert timestamp.snapshot_meta.hashes == {"sha256": hashlib.sha256(snapshot_bytes).hexdigest()}
    assert timestamp.snapshot_meta.length == len(snapshot_bytes)
    assert repo.snapshot().signed.meta["targets.json"].hashes == {
        "sha256": hashlib.sha256(targets_bytes).hexdigest()
    }
    assert sorted(repo.targets().signed.targets) == ["corral-1.1.0.bundle", "corral-1.2.0.bundle"]


def test_a_published_release_is_never_replaced(repo: ChannelRepository, tmp_path: Path) -> None:
    path = bundle(tmp_path, "corral-1.1.0.bundle")
    repo.publish(path, {"version": "1.1.0"})
    before = sorted(p.name for p in repo.metadata_dir.iterdir())
    with pytest.raises(RepositoryError, match="already published"):
        repo.publish(bundle(tmp_path, "corral-1.1.0.bundle", 8192), {"version": "1.1.0"})
    assert sorted(p.name for p in repo.metadata_dir.iterdir()) == before


def test_refreshing_the_timestamp_extends_it_and_keeps_the_snapshot(
    repo: ChannelRepository, tmp_path: Path
) -> None:
    later = datetime.now(UTC) + timedelta(hours=20)
    old = repo.timestamp().signed
    assert repo.refresh_timestamp(now=later) == old.version + 1
    new = repo.timestamp().signed
    assert new.snapshot_meta == old.snapshot_meta
    assert new.expires > old.expires
    updater, _ = client(repo, tmp_path / "state")
    updater.refresh()


def test_an_expired_timestamp_is_refused_by_the_client(tmp_path: Path) -> None:
    repo = ChannelRepository(
        tmp_path / "stable",
        RoleKeys.generate(tmp_path / "keys"),
        ExpiryPolicy(timestamp=timedelta(seconds=1)),
    )
    repo.create(now=datetime.now(UTC) - timedelta(seconds=10))
    updater, _ = client(repo, tmp_path / "state")
    with pytest.raises(tuf_errors.ExpiredMetadataError, match=r"timestamp\.json is expired"):
        updater.refresh()


def test_signing_keys_are_private_and_never_overwritten(tmp_path: Path) -> None:
    RoleKeys.generate(tmp_path / "keys")
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "keys").iterdir()} == {"0o600"}
    with pytest.raises(RepositoryError, match="refusing to overwrite"):
        RoleKeys.generate(tmp_path / "keys")


def test_the_root_names_one_ed25519_key_per_role_with_consistent_snapshots(repo: ChannelRepository) -> None:
    root = json.loads(repo.root_bytes())["signed"]
    assert root["consistent_snapshot"] is True
    assert sorted(root["roles"]) == ["root", "snapshot", "targets", "timestamp"]
    assert {key["keytype"] for key in root["keys"].values()} == {"ed25519"}
    assert len(root["keys"]) == 4


def test_the_update_server_answers_a_wrong_method_with_405_and_its_allow_header(tmp_path: Path) -> None:
    from updater.server.app import create_app
    from updater.server.config import ServerHome

    app = create_app(ServerHome(path=tmp_path, channels=(), expiry=ExpiryPolicy()))
    response = app.test_client().post("/v1/health")
    assert response.status_code == 405
    assert response.get_json()["reason"] == "method-not-allowed"
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "HEAD"}
