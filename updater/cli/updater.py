"""``corral-updater``: set up and run the update service, and manage its users from the host.

The commands call the same service functions as the web UI and the API. Exit codes: 0 done, 2 refused
(bad input or state; the one-line message says why and nothing was changed), 1 unexpected error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from updater.cli import release_commands, rollout_commands, self_update_commands
from updater.config import HOME_ENV, ConfigError, ServiceConfig, home_from_env, known_secrets, load_config
from updater.domain.errors import VerificationError
from updater.https.certificates import CertificateError
from updater.services.accounts import auth, tokens, users
from updater.services.installation import setup
from updater.services.installation.overview import build_overview
from updater.store import queries
from updater.store.db import StoreError, current_revision, make_engine, migrate, session_factory, transaction
from updater.tasks.app import run_beat, run_worker
from updater.views.json_views import rollout_json, token_json
from updater.web import create_app
from updater.web.wsgi import serve

_T = TypeVar("_T")


class UsageError(Exception):
    """Refused input or state; the message says what to do."""


REFUSALS: tuple[type[Exception], ...] = (
    UsageError,
    setup.SetupRefused,
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


# --- init ---------------------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    request = setup.SetupRequest(
        home=home_from_env(args.home),
        admin=args.admin,
        force=args.force,
        database_url=args.database_url,
        redis_url=args.redis_url,
        bind=args.bind,
        inventory=args.inventory,
        cert=args.cert,
        key=args.key,
        hostnames=tuple(args.hostname or ()),
        trust_root=args.trust_root,
        keyring=args.keyring,
        license=args.license,
        entitlement_key=args.entitlement_key,
        channel_check_interval=args.channel_check_interval,
        channel_url=args.channel_url,
        channel_ca=args.channel_ca,
        channel_root=args.channel_root,
        channel=args.channel,
        download_rate_limit=args.download_rate_limit,
        max_upload_bytes=args.max_upload_bytes,
        session_lifetime=args.session_lifetime,
    )
    result = setup.set_up(request, actor=_actor())
    home = result.config.home
    print("update service set up in", home)
    print(f"  web:      https://{result.config.bind}/  (corral-updater web --home {home})")
    print(f"  admin:    {result.admin}")
    print(f"  password: {result.password}   (shown once; only its argon2id hash is stored)")
    return 0


# --- users and tokens ---------------------------------------------------------------------------------------


def _with_db(config: ServiceConfig, work: Callable[[Session], _T]) -> _T:
    engine = make_engine(config.effective_database_url)
    try:
        migrate(engine)
        with transaction(session_factory(engine)) as db:
            return work(db)
    finally:
        engine.dispose()


def cmd_user_add(args: argparse.Namespace) -> int:
    added = _with_db(
        _config(args), lambda db: users.add_user(db, users.Actor(_actor()), args.username, args.role)
    )
    print(f"user {args.username} ({added.user.role}) created; password: {added.password}   (shown once)")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    def work(db: Any) -> int:
        for user in queries.list_users(db):
            state = "disabled" if user.disabled else "active"
            print(f"{user.username:24} {user.role!s:9} {state:9} {user.created_at:%Y-%m-%d %H:%M}Z")
        return 0

    return _with_db(_config(args), work)


def _cmd_set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    _with_db(
        _config(args),
        lambda db: users.set_disabled(db, users.Actor(_actor()), args.username, disabled=disabled),
    )
    print(f"user {args.username} {'disabled' if disabled else 'enabled'}")
    return 0


def cmd_user_reset_password(args: argparse.Namespace) -> int:
    password = _with_db(
        _config(args), lambda db: users.reset_password(db, users.Actor(_actor()), args.username)
    )
    print(f"user {args.username}: new password {password}   (shown once; every session of theirs ended)")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    token = _with_db(
        _config(args),
        lambda db: users.issue_token(
            db, users.Actor(_actor()), args.username, args.name, valid_days=args.days
        ),
    )
    print(token)
    print(
        f"(API token {args.name!r} for {args.username}; shown once, only its hash is stored)", file=sys.stderr
    )
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    def work(db: Session) -> int:
        found = tokens.list_tokens(db, args.username)
        if args.json:
            print(json.dumps([token_json(t) for t in found], indent=2))
            return 0
        if not found:
            print("no API token")
        for t in found:
            expires = f"{t.expires_at:%Y-%m-%d %H:%M}Z" if t.expires_at else "never"
            print(
                f"{t.token_id}  {t.user.username:24} {tokens.state(t)!s:8} "
                f"created {t.created_at:%Y-%m-%d %H:%M}Z  expires {expires:17}  {t.name}"
            )
        return 0

    return _with_db(_config(args), work)


def cmd_token_revoke(args: argparse.Namespace) -> int:
    name = _with_db(
        _config(args),
        lambda db: tokens.revoke(db, users.Actor(_actor()), args.username, args.token_id, role=None).name,
    )
    print(f"API token {name!r} ({args.token_id}) of {args.username} revoked: it is refused from now on")
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
        failed = queries.list_failed_imports(db, limit=args.limit)
        if failed:
            print("failed imports:")
        for f in failed:
            claimed = f"{f.claimed_version} (claimed)" if f.claimed_version else "no version"
            print(f"{f.import_id}  {f.at:%Y-%m-%d %H:%M}Z  {f.actor:16} {f.filename}  {claimed}  {f.message}")
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
    reset = user.add_parser(
        "reset-password", help="give a user a new generated password (printed once) and end their sessions"
    )
    reset.add_argument("username")
    reset.set_defaults(func=cmd_user_reset_password)
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
    listing = token.add_parser("list", help="list API tokens (never their secrets) with their state")
    listing.add_argument("username", nargs="?", help="only this user's tokens (default: every user's)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_token_list)
    revoke = token.add_parser("revoke", help="revoke an API token: refused from its next request on")
    revoke.add_argument("username")
    revoke.add_argument("token_id", help="the token id `token list` shows (the 16 hex digits after crl_)")
    revoke.set_defaults(func=cmd_token_revoke)


def _add_reading_and_processes(commands: Any) -> None:
    commands.add_parser("migrate", help="bring the database schema up to date").set_defaults(func=cmd_migrate)
    history = commands.add_parser("history", help="past rollouts with per-node durations, and failed imports")
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
