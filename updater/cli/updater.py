"""``corral-updater``: set up and run the update service, and manage its users from the host.

The commands call the same service functions as the web UI and the API. Exit codes: 0 done, 2 refused
(bad input or state; the one-line message says why and nothing was changed), 1 unexpected error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from updater.cli import release_commands, rollout_commands, self_update_commands
from updater.config import (
    CHANNEL_ROOT_FILE,
    HOME_ENV,
    SETTINGS_FILE,
    ConfigError,
    ServiceConfig,
    check_ca_file,
    home_from_env,
    known_secrets,
    load_config,
    save_settings,
    write_secret_key,
)
from updater.domain.errors import VerificationError
from updater.domain.keyring import TrustStore
from updater.domain.license import check_entitlement_key, parse_entitlement_key, verify_license
from updater.https.certificates import CertificateError, check_pair, self_signed
from updater.services.accounts import audit, auth
from updater.services.channel.setup import check_channel_root, choose_channel
from updater.services.installation.overview import KEYRING_FILE, LICENSE_FILE, TRUST_ROOT_FILE, build_overview
from updater.store import queries
from updater.store.db import StoreError, current_revision, make_engine, migrate, session_factory, transaction
from updater.store.models import Role
from updater.tasks.app import run_beat, run_worker
from updater.views.json_views import rollout_json
from updater.web import create_app
from updater.web.wsgi import serve

ENTITLEMENT_KEY_FILE = "entitlement-key"
CHANNEL_CA_FILE = "channel-ca.pem"


class UsageError(Exception):
    """Refused input or state; the message says what to do."""


REFUSALS: tuple[type[Exception], ...] = (
    UsageError,
    ConfigError,
    StoreError,
    CertificateError,
    VerificationError,
    auth.BadInput,
    queries.AlreadyExists,
    queries.NotFound,
)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _config(args: argparse.Namespace) -> ServiceConfig:
    return load_config(home_from_env(args.home))


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


# --- init ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TrustFiles:
    root: bytes
    keyring: bytes
    license: bytes | None
    entitlement_key: str | None


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read the {what} {path}: {error.strerror}") from None


def _check_trust(args: argparse.Namespace, home: Path) -> _TrustFiles | None:
    """Verify the keyring and license to import (the bundle verifiers) before anything is written."""
    root, keyring = _read(args.trust_root, "trust root"), _read(args.keyring, "keyring")
    lic, key_text = _read(args.license, "license"), _read(args.entitlement_key, "entitlement key")
    if (root is None) != (keyring is None):
        raise UsageError("--trust-root and --keyring go together")
    if (lic is None) != (key_text is None):
        raise UsageError("--license and --entitlement-key go together")
    if root is None or keyring is None:
        if lic is None:
            return None
        existing = home / "trust"
        if not (existing / KEYRING_FILE).exists():
            raise UsageError(
                "a license is verified against the vendor keyring: give --trust-root and --keyring too"
            )
        root, keyring = (existing / TRUST_ROOT_FILE).read_bytes(), (existing / KEYRING_FILE).read_bytes()
    now = datetime.now(UTC)
    store = TrustStore.load(root, keyring, now=now)
    store.keyring.check_not_expired(now=now)  # load() accepts an expired one so a newer can replace it
    key = None
    if lic is not None and key_text is not None:
        verified = verify_license(lic, store.keyring, now=now)
        key = key_text.decode("utf-8", "replace").strip()
        check_entitlement_key(verified, parse_entitlement_key(key))
    return _TrustFiles(root, keyring, lic, key)


@dataclass(frozen=True)
class _ChannelFiles:
    name: str
    root: bytes
    ca: bytes


def _check_channel(args: argparse.Namespace, home: Path, trust: _TrustFiles | None) -> _ChannelFiles | None:
    """Check the update channel's CA, TUF root and the license's channel before anything is written."""
    given = (args.channel_url, args.channel_ca, args.channel_root)
    if not any(given) and not args.channel:
        return None
    if not all(given):
        raise UsageError("--channel-url, --channel-ca and --channel-root go together")
    ca = check_ca_file(Path(args.channel_ca))
    root = _read(args.channel_root, "channel root") or b""
    check_channel_root(root)
    existing = home / "trust"
    if trust is not None and trust.license is not None:
        lic_doc = trust.license
    elif (existing / LICENSE_FILE).exists() and (existing / ENTITLEMENT_KEY_FILE).exists():
        lic_doc = (existing / LICENSE_FILE).read_bytes()
    else:
        raise UsageError("the update channel is used under a license: give --license and --entitlement-key")
    now = datetime.now(UTC)
    if trust is not None:  # the trust being installed now, else the one already in the home
        root_doc, keyring = trust.root, trust.keyring
    else:
        root_doc, keyring = (existing / TRUST_ROOT_FILE).read_bytes(), (existing / KEYRING_FILE).read_bytes()
    lic = verify_license(lic_doc, TrustStore.load(root_doc, keyring, now=now).keyring, now=now)
    return _ChannelFiles(choose_channel(lic, args.channel), root, ca)


def _certificate(args: argparse.Namespace) -> tuple[bytes, bytes]:
    if (args.cert is None) != (args.key is None):
        raise UsageError("--cert and --key go together")
    if args.cert is not None:
        cert, key = _read(args.cert, "certificate"), _read(args.key, "key")
        if cert is None or key is None:
            raise UsageError("--cert and --key go together")
        check_pair(cert, key)
        return cert, key
    pair = self_signed(args.hostname or [])
    return pair.cert_pem, pair.key_pem


def _settings_from(args: argparse.Namespace, home: Path, channel: _ChannelFiles | None) -> ServiceConfig:
    return ServiceConfig(
        home=home,
        database_url=args.database_url or "",
        redis_url=args.redis_url,
        bind=args.bind,
        inventory_path=str(Path(args.inventory).absolute()) if args.inventory else "",
        channel_check_interval_seconds=args.channel_check_interval,
        max_upload_bytes=args.max_upload_bytes,
        session_lifetime_seconds=args.session_lifetime,
        channel_url=args.channel_url if channel else "",
        channel_ca_file=str(home / "trust" / CHANNEL_CA_FILE) if channel else "",
        channel=channel.name if channel else "",
        download_rate_limit_bytes=args.download_rate_limit,
        secret_key=secrets.token_bytes(32),
    )


def _stage_files(
    stage: Path,
    config: ServiceConfig,
    cert: tuple[bytes, bytes],
    trust: _TrustFiles | None,
    channel: _ChannelFiles | None,
) -> None:
    save_settings(config.with_overrides(home=stage))
    write_secret_key(stage, config.secret_key)
    (stage / "tls").mkdir(mode=0o700)
    (stage / "tls" / "cert.pem").write_bytes(cert[0])
    _write_private(stage / "tls" / "key.pem", cert[1])
    if trust is not None:
        (stage / "trust").mkdir(mode=0o700)
        (stage / "trust" / TRUST_ROOT_FILE).write_bytes(trust.root)
        (stage / "trust" / KEYRING_FILE).write_bytes(trust.keyring)
        if trust.license is not None and trust.entitlement_key is not None:
            _write_private(stage / "trust" / LICENSE_FILE, trust.license)
            _write_private(stage / "trust" / ENTITLEMENT_KEY_FILE, trust.entitlement_key.encode() + b"\n")
    if channel is not None:
        (stage / "trust").mkdir(mode=0o700, exist_ok=True)
        (stage / "trust" / CHANNEL_ROOT_FILE).write_bytes(channel.root)
        (stage / "trust" / CHANNEL_CA_FILE).write_bytes(channel.ca)


def _set_up_database(url: str, admin: str, *, force: bool) -> str:
    """Migrate and create (or, with --force, reset) the admin; returns the admin's new password."""
    engine = make_engine(url)
    try:
        migrate(engine)
        password = auth.generate_password()
        with transaction(session_factory(engine)) as db:
            user = queries.find_user(db, admin)
            if user is None:
                auth.create_user(db, admin, password, Role.OPERATOR)
            elif not force:
                raise UsageError(
                    f"the database already has a user {admin!r}; use --force to reset its password"
                )
            else:
                user.password_hash, user.role, user.disabled = (
                    auth.hash_password(password),
                    Role.OPERATOR,
                    False,
                )
            audit.record(db, actor=_actor(), action="init", target=admin, detail="admin account set up")
        return password
    finally:
        engine.dispose()


