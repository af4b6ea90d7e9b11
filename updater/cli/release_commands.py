"""``corral-updater`` commands for releases: `import`, `check`, `download`
(the operator's side of the Import and Updates pages).

They call the same service functions as the web UI and the API: ``import`` takes the same import lock and runs
the same verify-and-stage (:mod:`updater.services.bundles.imports`), here in this process instead of the
worker;
``download`` runs the channel download the Download button hands to the worker
(:mod:`updater.services.channel.downloads`: the same per-release lock, resume and verification), here in this
process.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
from pathlib import Path
from typing import Any

from updater.config import ServiceConfig, home_from_env, load_config
from updater.domain.errors import VerificationError
from updater.domain.filenames import display_name
from updater.domain.semver import parse_version
from updater.services.accounts import audit
from updater.services.bundles import imports
from updater.services.channel import downloads
from updater.store import queries
from updater.store.db import make_engine, migrate, session_factory, transaction
from updater.store.models import DownloadState, Outcome, Release


class ImportFailed(Exception):
    """The bundle failed a check (or could not be staged); the checks were printed, nothing was staged."""


class DownloadFailed(Exception):
    """The download ended without a staged release (failed check, channel error, interrupted)."""


# Exceptions these commands raise for refused input or state (printed as one line, exit code 2).
REFUSALS: tuple[type[Exception], ...] = (
    ImportFailed,
    imports.ImportRefused,
    imports.ImportConflict,
    DownloadFailed,
    downloads.DownloadRefused,
)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _config(args: argparse.Namespace) -> ServiceConfig:
    return load_config(home_from_env(args.home))


def _spool_copy(config: ServiceConfig, source: Path) -> Path:
    """The bundle as an import's spool file: a hard link when it can be, else a streamed copy."""
    if not source.is_file():
        raise imports.ImportRefused(f"bundle {source} not found")
    path, handle = imports.spool_file(config)
    handle.close()
    try:
        path.unlink()
        os.link(source, path)
    except OSError:
        with source.open("rb") as data, path.open("wb") as out:
            shutil.copyfileobj(data, out, 1024 * 1024)
    return path


def cmd_import(args: argparse.Namespace) -> int:
    config = _config(args)
    source = Path(args.file)
    engine = make_engine(config.effective_database_url)
    try:
        migrate(engine)
        sessions = session_factory(engine)
        try:
            ticket = imports.begin(config, _spool_copy(config, source), actor=_actor(), filename=source.name)
        except (imports.ImportRefused, imports.ImportConflict) as error:
            audit.record_separately(
                sessions, actor=_actor(), action=imports.ACTION, target=display_name(source.name),
                outcome=Outcome.REFUSED, detail=str(error),
            )  # fmt: skip
            raise
        ticket.hand_over()
        status = imports.stage(config, sessions, ticket.import_id)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(status.as_json(), indent=2))
    else:
        for check in status.checks:
            print(f"{'ok    ' if check.passed else 'FAILED'} {check.name}: {check.detail}")
    if status.state != "staged":
        raise ImportFailed(status.message)
    if not args.json:
        print(f"release {status.version} verified and staged (import {status.import_id})")
    return 0


def _newer(version: str, installed: str | None) -> bool:
    try:
        return installed is None or parse_version(version) > parse_version(installed)
    except VerificationError:
        return False


def _state(release: Release, installed: str | None) -> str:
    if release.version == installed:
        return "installed"
    failed = [c.name for c in release.checks if not c.passed]
    if failed:
        return f"failed ({', '.join(failed)})"
    return "staged" if release.staged_path else "not staged"


def cmd_check(args: argparse.Namespace) -> int:
    config = _config(args)
    engine = make_engine(config.effective_database_url)
    try:
        migrate(engine)
        with transaction(session_factory(engine)) as db:
            found = queries.installed_release(db)
            installed = found.version if found else None
            rows: list[dict[str, Any]] = [
                {
                    "version": r.version,
                    "channel": r.channel,
                    "release_date": r.release_date.isoformat(),
                    "state": _state(r, installed),
                    "available": bool(r.staged_path)
                    and all(c.passed for c in r.checks)
                    and _newer(r.version, installed),
                }
                for r in queries.list_releases(db)
            ]
            failed: list[dict[str, Any]] = [
                {
                    "import_id": f.import_id,
                    "filename": f.filename,
                    "claimed_version": f.claimed_version,
                    "failed_check": f.failed_check,
                    "at": f.at.isoformat(),
                }
                for f in queries.list_failed_imports(db, limit=5)
            ]
    finally:
        engine.dispose()
    newer = [row["version"] for row in rows if row["available"]]
    if args.json:
        report = {"installed": installed, "releases": rows, "newer": newer, "failed_imports": failed}
        print(json.dumps(report, indent=2))
        return 0
    print(f"installed release: {installed or 'not recorded yet'}")
    for row in rows:
        print(f"  {row['version']:12} {row['channel']:10} {row['release_date']}  {row['state']}")
    for f in failed:
        claimed = f"claims {f['claimed_version']}" if f["claimed_version"] else "no version"
        check = f["failed_check"] or "refused"
        print(f"  failed import {f['import_id']} of {f['filename']} ({claimed}): {check}")
    if newer:
        print(f"newer release available: {', '.join(newer)} (corral-updater plan {newer[0]})")
    else:
        print("no newer release is staged: import a bundle (corral-updater import FILE)")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    config = _config(args)
    engine = make_engine(config.effective_database_url)
    try:
        migrate(engine)
        result = downloads.download_release(
            config, session_factory(engine), version=args.version, actor=_actor()
        )
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps({**vars(result), "state": str(result.state)}, indent=2))
    if result.state is not DownloadState.STAGED:
        check = f" (check {result.failed_check})" if result.failed_check else ""
        raise DownloadFailed(f"download of {result.version} {result.state}{check}: {result.message}")
    if not args.json:
        print(result.message)
    return 0


def add_commands(commands: Any) -> None:
    """Register this module's sub-commands on ``corral-updater``'s sub-parser."""
    importing = commands.add_parser(
        "import", help="verify and stage a bundle file (plain or encrypted to this license)"
    )
    importing.add_argument("file", help="the bundle file")
    importing.add_argument("--json", action="store_true")
    importing.set_defaults(func=cmd_import)
    check = commands.add_parser("check", help="known releases and whether a newer one is available")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_check)
    download = commands.add_parser(
        "download",
        help="download a release the channel offers (resuming a partial file), verify and stage it",
    )
    download.add_argument("version", help="the release's version, as `check` lists it")
    download.add_argument("--json", action="store_true")
    download.set_defaults(func=cmd_download)
