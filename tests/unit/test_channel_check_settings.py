"""The update channel's settings: what ``corral-updater init`` accepts and refuses (nothing written on a
refusal), what the configuration file may hold, and what the channel check and a download say when the
channel cannot be used, before any network is involved.

The vendor side is real: keys, license and the channel's TUF root come from the vendor tools and the
reference update server's own ``init`` (run in-process on a temporary directory).
"""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.unit.bundle_kit import IssuedLicense, Kit, issue, make_kit
from updater.cli.updater import main
from updater.config import ConfigError, ServiceConfig, load_config
from updater.https.certificates import self_signed
from updater.server.cli import main as server_main
from updater.services.channel.check import check_channel
from updater.services.channel.setup import ChannelSetupError, load_channel
from updater.store import queries as q
from updater.store.db import make_engine, session_factory, transaction
from updater.store.models import Outcome


class Vendor:
    """A vendor with a license for ``stable`` and ``beta`` and a reference server home serving both."""

    def __init__(self, root: Path) -> None:
        self.kit: Kit = make_kit(root)
        self.license: IssuedLicense = issue(self.kit, channels=("stable", "beta"), license_id="lic-cc")
        self.single: IssuedLicense = issue(self.kit, channels=("stable",), license_id="lic-one")
        server = root / "server"
        server_args = ["--home", str(server), "init", "--trust-root", str(self.kit.vendor.trust_root)]
        server_args += ["--keyring", str(self.kit.vendor.keyring), "--channel", "stable", "--channel", "beta"]
        assert server_main(server_args) == 0
        self.channel_root = server / "channels/stable/metadata/1.root.json"
        self.ca = root / "ca.pem"
        self.ca.write_bytes(self_signed(["updates.example"]).cert_pem)

    def trust_args(self, lic: IssuedLicense) -> list[str]:
        return [
            "--trust-root", str(self.kit.vendor.trust_root), "--keyring", str(self.kit.vendor.keyring),
            "--license", str(lic.license_path), "--entitlement-key", str(lic.key_path),
        ]  # fmt: skip

    def channel_args(self, **override: str) -> list[str]:
        values = {
            "--channel-url": "https://127.0.0.1:9",
            "--channel-ca": str(self.ca),
            "--channel-root": str(self.channel_root),
        }
        values.update({f"--{k.replace('_', '-')}": v for k, v in override.items()})
        return [item for pair in values.items() for item in pair if pair[1] != ""]


@pytest.fixture
def vendor(tmp_path: Path) -> Vendor:
    return Vendor(tmp_path / "vendor-side")


def init(home: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["--home", str(home), "init", "--bind", "127.0.0.1:18443", *args])
    return code, capsys.readouterr().err


def test_init_sets_up_the_channel_from_the_license_and_keeps_copies_of_its_ca_and_root(
    tmp_path: Path, vendor: Vendor, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    code, err = init(
        home, *vendor.trust_args(vendor.single), *vendor.channel_args(), "--download-rate-limit", "1000000",
        capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    config = load_config(home)
    assert (config.channel_url, config.channel, config.download_rate_limit_bytes) == (
        "https://127.0.0.1:9",
        "stable",  # the license's only channel
        1_000_000,
    )
    assert Path(config.channel_ca_file) == home / "trust/channel-ca.pem"
    assert Path(config.channel_ca_file).read_bytes() == vendor.ca.read_bytes()
    assert config.channel_root_path.read_bytes() == vendor.channel_root.read_bytes()
    settings = json.loads((home / "updater.json").read_text())
    assert vendor.single.key_path.read_text().strip() not in json.dumps(settings)
    assert stat.S_IMODE((home / "trust").stat().st_mode) == 0o700
    context = load_channel(config, now=datetime.now(UTC))
    assert context.settings.channel == "stable"
    assert context.settings.license_id == vendor.single.license.license_id
    assert context.settings.trusted_root == vendor.channel_root.read_bytes()


def test_init_takes_the_channel_asked_for_when_the_license_covers_several(
    tmp_path: Path, vendor: Vendor, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    code, err = init(home, *vendor.trust_args(vendor.license), *vendor.channel_args(), capsys=capsys)
    assert code == 2
    assert "covers channels beta, stable: say which to follow with --channel" in err
    assert not home.exists()
    code, err = init(
        home, *vendor.trust_args(vendor.license), *vendor.channel_args(channel="beta"), capsys=capsys
    )
    assert code == 0, err
    assert load_config(home).channel == "beta"


def test_init_adds_the_channel_to_a_home_that_already_holds_the_license(
    tmp_path: Path, vendor: Vendor, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert init(home, *vendor.trust_args(vendor.single), capsys=capsys)[0] == 0
    assert load_config(home).channel_configured is False
    code, err = init(home, "--force", *vendor.channel_args(), capsys=capsys)
    assert code == 0, err
    assert load_config(home).channel == "stable"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"channel_url": "http://127.0.0.1:9"}, "channel_url must be an https:// URL (got scheme 'http')"),
        ({"channel_url": "ftp://updates.example"}, "channel_url must be an https:// URL (got scheme 'ftp')"),
        ({"channel_url": "https://"}, "channel_url must be https://HOST[:PORT][/PATH]"),
        ({"channel_ca": "/nonexistent/ca.pem"}, "cannot read the channel CA file /nonexistent/ca.pem"),
        ({"channel_ca": "/etc/hostname"}, "the channel CA file /etc/hostname holds no PEM certificate"),
        ({"channel_root": "/etc/hostname"}, "the channel root is not TUF root metadata"),
        ({"channel_root": ""}, "--channel-url, --channel-ca and --channel-root go together"),
        ({"channel": "nightly"}, "covers channel(s) stable, not 'nightly'"),
    ],
)
def test_bad_channel_settings_are_refused_at_init_and_nothing_is_written(
    tmp_path: Path,
    vendor: Vendor,
    capsys: pytest.CaptureFixture[str],
    override: dict[str, str],
    message: str,
) -> None:
    home = tmp_path / "home"
    code, err = init(home, *vendor.trust_args(vendor.single), *vendor.channel_args(**override), capsys=capsys)
    assert code == 2
    assert message in err
    assert not home.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["vendor-side"]