def cmd_init(args: argparse.Namespace) -> int:
    home = home_from_env(args.home)
    if (home / SETTINGS_FILE).exists() and not args.force:
        raise UsageError(f"{home} is already set up; use --force to set it up again (history is kept)")
    auth.validate_username(args.admin)
    if args.inventory and not Path(args.inventory).exists():
        raise UsageError(f"inventory {args.inventory} does not exist")
    trust = _check_trust(args, home)
    channel = _check_channel(args, home, trust)
    config = _settings_from(args, home, channel)
    cert = _certificate(args)
    home.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{home.name}.init-", dir=home.parent))
    try:
        _stage_files(stage, config, cert, trust, channel)
        existing = home.exists()
        # A fresh SQLite database is built in the staging directory; an existing one is migrated in place.
        url = config.database_url or f"sqlite:///{(home if existing else stage) / 'updater.db'}"
        password = _set_up_database(url, args.admin, force=args.force)
        if existing:
            for item in sorted(stage.rglob("*")):
                target = home / item.relative_to(stage)
                if item.is_dir():
                    target.mkdir(mode=0o700, exist_ok=True)
                else:
                    os.replace(item, target)
        else:
            stage.rename(home)
            home.chmod(0o700)
        if not config.database_url:
            (home / "updater.db").chmod(0o600)  # password and token hashes
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print("update service set up in", home)
    print(f"  web:      https://{config.bind}/  (corral-updater web --home {home})")
    print(f"  admin:    {args.admin}")
    print(f"  password: {password}   (shown once; only its argon2id hash is stored)")
    return 0


