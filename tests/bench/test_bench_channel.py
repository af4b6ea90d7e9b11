"""Update channel figures over loopback HTTPS against the real ``corral-update-server`` process.

* download throughput of one bundle (signed requests, TLS, hashing while writing, fsync) next to a plain
  ``sha256sum`` of the same file on this machine, run alternately with the downloads so both see the same
  machine, and the ratio of the two;
* time for a channel refresh (root, timestamp, snapshot, targets with signature checks).

Smoke size (default): a 32 MiB bundle. Full size (CORRAL_BENCH_SIZE=full): 1 GiB. Figures are recorded
(the console shows them at the end of the tier); the tests assert only that what was downloaded is the
published file, never a time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from tests.integration.conftest import UpdateServer, Vendor, run_cli
from tests.integration.conftest import tls as tls_fixture
from tests.integration.conftest import vendor as vendor_fixture
from tests.support.figures import Figures
from tests.support.net import free_port
from updater.services.channel.client import ChannelClient

FULL = os.environ.get("CORRAL_BENCH_SIZE") == "full"
IMAGE_SIZE = (1024 if FULL else 32) * 1024 * 1024
MIB = 1024 * 1024

tls = tls_fixture
vendor = vendor_fixture


@pytest.fixture(scope="module")
def channel(
    tmp_path_factory: pytest.TempPathFactory, tls, vendor: Vendor
) -> Iterator[tuple[UpdateServer, Path]]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("bench-server") / "home"
    run_cli(home, "init", "--trust-root", str(vendor.trust_root), "--keyring", str(vendor.keyring))
    bundle = vendor.build_bundle("2.0.0", image=vendor.image("bench-image.tar", IMAGE_SIZE))
    run_cli(home, "publish", str(bundle))
    server = UpdateServer(home=home, url=f"https://127.0.0.1:{free_port()}", tls=tls)
    server.start("--refresh-timestamp-every", "0")
    license_file, key_file = vendor.issue_license("lic-bench", channels=["stable"])
    server.add_license(license_file, key_file)
    yield server, bundle
    server.stop()


def _client(server: UpdateServer, vendor: Vendor, state: Path) -> ChannelClient:
    licenses = sorted(vendor.work.glob("licenses-*/lic-bench.license"))
    return server.client(licenses[-1], licenses[-1].with_suffix(".key"), "stable", state)


def test_bench_channel_refresh(
    benchmark: BenchmarkFixture,
    figures: Figures,
    channel: tuple[UpdateServer, Path],
    vendor: Vendor,
    tmp_path: Path,
) -> None:
    server, _bundle = channel
    runs = iter(range(10_000))

    def refresh() -> None:
        # a first refresh each time: a new installation state, so every role is fetched and verified
        _client(server, vendor, tmp_path / f"state{next(runs)}").refresh()

    benchmark.pedantic(refresh, rounds=5, iterations=1)
    figures.record("cold refresh (4 roles), mean", benchmark.stats.stats.mean * 1000, "ms")


def _file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _sha256sum_seconds(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run([shutil.which("sha256sum") or "sha256sum", str(path)], check=True, capture_output=True)
    return time.perf_counter() - started


def test_bench_channel_download_throughput(
    benchmark: BenchmarkFixture,
    figures: Figures,
    channel: tuple[UpdateServer, Path],
    vendor: Vendor,
    tmp_path: Path,
) -> None:
    server, bundle = channel
    client = _client(server, vendor, tmp_path / "state")
    client.refresh()
    (release,) = client.releases()
    runs = iter(range(10_000))
    sums: list[float] = []

    def baseline() -> None:  # untimed setup of each round: the baseline alternates with the downloads
        sums.append(_sha256sum_seconds(bundle))

    def download() -> Path:
        return client.download(release, tmp_path / f"dl{next(runs)}")

    path = benchmark.pedantic(download, setup=baseline, rounds=3, iterations=1)
    assert path.stat().st_size == bundle.stat().st_size
    assert _file_sha256(path) == _file_sha256(bundle)
    size_mib = bundle.stat().st_size / MIB
    figures.record(
        f"download {size_mib:.0f} MiB over loopback HTTPS",
        size_mib / benchmark.stats.stats.min,
        "MiB/s",
        baseline=("sha256sum", size_mib / min(sums)),
    )
