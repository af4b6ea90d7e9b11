"""Setting up an installation as a service function (``corral-updater init`` only parses and prints): a home
that works at once, nothing left behind by a refusal, and the same defaults whoever calls it."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from updater.cli.updater import build_parser
from updater.config import load_config
from updater.services.accounts import auth
from updater.services.installation import setup
from updater.store import queries
from updater.store.db import make_engine, session_factory, transaction
from updater.store.models import Role


def test_a_fresh_home_is_private_and_its_admin_signs_in_with_the_password_returned_once(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    result = setup.set_up(
        setup.SetupRequest(home=home, admin="olga", hostnames=("updater.example",)), actor="cli:root"
    )
    assert result.password not in repr(result)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for private in ("updater.db", "tls/key.pem"):
        assert stat.S_IMODE((home / private).stat().st_mode) == 0o600
    config = load_config(home)
    assert (config.bind, config.home) == (result.config.bind, home)
    engine = make_engine(config.effective_database_url)
    try:
        with transaction(session_factory(engine)) as db:
            user = auth.authenticate(db, auth.LoginThrottle(), "olga", result.password, None)
            assert user.role is Role.OPERATOR
            entries = [(e.actor, e.action, e.target) for e in queries.list_audit(db)]
            assert entries == [("cli:root", "init", "olga")]
    finally:
        engine.dispose()
    assert [p.name for p in tmp_path.iterdir()] == ["home"]  # the staging directory is gone


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cert": "/etc/hostname"}, "--cert and --key go together"),
        (
            {"trust_root": "/nonexistent/trust-root.json", "keyring": "/etc/hostname"},
            "cannot read the trust root",
        ),
        ({"channel_url": "https://updates.example"}, "go together"),
        ({"admin": "Olga"}, "lower-case letter"),
    ],
)
def test_a_refused_set_up_leaves_no_home_and_no_staging_directory(
    tmp_path: Path, change: dict[str, str], message: str
) -> None:
    request = dataclasses.replace(setup.SetupRequest(home=tmp_path / "home"), **change)
    with pytest.raises((setup.SetupRefused, auth.BadInput), match=message):
        setup.set_up(request, actor="cli:root")
    assert list(tmp_path.iterdir()) == []


def test_corral_updater_init_asks_for_what_the_service_would_choose_by_default(tmp_path: Path) -> None:
    args = build_parser().parse_args(["init"])
    defaults = setup.SetupRequest(home=tmp_path)
    for field in dataclasses.fields(setup.SetupRequest):
        if field.name in ("home", "hostnames"):
            continue
        assert getattr(args, field.name) == getattr(defaults, field.name), field.name
    assert args.hostname is None
    assert defaults.hostnames == ()