# --- users and tokens ---------------------------------------------------------------------------------------


def _with_db(config: ServiceConfig, work: Callable[[Any], int]) -> int:
    engine = make_engine(config.effective_database_url)
    try:
        migrate(engine)
        with transaction(session_factory(engine)) as db:
            return work(db)
    finally:
        engine.dispose()


def cmd_user_add(args: argparse.Namespace) -> int:
    role = auth.parse_role(args.role)
    password = auth.generate_password()

    def work(db: Any) -> int:
        auth.create_user(db, args.username, password, role)
        audit.record(db, actor=_actor(), action="user.add", target=args.username, detail=f"role {role}")
        return 0

    _with_db(_config(args), work)
    print(f"user {args.username} ({role}) created; password: {password}   (shown once)")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    def work(db: Any) -> int:
        for user in queries.list_users(db):
            state = "disabled" if user.disabled else "active"
            print(f"{user.username:24} {user.role!s:9} {state:9} {user.created_at:%Y-%m-%d %H:%M}Z")
        return 0

    return _with_db(_config(args), work)


def _cmd_set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    def work(db: Any) -> int:
        auth.set_disabled(db, args.username, disabled)
        action = "user.disable" if disabled else "user.enable"
        audit.record(db, actor=_actor(), action=action, target=args.username)
        return 0

    _with_db(_config(args), work)
    print(f"user {args.username} {'disabled' if disabled else 'enabled'}")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    tokens: list[str] = []

    def work(db: Any) -> int:
        user = queries.get_user(db, args.username)
        tokens.append(auth.create_token(db, user, args.name, valid_days=args.days))
        audit.record(
            db, actor=_actor(), action="token.create", target=args.username, detail=f"token {args.name}"
        )
        return 0

    _with_db(_config(args), work)
    print(tokens[0])
    print(
        f"(API token {args.name!r} for {args.username}; shown once, only its hash is stored)", file=sys.stderr
    )
    return 0


