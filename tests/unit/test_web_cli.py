"""``corral-updater`` from the host: init, users, tokens, history, status; every refusal changes nothing.

The vendor side (trust root, keyring, license) is made with the real ``corral-bundle`` tool.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from updater.cli.updater import main
from updater.config import load_config
from updater.https.certificates import self_signed
from updater.services.accounts import auth
from updater.store import queries as q
from updater.store.db import current_revision, head_revision, make_engine, session_factory, transaction

BUNDLE_TOOL = Path(sys.executable).with_name("corral-bundle")


def run(home: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def password_from(out: str) -> str:
    line = next(line for line in out.splitlines() if "password:" in line)
    return line.split("password:")[1].split()[0]


def users_and_audit(home: Path) -> tuple[list[tuple[str, str, bool]], list[str]]:
    engine = make_engine(load_config(home).effective_database_url)
    try:
        with transaction(session_factory(engine)) as db:
            users = [(u.username, str(u.role), u.disabled) for u in q.list_users(db)]
            actions = [e.action for e in reversed(q.list_audit(db))]
    finally:
        engine.dispose()
    return users, actions


def login_works(home: Path, username: str, password: str) -> bool:
    engine = make_engine(load_config(home).effective_database_url)
    try:
        with transaction(session_factory(engine)) as db:
            auth.authenticate(db, auth.LoginThrottle(), username, password, None)
        return True
    except auth.InvalidCredentials:
        return False
    finally:
        engine.dispose()


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    home = tmp_path / "home"
    code, _out, err = run(home, "init", "--bind", "127.0.0.1:18443", capsys=capsys)
    assert code == 0, err
    return home


def test_init_sets_up_a_private_home_an_admin_a_certificate_and_a_migrated_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    code, out, _ = run(home, "init", "--admin", "root-op", "--hostname", "updates.example", capsys=capsys)
    assert code == 0
    password = password_from(out)
    assert "shown once" in out
    assert login_works(home, "root-op", password)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for private in ["secret_key", "tls/key.pem", "updater.db"]:
        assert stat.S_IMODE((home / private).stat().st_mode) == 0o600, private
    cert = x509.load_pem_x509_certificate((home / "tls/cert.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "updates.example" in names.get_values_for_type(x509.DNSName)
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    engine = make_engine(load_config(home).effective_database_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()
    assert users_and_audit(home) == ([("root-op", "operator", False)], ["init"])
    assert [p.name for p in tmp_path.iterdir()] == ["home"]  # no staging directory left behind


def test_init_twice_is_refused_and_changes_nothing(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p: p.read_bytes() for p in home.rglob("*") if p.is_file() and p.name != "updater.db"}
    code, _, err = run(home, "init", capsys=capsys)
    assert code == 2
    assert "already set up; use --force" in err
    assert {p: p.read_bytes() for p in home.rglob("*") if p.is_file() and p.name != "updater.db"} == before


def test_init_force_keeps_history_and_resets_the_admin_password(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(home, "user", "add", "vera", "--role", "viewer", capsys=capsys)[0] == 0
    old_key = (home / "secret_key").read_bytes()
    code, out, _ = run(home, "init", "--force", capsys=capsys)
    assert code == 0
    assert login_works(home, "admin", password_from(out))
    users, actions = users_and_audit(home)
    assert users == [("admin", "operator", False), ("vera", "viewer", False)]
    assert actions == ["init", "user.add", "init"]
    assert (home / "secret_key").read_bytes() != old_key  # every old session is signed out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cert", "/etc/hostname"], "--cert and --key go together"),
        (["--cert", "/etc/hostname", "--key", "/etc/hostname"], "not a PEM certificate"),
        (["--database-url", "mysql://db/x"], "database_url must start with sqlite: or postgresql+psycopg:"),
        (["--redis-url", "http://x"], "redis_url must be"),
        (["--admin", "Admin"], "lower-case letter"),
        (["--inventory", "/nonexistent/inventory.yml"], "does not exist"),
        (
            ["--license", "/etc/hostname", "--entitlement-key", "/etc/hostname"],
            "give --trust-root and --keyring",
        ),
        (["--trust-root", "/etc/hostname"], "--trust-root and --keyring go together"),
        (["--session-lifetime", "0"], "session_lifetime_seconds must be a positive"),
    ],
)
def test_bad_init_input_is_refused_before_anything_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = run(tmp_path / "home", "init", *args, capsys=capsys)
    assert code == 2
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_init_takes_the_operators_own_certificate_and_refuses_a_key_of_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine, other = self_signed(["a.example"]), self_signed(["b.example"])
    (tmp_path / "cert.pem").write_bytes(mine.cert_pem)
    (tmp_path / "key.pem").write_bytes(mine.key_pem)
    (tmp_path / "other.pem").write_bytes(other.key_pem)
    code, _, err = run(
        tmp_path / "home", "init", "--cert", str(tmp_path / "cert.pem"), "--key", str(tmp_path / "other.pem"),
        capsys=capsys,
    )  # fmt: skip
    assert code == 2
    assert "the key does not belong to the certificate" in err
    assert not (tmp_path / "home").exists()
    code, _, _ = run(
        tmp_path / "home", "init", "--cert", str(tmp_path / "cert.pem"), "--key", str(tmp_path / "key.pem"),
        capsys=capsys,
    )  # fmt: skip
    assert code == 0
    assert (tmp_path / "home/tls/cert.pem").read_bytes() == mine.cert_pem


def _vendor(tmp_path: Path) -> tuple[Path, Path, Path]:
    def tool(*args: str) -> None:
        subprocess.run([str(BUNDLE_TOOL), *args], check=True, capture_output=True, text=True)

    tool("keys", "init", "--dir", str(tmp_path / "V"))
    tool(
        "license", "issue", "--vendor", str(tmp_path / "V"), "--out", str(tmp_path / "L"),
        "--customer", "ACME", "--channel", "stable", "--id", "lic-7", "--nodes", "8",
        "--updates-until", "2027-12-31", "--expires", "2028-06-30",
    )  # fmt: skip
    return tmp_path / "V", tmp_path / "L" / "lic-7.license", tmp_path / "L" / "lic-7.key"


def test_init_imports_a_verified_keyring_and_license_and_status_shows_the_license(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vendor, lic, key = _vendor(tmp_path)
    home = tmp_path / "home"
    code, out, err = run(
        home, "init", "--trust-root", str(vendor / "trust-root.json"),
        "--keyring", str(vendor / "keyring.json"), "--license", str(lic), "--entitlement-key", str(key),
        capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    secret = key.read_text().strip()
    assert secret not in out
    # The license document and its entitlement key are both stored readable by root only.
    for private in ("trust/entitlement-key", "trust/license.json"):
        assert stat.S_IMODE((home / private).stat().st_mode) == 0o600, private
    code, out, _ = run(home, "status", "--json", capsys=capsys)
    status = json.loads(out)
    assert status["license"] == {
        "license_id": "lic-7",
        "customer": "ACME",
        "channels": ["stable"],
        "node_entitlement": 8,
        "updates_until": "2027-12-31",
        "expires": "2028-06-30",
    }
    assert secret not in out


def test_init_refuses_an_entitlement_key_of_another_license(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vendor, lic, _key = _vendor(tmp_path)
    wrong = tmp_path / "wrong.key"
    wrong.write_text("corral-ek1-" + "A" * 43 + "\n")
    code, _, err = run(
        tmp_path / "home", "init", "--trust-root", str(vendor / "trust-root.json"),
        "--keyring", str(vendor / "keyring.json"), "--license", str(lic), "--entitlement-key", str(wrong),
        capsys=capsys,
    )  # fmt: skip
    assert code == 2
    assert "entitlement key" in err
    assert not (tmp_path / "home").exists()


def test_users_and_tokens_from_the_cli(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(home, "user", "add", "vera", "--role", "viewer", capsys=capsys)
    assert code == 0
    assert login_works(home, "vera", password_from(out))
    assert (
        run(home, "user", "add", "vera", "--role", "viewer", capsys=capsys)[2]
        .strip()
        .endswith("user 'vera' already exists")
    )
    assert "role must be one of" in run(home, "user", "add", "nina", "--role", "admin", capsys=capsys)[2]
    code, out, _ = run(home, "token", "create", "vera", "--name", "ci", capsys=capsys)
    assert code == 0
    token = out.strip()
    engine = make_engine(load_config(home).effective_database_url)
    with transaction(session_factory(engine)) as db:
        assert auth.user_for_token(db, token).username == "vera"
    engine.dispose()
    assert run(home, "token", "create", "nobody", "--name", "ci", capsys=capsys)[0] == 2
    assert run(home, "user", "disable", "vera", capsys=capsys)[0] == 0
    listing = run(home, "user", "list", capsys=capsys)[1]
    assert "vera" in listing
    assert "disabled" in listing
    users, actions = users_and_audit(home)
    assert actions == ["init", "user.add", "token.create", "user.disable"]
    assert users == [("admin", "operator", False), ("vera", "viewer", True)]


def test_commands_on_a_home_that_was_never_set_up_say_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(tmp_path / "nothing", "history", capsys=capsys)
    assert code == 2
    assert "run `corral-updater init --home" in err
    assert not (tmp_path / "nothing").exists()


def test_history_lists_rollouts_with_per_node_durations(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(home, "history", capsys=capsys)[1].strip() == "no rollout yet"
    code, out, _ = run(home, "history", "--json", capsys=capsys)
    assert code == 0
    assert json.loads(out) == []
