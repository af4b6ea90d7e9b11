"""``corral-updater self-update install VERSION|status|rollback``: the service's own update, from the host.

They call :mod:`updater.services.installation.self_update`, the same functions the post-rollout hook uses.
``python -m updater.cli.self_update_commands`` runs them on their own (``--home``, ``--version``) until the
``corral-updater`` parser registers :func:`add_commands` and :func:`add_version_flag`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from updater.config import HOME_ENV, ConfigError, home_from_env, load_config
from updater.services.accounts import audit
from updater.services.installation import self_update as service
from updater.store import queries
from updater.store.db import StoreError, make_engine, session_factory, transaction
from updater.store.models import Outcome

# Exceptions these commands raise for refused input or state (printed as one line, exit code 2).
REFUSALS: tuple[type[Exception], ...] = (service.SelfUpdateError,)


def _audit(home: str | None, action: str, target: str, outcome: Outcome, detail: str) -> None:
    config = load_config(home_from_env(home))
    engine = make_engine(config.effective_database_url)
    try:
        audit.record_separately(
            session_factory(engine),
            actor=f"cli:{getpass.getuser()}",
            action=action,
            target=target,
            outcome=outcome,
            detail=detail,
        )
    finally:
        engine.dispose()


def _staged_package(home: str | None, version: str) -> service.ServicePackage:
    config = load_config(home_from_env(home))
    engine = make_engine(config.effective_database_url)
    try:
        with transaction(session_factory(engine)) as db:
            release = queries.find_release(db, version)
            staged = release.staged_path if release is not None else None
    finally:
        engine.dispose()
    if staged is None:
        raise service.SelfUpdateError(
            f"release {version} is not staged here: import or download its bundle first"
        )
    return service.package_from_staged_dir(Path(staged))


def cmd_install(args: argparse.Namespace) -> int:
    config = load_config(home_from_env(args.home))
    try:
        package = _staged_package(args.home, args.version)
    except service.SelfUpdateError as error:
        _audit(args.home, "self-update.install", args.version, Outcome.REFUSED, str(error))
        raise
    try:
        result = service.install(config, package, restart=not args.no_restart)
    except service.SelfUpdateError as error:
        _audit(args.home, "self-update.install", args.version, Outcome.FAILED, str(error))
        raise
    _audit(
        args.home,
        "self-update.install",
        result.version,
        Outcome.OK,
        f"from {result.previous}; database {result.database_revision_before} -> "
        f"{result.database_revision_after}",
    )
    print(f"service release {result.version} installed in {result.venv} and current (was {result.previous})")
    print(f"database: {result.database_revision_before} -> {result.database_revision_after}")
    print(f"restart: {result.restart}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    config = load_config(home_from_env(args.home))
    try:
        result = service.rollback(config, restart=not args.no_restart)
    except service.SelfUpdateError as error:
        _audit(args.home, "self-update.rollback", "", Outcome.REFUSED, str(error))
        raise
    _audit(
        args.home,
        "self-update.rollback",
        result.version,
        Outcome.OK,
        f"from {result.rolled_back_from}",
    )
    print(f"service release {result.version} is current again (was {result.rolled_back_from})")
    print(f"restart: {result.restart}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = service.status(load_config(home_from_env(args.home)))
    if args.json:
        print(json.dumps(state.as_json(), indent=2))
        return 0
    print(f"running:   {state.running} ({sys.prefix})")
    print(f"current:   {state.current or 'none (not in the self-update layout yet)'}")
    print(f"previous:  {state.previous or 'none'}")
    print(f"installed: {', '.join(state.installed) or 'none'}")
    print(f"database:  revision {state.database_revision or 'none'}")
    hook = " ".join(state.restart_command) if state.restart_command else "not configured"
    print(f"restart:   {hook}")
    for problem in state.problems:
        print(f"problem: {problem}")
    return 0


def add_commands(commands: Any) -> None:
    """Register ``self-update`` on ``corral-updater``'s sub-parser."""
    parser = commands.add_parser("self-update", help="install, show or roll back the service's own release")
    sub = parser.add_subparsers(dest="self_update_command", required=True)
    install = sub.add_parser("install", help="install a staged release's service package and switch to it")
    install.add_argument("version", help="a staged release, e.g. 1.3.0")
    install.add_argument("--no-restart", action="store_true", help="switch, but do not run the restart hook")
    install.set_defaults(func=cmd_install)
    status = sub.add_parser("status", help="running, current and previous service releases")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    rollback = sub.add_parser("rollback", help="switch back to the release the current one replaced")
    rollback.add_argument("--no-restart", action="store_true", help="switch, but do not run the restart hook")
    rollback.set_defaults(func=cmd_rollback)


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """``--version``: the service release this program runs (its installed package's version)."""
    parser.add_argument("--version", action="version", version=f"corral-updater {service.running_version()}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corral-updater-self-update", description=__doc__)
    parser.add_argument("--home", help=f"state directory (default: ${HOME_ENV} or /var/lib/corral-updater)")
    add_version_flag(parser)
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


_STANDALONE_REFUSALS: tuple[type[Exception], ...] = (*REFUSALS, ConfigError, StoreError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except _STANDALONE_REFUSALS as error:
        print(f"corral-updater: {error}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