# --- reading ------------------------------------------------------------------------------------------------


def cmd_history(args: argparse.Namespace) -> int:
    def work(db: Any) -> int:
        rollouts = queries.list_rollouts(db, limit=args.limit)
        if args.json:
            print(json.dumps([rollout_json(r) for r in rollouts], indent=2))
            return 0
        if not rollouts:
            print("no rollout yet")
        for r in rollouts:
            started = f"{r.started_at:%Y-%m-%d %H:%M}Z" if r.started_at else "not started"
            durations = ", ".join(
                f"{s.node} {s.duration_seconds:.0f}s" if s.duration_seconds is not None else f"{s.node} -"
                for s in r.steps
            )
            release = r.target_release.version
            print(f"{r.id}  {release:12} {r.state!s:10} {r.created_by:16} {started}  {durations}")
        return 0

    return _with_db(_config(args), work)


def cmd_status(args: argparse.Namespace) -> int:
    config = _config(args)

    def work(db: Any) -> int:
        overview = build_overview(db, config)
        if args.json:
            print(json.dumps(overview.as_json(), indent=2))
            return 0
        print(f"installed release: {overview.installed_release or 'not recorded yet'}")
        if overview.license:
            lic = overview.license
            print(
                f"license: {lic.customer} ({lic.license_id}), channels {', '.join(lic.channels)}, "
                f"{lic.node_entitlement} nodes, updates until {lic.updates_until}"
            )
        seen = overview.observed_at.isoformat(timespec="seconds") if overview.observed_at else "never"
        print(f"cluster: {overview.cluster_health} (observed: {seen})")
        for node in overview.nodes:
            print(
                f"  {node.name:20} {node.site}/{node.rack or '-':10} {node.release or 'unknown':10} "
                f"{node.health:11} {node.state}" + (f"  ({node.health_detail})" if node.health_detail else "")
            )
        for problem in overview.problems:
            print(f"problem: {problem}")
        return 0

    return _with_db(config, work)


def cmd_migrate(args: argparse.Namespace) -> int:
    config = _config(args)
    engine = make_engine(config.effective_database_url)
    try:
        migrate(engine)
        print(f"database at revision {current_revision(engine)}")
    finally:
        engine.dispose()
    return 0


# --- processes ----------------------------------------------------------------------------------------------