def test_a_channel_root_of_another_tuf_role_is_refused(
    tmp_path: Path, vendor: Vendor, capsys: pytest.CaptureFixture[str]
) -> None:
    timestamp = vendor.channel_root.with_name("timestamp.json")
    args = [*vendor.trust_args(vendor.single), *vendor.channel_args(channel_root=str(timestamp))]
    code, err = init(tmp_path / "home", *args, capsys=capsys)
    assert code == 2
    assert "the channel root is TUF timestamp metadata, not root" in err


def test_a_channel_needs_a_license(
    tmp_path: Path, vendor: Vendor, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = init(tmp_path / "home", *vendor.channel_args(), capsys=capsys)
    assert code == 2
    assert "the update channel is used under a license" in err
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"channel_url": "https://u.example"}, "needs channel_url, channel_ca_file and channel together"),
        (
            {"channel_url": "gopher://u.example", "channel_ca_file": "/ca", "channel": "stable"},
            "channel_url must be an https:// URL",
        ),
        (
            {"channel_url": "https://u.example/?x=1", "channel_ca_file": "/ca", "channel": "stable"},
            "no query, fragment or user",
        ),
        (
            {"channel_url": "https://u.example:70000", "channel_ca_file": "/ca", "channel": "stable"},
            "channel_url has an invalid port",
        ),
        (
            {"channel_url": "https://u.example", "channel_ca_file": "/ca", "channel": "Stable"},
            "channel 'Stable' must be lower-case",
        ),
        ({"download_rate_limit_bytes": -1}, "download_rate_limit_bytes must be 0 (no limit) or more"),
        ({"download_rate_limit_bytes": True}, "download_rate_limit_bytes must be 0 (no limit) or more"),
    ],
)
def test_a_hand_edited_settings_file_with_a_bad_channel_is_refused_when_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: dict[str, object], message: str
) -> None:
    home = tmp_path / "home"
    assert init(home, capsys=capsys)[0] == 0
    data = json.loads((home / "updater.json").read_text())
    (home / "updater.json").write_text(json.dumps({**data, **settings}))
    with pytest.raises(ConfigError) as refused:
        load_config(home)
    assert message in str(refused.value)


def _audit(config: ServiceConfig) -> list[tuple[str, str, Outcome, str]]:
    engine = make_engine(config.effective_database_url)
    try:
        with transaction(session_factory(engine)) as db:
            return [(e.actor, e.action, e.outcome, e.detail) for e in reversed(q.list_audit(db))]
    finally:
        engine.dispose()


def test_without_a_channel_the_check_says_so_and_records_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert init(home, capsys=capsys)[0] == 0
    config = load_config(home)
    engine = make_engine(config.effective_database_url)
    try:
        result = check_channel(config, session_factory(engine), actor="beat")
    finally:
        engine.dispose()
    assert result.checked is False
    assert result.message.startswith(f"no update channel is configured in {home / 'updater.json'}")
    assert _audit(config)[-1] == ("beat", "channel.check", Outcome.FAILED, result.message)


def test_a_channel_whose_trust_files_went_missing_is_a_recorded_failure_not_a_crash(
    tmp_path: Path, vendor: Vendor, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert init(home, *vendor.trust_args(vendor.single), *vendor.channel_args(), capsys=capsys)[0] == 0
    config = load_config(home)
    config.channel_root_path.unlink()
    with pytest.raises(ChannelSetupError, match=r"the channel root .* is missing"):
        load_channel(config, now=datetime.now(UTC))
    engine = make_engine(config.effective_database_url)
    try:
        result = check_channel(config, session_factory(engine), actor="beat")
    finally:
        engine.dispose()
    assert result.checked is False
    assert "channel-setup: the channel root" in result.message
    actor, action, outcome, detail = _audit(config)[-1]
    assert (actor, action, outcome) == ("beat", "channel.check", Outcome.FAILED)
    assert detail.startswith("channel stable at https://127.0.0.1:9: channel-setup")