def _service_logging(config: ServiceConfig) -> None:
    """Log to stderr through the redaction filter (gunicorn and Celery add their own handlers beside it)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    auth.install_redaction(auth.RedactSecrets(known_secrets(config)))


def cmd_web(args: argparse.Namespace) -> int:
    config = _config(args)
    _service_logging(config)
    for path in (config.cert_path, config.key_path):
        if not path.exists():
            raise UsageError(f"{path} is missing: HTTPS needs the certificate from `corral-updater init`")
    engine = make_engine(config.effective_database_url)
    migrate(engine)  # the service starts on the schema its code expects
    serve(create_app(config, engine=engine), config, bind=args.bind)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    config = _config(args)
    engine = make_engine(config.effective_database_url)
    migrate(engine)
    engine.dispose()
    run_worker(config, concurrency=args.concurrency, loglevel=args.loglevel)
    return 0


def cmd_beat(args: argparse.Namespace) -> int:
    run_beat(_config(args), loglevel=args.loglevel)
    return 0


# --- parser -------------------------------------------------------------------------------------------------


def _add_init(commands: Any) -> None:
    init = commands.add_parser(
        "init", help="set up the state directory, admin user, TLS certificate, database"
    )
    init.add_argument(
        "--force", action="store_true", help="set up again over an existing home (keeps history)"
    )
    init.add_argument("--admin", default="admin", help="the first operator's username (default: admin)")
    init.add_argument("--database-url", help="postgresql+psycopg://… (default: SQLite in the home)")
    init.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    init.add_argument("--bind", default="127.0.0.1:8443", help="HOST:PORT the web service listens on")
    init.add_argument(
        "--inventory", help="the cluster's Ansible inventory (or saved ansible-inventory --list JSON)"
    )
    init.add_argument("--cert", help="your own PEM certificate (default: a self-signed one)")
    init.add_argument("--key", help="the PEM private key of --cert")
    init.add_argument(
        "--hostname", action="append", help="a name for the self-signed certificate (repeatable)"
    )
    init.add_argument("--trust-root", help="the vendor's trust-root.json")
    init.add_argument("--keyring", help="the vendor keyring.json (verified against the trust root)")
    init.add_argument("--license", help="the license file (verified against the keyring)")
    init.add_argument("--entitlement-key", help="file holding the license's entitlement key")
    init.add_argument(
        "--channel-check-interval", type=int, default=3600, help="seconds between channel checks"
    )
    init.add_argument("--channel-url", help="the update server, https://HOST[:PORT] (default: no channel)")
    init.add_argument("--channel-ca", help="PEM CA file the update server's certificate must chain to")
    init.add_argument("--channel-root", help="the channel's TUF root.json (from the vendor)")
    init.add_argument("--channel", help="the channel to follow (default: the license's only channel)")
    init.add_argument(
        "--download-rate-limit", type=int, default=0, help="bytes per second for downloads (0: no limit)"
    )
    init.add_argument("--max-upload-bytes", type=int, default=8 * 1024**3)
    init.add_argument("--session-lifetime", type=int, default=8 * 3600, help="seconds a sign-in lasts")
    init.set_defaults(func=cmd_init)


def _add_accounts(commands: Any) -> None:
    user = commands.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    add = user.add_parser("add", help="add a user; prints its generated password once")
    add.add_argument("username")
    add.add_argument("--role", required=True, help="viewer or operator")
    add.set_defaults(func=cmd_user_add)
    user.add_parser("list", help="list users").set_defaults(func=cmd_user_list)
    for name, disabled in (("disable", True), ("enable", False)):
        sub = user.add_parser(name, help=f"{name} a user")
        sub.add_argument("username")
        sub.set_defaults(func=lambda args, d=disabled: _cmd_set_disabled(args, d))

    token = commands.add_parser("token", help="API tokens").add_subparsers(
        dest="token_command", required=True
    )
    create = token.add_parser("create", help="create an API token; prints it once")
    create.add_argument("username")
    create.add_argument("--name", required=True, help="what the token is for")
    create.add_argument("--days", type=int, help="valid for this many days (default: until revoked)")
    create.set_defaults(func=cmd_token_create)


def _add_reading_and_processes(commands: Any) -> None:
    commands.add_parser("migrate", help="bring the database schema up to date").set_defaults(func=cmd_migrate)
    history = commands.add_parser("history", help="past rollouts with per-node durations")
    history.add_argument("--limit", type=int, default=20)
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=cmd_history)

    status = commands.add_parser("status", help="installed release, license, nodes")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    web = commands.add_parser("web", help="serve the web UI and API over HTTPS (gunicorn)")
    web.add_argument("--bind", help="HOST:PORT (default: from init)")
    web.set_defaults(func=cmd_web)

    worker = commands.add_parser("worker", help="run a Celery worker")
    worker.add_argument("--concurrency", type=int, default=2)
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=cmd_worker)

    beat = commands.add_parser("beat", help="run Celery beat (the periodic channel check)")
    beat.add_argument("--loglevel", default="INFO")
    beat.set_defaults(func=cmd_beat)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corral-updater", description="The Corral update service.")
    parser.add_argument("--home", help=f"state directory (default: ${HOME_ENV} or /var/lib/corral-updater)")
    self_update_commands.add_version_flag(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_init(commands)
    _add_accounts(commands)
    _add_reading_and_processes(commands)
    release_commands.add_commands(commands)
    rollout_commands.add_commands(commands)
    self_update_commands.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (
        REFUSALS + release_commands.REFUSALS + rollout_commands.REFUSALS + self_update_commands.REFUSALS
    ) as error:
        print(f"corral-updater: {error}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
