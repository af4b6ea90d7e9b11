"""The update service's self-update: install the service package a bundle carries into a new virtualenv,
migrate the database with the new code, switch ``current`` to it atomically, and restart onto it.

Layout under the service home (``docs/self-update.md``)::

    venvs/<version>/                     one virtualenv per installed service release
    venvs/<version>/corral-install.json  written last: a complete install (version, wheel hash, previous)
    current -> venvs/<version>           what the launchers run: ``current/bin/corral-updater web|...``
    self-update.json                     optional: {"restart_command": ["systemctl", "--no-block", ...]}

**Offline.** A new venv gets only the wheel (``pip install --no-index --no-deps``); its dependencies come
from a *layer*: a ``.pth`` file that appends the dependency venv's site-packages (the one ``current`` runs
on, or the base it is itself layered on) to ``sys.path``. The new venv's own site-packages comes first, so
the new ``updater`` package shadows the old one. Before the database is touched, the new venv must import
every module its CLI loads and report the release's version; a release needing other dependencies fails
there.

Any failure before the switch removes the new venv and leaves ``current`` as it was; the database is only
touched by the new code's ``migrate`` (Alembic, additive), and a failed migration says at which revision the
database stopped. The previous venv stays for :func:`rollback`, which is refused when the database was
migrated past what the previous release's code knows.
"""

from __future__ import annotations

import contextlib
import email.parser
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import venv
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from packaging.version import InvalidVersion as InvalidWheelVersion
from packaging.version import Version as WheelVersion
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from updater.config import ServiceConfig, known_secrets
from updater.domain.errors import VerificationError
from updater.domain.manifest import parse_manifest
from updater.domain.semver import Version, parse_version
from updater.services import filelocks
from updater.services.accounts import audit
from updater.services.bundles.staging import StagedRelease
from updater.store.db import current_revision, make_engine
from updater.store.models import Outcome, Release

log = logging.getLogger(__name__)
_T = TypeVar("_T")

DIST_NAME = "corral-updater"
VENVS_DIR = "venvs"
CURRENT_LINK = "current"
SETTINGS_FILE = "self-update.json"
INSTALL_RECORD = "corral-install.json"
LAYER_FILE = "_corral_layer.pth"
LOCK_FILE = ".self-update.lock"
DATABASE_BACKUP = "database-before.sqlite"
_INCOMING_PREFIX = ".incoming-"
_PY = f"python{sys.version_info.major}.{sys.version_info.minor}"
_STEP_TIMEOUT = 600.0
_RESTART_TIMEOUT = 120.0
_VERSION_DIR = re.compile(r"[0-9A-Za-z.+-]+")
_COPY_CHUNK = 1024 * 1024

# Run inside a venv (``python -I -c``): proves the CLI's imports resolve there and says what the code knows.
_PROBE = """
import importlib.metadata, json, pathlib
import updater.cli.updater
import updater.store
from alembic.script import ScriptDirectory
scripts = ScriptDirectory(str(pathlib.Path(updater.store.__file__).with_name("migrations")))
print(json.dumps({
    "version": importlib.metadata.version("corral-updater"),
    "revisions": sorted(s.revision for s in scripts.walk_revisions()),
    "head": scripts.get_current_head(),
}))
"""


class SelfUpdateError(Exception):
    """A refused or failed self-update step; the message says what happened and what was (not) changed."""


class RollbackRefused(SelfUpdateError):
    """Rolling back would run code that does not know the database's schema (or there is nothing to go to)."""


@dataclass(frozen=True)
class ServicePackage:
    """The service wheel of one release and what the signed manifest says about it."""

    version: Version
    wheel: Path
    sha256: str
    size: int

    @classmethod
    def from_staged(cls, staged: StagedRelease) -> ServicePackage:
        entry = staged.verified.manifest.file_by_role("service")
        if entry is None:  # pragma: no cover - the manifest parser requires every role
            raise SelfUpdateError(f"release {staged.version} carries no service package")
        return cls(staged.version, staged.service_package, entry.sha256, entry.size)


def package_from_staged_dir(path: Path) -> ServicePackage:
    """The service package of a release staged at ``path`` (``staging_root/<version>``), from the manifest
    staging verified and kept there."""
    try:
        manifest = parse_manifest((path / "manifest.json").read_bytes())
    except OSError as error:
        raise SelfUpdateError(
            f"cannot read the staged release's manifest {path / 'manifest.json'}: {error.strerror}"
        ) from None
    except VerificationError as error:
        raise SelfUpdateError(f"the staged manifest {path / 'manifest.json'} is not valid: {error}") from None
    entry = manifest.file_by_role("service")
    if entry is None:  # pragma: no cover - the manifest parser requires every role
        raise SelfUpdateError(f"release {manifest.version} carries no service package")
    return ServicePackage(manifest.version, path / entry.name, entry.sha256, entry.size)


@dataclass(frozen=True)
class InstallRecord:
    """``venvs/<version>/corral-install.json``: written as the last step of a complete install."""

    version: str
    wheel_sha256: str
    installed_at: str
    previous: str | None
    head: str | None

    @classmethod
    def read(cls, venv_dir: Path) -> InstallRecord | None:
        try:
            data = json.loads((venv_dir / INSTALL_RECORD).read_text())
            return cls(
                version=str(data["version"]),
                wheel_sha256=str(data["wheel_sha256"]),
                installed_at=str(data["installed_at"]),
                previous=data["previous"],
                head=data["head"],
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class InstallResult:
    version: str
    previous: str | None
    venv: Path
    database_revision_before: str | None
    database_revision_after: str | None
    restart: str


@dataclass(frozen=True)
class RollbackResult:
    version: str
    rolled_back_from: str
    database_revision: str | None
    restart: str


@dataclass(frozen=True)
class Status:
    current: str | None
    previous: str | None
    installed: tuple[str, ...]
    running: str
    database_revision: str | None
    restart_command: tuple[str, ...] | None
    problems: tuple[str, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "previous": self.previous,
            "installed": list(self.installed),
            "running": self.running,
            "database_revision": self.database_revision,
            "restart_command": list(self.restart_command) if self.restart_command else None,
            "problems": list(self.problems),
        }


# --- layout -------------------------------------------------------------------------------------------------


def venvs_dir(home: Path) -> Path:
    return home / VENVS_DIR


def current_link(home: Path) -> Path:
    return home / CURRENT_LINK


def site_packages(venv_dir: Path) -> Path:
    return venv_dir / "lib" / _PY / "site-packages"


def current_version(home: Path) -> str | None:
    """The release ``current`` points at (``venvs/<version>``), or None before the first self-update."""
    link = current_link(home)
    if not link.is_symlink():
        return None
    target = Path(os.readlink(link))
    return target.name if target.parent.name == VENVS_DIR else None


def running_version() -> str:
    """The service release this process runs (its installed distribution's version)."""
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:  # pragma: no cover - the package is always installed
        return "unknown"


def installed_versions(home: Path) -> tuple[str, ...]:
    root = venvs_dir(home)
    if not root.is_dir():
        return ()
    found = [d.name for d in root.iterdir() if d.is_dir() and InstallRecord.read(d) is not None]
    return tuple(sorted(found, key=_sort_key))


def _sort_key(text: str) -> tuple[int, Version | None, str]:
    try:
        return (1, parse_version(text), text)
    except VerificationError:
        return (0, None, text)


def restart_command(home: Path) -> tuple[str, ...] | None:
    """The restart hook from ``self-update.json`` (None when the file is absent)."""
    path = home / SETTINGS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise SelfUpdateError(f"{path} cannot be read as JSON: {error}") from None
    if not isinstance(data, dict) or set(data) - {"restart_command"}:
        raise SelfUpdateError(f"{path} must be a JSON object with only 'restart_command'")
    command = data.get("restart_command")
    if command is None:
        return None
    if not isinstance(command, list) or not command or not all(isinstance(a, str) and a for a in command):
        raise SelfUpdateError(f"{path}: restart_command must be a non-empty list of non-empty strings")
    return tuple(command)


# --- install ------------------------------------------------------------------------------------------------


def install(
    config: ServiceConfig,
    release: StagedRelease | ServicePackage,
    *,
    restart: bool = True,
) -> InstallResult:
    """Install ``release``'s service package into ``venvs/<version>``, migrate the database with it, switch
    ``current`` to it and run the restart hook. See the module docstring for what a failure leaves."""
    package = ServicePackage.from_staged(release) if isinstance(release, StagedRelease) else release
    home = config.home
    hook = restart_command(home) if restart else None  # a broken settings file refuses before any change
    version = str(package.version)
    if not _VERSION_DIR.fullmatch(version):  # pragma: no cover - semver text always matches
        raise SelfUpdateError(f"version {version!r} cannot name a directory")
    with _locked(home):
        previous = current_version(home)
        _refuse_not_newer(package.version, previous)
        base = _dependency_layer(home, previous)
        target = venvs_dir(home) / version
        incoming = _make_dir(lambda: Path(tempfile.mkdtemp(prefix=_INCOMING_PREFIX, dir=venvs_dir(home))))
        try:
            wheel = _copy_checked(package, incoming)
            _check_wheel_metadata(wheel, package.version)
            _remove_debris(target, base)
            try:
                probe = _build_venv(target, wheel, base, package.version)
                before, after = _migrate(config, target, probe)
                _write_record(target, package, previous, probe)
                _switch(home, target)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
    outcome = _restart(home, hook, version, previous) if restart else "skipped (--no-restart)"
    log.info("self-update: %s installed and current (was %s); restart: %s", version, previous, outcome)
    return InstallResult(version, previous, target, before, after, outcome)


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    if not home.is_dir():
        raise SelfUpdateError(f"{home} is not an update service home (run `corral-updater init`)")
    root = venvs_dir(home)
    _make_dir(lambda: root.mkdir(mode=0o755, exist_ok=True))
    try:
        held = _make_dir(lambda: filelocks.take(root / LOCK_FILE))
    except filelocks.Busy:
        raise SelfUpdateError(
            "another self-update is running on this home; try again when it is done"
        ) from None
    with held:
        yield


def _make_dir(make: Callable[[], _T]) -> _T:
    """Run a filesystem step of the layout; a refusal with the reason when the home is not writable."""
    try:
        return make()
    except OSError as error:
        raise SelfUpdateError(
            f"cannot write the self-update layout ({error.filename}: {error.strerror}); nothing was changed"
        ) from None


def _refuse_not_newer(version: Version, current: str | None) -> None:
    running = current or running_version()
    try:
        now = parse_version(running)
    except VerificationError:
        return  # an unversioned development install: anything released is newer
    if version == now:
        raise SelfUpdateError(f"service release {version} is already the current one; nothing to do")
    if version < now:
        raise SelfUpdateError(
            f"service release {version} is older than the current {running}; use `self-update rollback` "
            "to go back to the previous release"
        )


def _dependency_layer(home: Path, current: str | None) -> list[Path]:
    """The site-packages the new venv reuses: the current venv's own layer, or its site-packages; before the
    first self-update, those of the running interpreter's venv."""
    source = venvs_dir(home) / current if current else Path(sys.prefix)
    if current is None and sys.prefix == sys.base_prefix:
        raise SelfUpdateError(
            "the running service is not in a virtualenv: a self-update layers the new release on the "
            "dependencies of a venv (see docs/self-update.md, 'First install')"
        )
    layer_file = site_packages(source) / LAYER_FILE
    if layer_file.exists():
        paths = [Path(line) for line in layer_file.read_text().splitlines() if line.strip()]
    else:
        paths = [site_packages(source)]
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise SelfUpdateError(
            f"the dependencies of the current service ({', '.join(missing)}) are missing; nothing was changed"
        )
    return paths


def _copy_checked(package: ServicePackage, directory: Path) -> Path:
    """Copy the wheel next to the new venv while hashing it, so what is checked is what pip installs."""
    name = package.wheel.name
    copy = directory / name
    digest, size = hashlib.sha256(), 0
    try:
        source: BinaryIO = package.wheel.open("rb")
    except FileNotFoundError:
        raise SelfUpdateError(
            f"the service package {package.wheel} is missing: re-import the release {package.version} bundle"
        ) from None
    except OSError as error:
        raise SelfUpdateError(f"cannot read the service package {package.wheel}: {error.strerror}") from None
    with source, _make_dir(lambda: copy.open("xb")) as out:
        while chunk := source.read(_COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    if size != package.size or digest.hexdigest() != package.sha256:
        raise SelfUpdateError(
            f"the service package {package.wheel} does not match the signed manifest "
            f"(size {size}, sha256 {digest.hexdigest()[:16]}…; expected size {package.size}, "
            f"sha256 {package.sha256[:16]}…): the staged release is damaged, re-import its bundle; "
            "nothing was changed"
        )
    return copy


def _check_wheel_metadata(wheel: Path, version: Version) -> None:
    """The wheel must be a zip with one ``*.dist-info/METADATA`` of corral-updater at exactly ``version``."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            if len(names) != 1:
                raise SelfUpdateError(f"{wheel.name} is not a wheel (no single *.dist-info/METADATA)")
            text = archive.read(names[0]).decode("utf-8", "replace")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise SelfUpdateError(
            f"{wheel.name} is not a readable wheel ({error}); nothing was changed"
        ) from None
    meta = email.parser.Parser().parsestr(text, headersonly=True)
    name = re.sub(r"[-_.]+", "-", meta.get("Name", "")).lower()
    if name != DIST_NAME:
        raise SelfUpdateError(f"{wheel.name} is the package {meta.get('Name')!r}, not {DIST_NAME}")
    try:
        found, wanted = WheelVersion(meta.get("Version", "")), WheelVersion(str(version))
    except InvalidWheelVersion as error:
        raise SelfUpdateError(f"{wheel.name}: {error}") from None
    if found != wanted:
        raise SelfUpdateError(
            f"{wheel.name} is service version {found}, but the release is {version}: refusing a package "
            "that is not the release's own; nothing was changed"
        )


def _remove_debris(target: Path, base: list[Path]) -> None:
    """A ``venvs/<version>`` that is not current is an earlier (or interrupted) install of it: rebuild it,
    unless it holds the dependencies every layered venv uses."""
    if any(path.is_relative_to(target) for path in base):
        raise SelfUpdateError(
            f"{target} holds the dependencies the service runs on; it cannot be replaced by a release's "
            "venv; nothing was changed"
        )
    if target.exists() or target.is_symlink():
        _make_dir(lambda: shutil.rmtree(target))


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_CACHE_DIR="1",
        CORRAL_UPDATER_HOME=str(home),
    )
    return env


def _run(step: str, args: list[str], env: Mapping[str, str], cwd: Path) -> str:
    try:
        done = subprocess.run(
            args, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=_STEP_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise SelfUpdateError(f"{step} did not finish within {_STEP_TIMEOUT:.0f} s") from None
    except OSError as error:
        raise SelfUpdateError(f"{step} could not start: {error.strerror}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SelfUpdateError(f"{step} failed (exit {done.returncode}): {' | '.join(tail)}")
    return done.stdout


@dataclass(frozen=True)
class _Probe:
    version: str
    revisions: frozenset[str]
    head: str | None


def probe_venv(venv_dir: Path, home: Path) -> _Probe:
    """Ask the code in ``venv_dir`` which service version it is and which database revisions it knows."""
    out = _run(
        f"loading the service from {venv_dir}",
        [str(venv_dir / "bin" / "python"), "-I", "-c", _PROBE],
        _clean_env(home),
        venv_dir,
    )
    try:
        data = json.loads(out.strip().splitlines()[-1])
        return _Probe(str(data["version"]), frozenset(data["revisions"]), data["head"])
    except (ValueError, KeyError, TypeError, IndexError):
        raise SelfUpdateError(
            f"the service in {venv_dir} answered an unexpected probe: {out[-200:]!r}"
        ) from None


def _build_venv(target: Path, wheel: Path, base: list[Path], version: Version) -> _Probe:
    home = target.parent.parent
    try:
        venv.EnvBuilder(with_pip=False, symlinks=True, clear=False).create(target)
        (site_packages(target) / LAYER_FILE).write_text("".join(f"{p}\n" for p in base))
    except OSError as error:
        raise SelfUpdateError(
            f"creating the virtualenv {target} failed ({error.strerror}); nothing was changed"
        ) from None
    python = str(target / "bin" / "python")
    _run(
        f"installing {wheel.name} offline",
        [
            python,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-deps",
            "--ignore-installed",
            "--quiet",
            str(wheel),
        ],
        _clean_env(home),
        target,
    )
    probe = probe_venv(target, home)
    if WheelVersion(probe.version) != WheelVersion(str(version)):
        raise SelfUpdateError(f"the new venv runs service version {probe.version}, not {version}")
    return probe


def database_revision(config: ServiceConfig) -> str | None:
    engine = make_engine(config.effective_database_url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def _sqlite_path(config: ServiceConfig) -> Path | None:
    url = make_url(config.effective_database_url)
    return Path(url.database) if url.get_backend_name() == "sqlite" and url.database else None


def _sqlite_copy(source: Path, destination: Path) -> None:
    """SQLite's online backup: a consistent copy while other processes keep using the source."""
    with (
        contextlib.closing(sqlite3.connect(source, timeout=30)) as src,
        contextlib.closing(sqlite3.connect(destination, timeout=30)) as dst,
    ):
        src.backup(dst)


def _migrate(config: ServiceConfig, target: Path, probe: _Probe) -> tuple[str | None, str | None]:
    """Migrate with the new code. On SQLite (whose DDL a failed migration does not roll back) the database is
    first copied to ``venvs/<version>/database-before.sqlite`` and restored from it if the migration fails;
    after a success the copy stays with the venv, for an operator who must go back to before this release."""
    before = database_revision(config)
    if before is not None and before not in probe.revisions:
        raise SelfUpdateError(
            f"the database is at revision {before}, which service release {probe.version} does not know; "
            "nothing was changed"
        )
    database = _sqlite_path(config)
    backup = target / DATABASE_BACKUP if database is not None and before != probe.head else None
    if database is not None and backup is not None:
        try:
            _sqlite_copy(database, backup)
            backup.chmod(0o600)  # password and token hashes
        except (OSError, sqlite3.Error) as error:
            raise SelfUpdateError(f"copying the database before migrating failed: {error}") from None
    try:
        _run(
            f"migrating the database with service release {probe.version}",
            [str(target / "bin" / "corral-updater"), "--home", str(config.home), "migrate"],
            _clean_env(config.home),
            config.home,
        )
    except SelfUpdateError as error:
        message = str(error)
        for secret in known_secrets(config):  # the new code's output may name the database URL
            message = message.replace(secret, "***")
        raise SelfUpdateError(
            f"{message}; {_after_failed_migration(config, before, database, backup)}; "
            "the new venv was removed, current is unchanged"
        ) from None
    return before, database_revision(config)


def _after_failed_migration(
    config: ServiceConfig, before: str | None, database: Path | None, backup: Path | None
) -> str:
    if database is not None and backup is not None:
        try:
            _sqlite_copy(backup, database)
        except (OSError, sqlite3.Error) as error:
            return (
                f"restoring the database from {backup} failed ({error}): the database may be part-migrated, "
                "stop the service and restore it by hand"
            )
        return f"the database was restored from the copy taken before the migration (revision {before})"
    now = database_revision(config)
    if now == before:
        return f"the database is still at revision {before} (the migration's transaction was rolled back)"
    return f"the database stopped at revision {now} (was {before})"


def _write_record(target: Path, package: ServicePackage, previous: str | None, probe: _Probe) -> None:
    record = {
        "version": str(package.version),
        "wheel_sha256": package.sha256,
        "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "previous": previous,
        "head": probe.head,
    }
    _write_synced(target / INSTALL_RECORD, json.dumps(record, indent=2) + "\n")


def _write_synced(path: Path, text: str) -> None:
    with path.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _switch(home: Path, target: Path) -> None:
    """Point ``current`` at ``target`` atomically: a new symlink under a temporary name, renamed over it."""
    temporary = home / f".{CURRENT_LINK}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    relative = Path(VENVS_DIR) / target.name
    try:
        os.symlink(relative, temporary)
        os.replace(temporary, current_link(home))
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise SelfUpdateError(f"switching {current_link(home)} failed: {error.strerror}") from None
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _restart(home: Path, hook: tuple[str, ...] | None, version: str, previous: str | None) -> str:
    if hook is None:
        return f"not configured: restart the service processes to run {version} (docs/self-update.md)"
    env = dict(os.environ)
    env.update(
        CORRAL_UPDATER_HOME=str(home),
        CORRAL_SELF_UPDATE_VERSION=version,
        CORRAL_SELF_UPDATE_PREVIOUS=previous or "",
    )
    try:
        done = subprocess.run(list(hook), env=env, capture_output=True, timeout=_RESTART_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"failed: the restart command could not run ({error}); restart the service processes by hand"
    if done.returncode != 0:
        return f"failed: the restart command exited {done.returncode}; restart the service processes by hand"
    return "restart command ran"


# --- rollback and status ------------------------------------------------------------------------------------


def rollback(config: ServiceConfig, *, restart: bool = True) -> RollbackResult:
    """Switch ``current`` back to the release it replaced, if that release's code knows the database."""
    home = config.home
    hook = restart_command(home) if restart else None
    with _locked(home):
        current = current_version(home)
        if current is None:
            raise RollbackRefused(
                f"{current_link(home)} does not exist: there is no self-update to roll back"
            )
        record = InstallRecord.read(venvs_dir(home) / current)
        previous = record.previous if record else None
        if previous is None:
            raise RollbackRefused(f"service release {current} has no previous release to roll back to")
        target = venvs_dir(home) / previous
        if not target.is_dir():
            raise RollbackRefused(f"the previous release's venv {target} is gone; cannot roll back")
        known = probe_venv(target, home)
        revision = database_revision(config)
        if revision is not None and revision not in known.revisions:
            copy = venvs_dir(home) / current / DATABASE_BACKUP
            where = f" ({copy})" if copy.exists() else ""
            raise RollbackRefused(
                f"the database is at revision {revision}, which service release {previous} does not know "
                f"(its newest is {known.head}): {current} migrated it, and {previous}'s code would run on a "
                f"schema it does not understand. Stay on {current}, or restore the database copy from "
                f"before {current} was installed{where}, then roll back; nothing was changed"
            )
        _switch(home, target)
    outcome = _restart(home, hook, previous, current) if restart else "skipped (--no-restart)"
    log.info("self-update: rolled back from %s to %s; restart: %s", current, previous, outcome)
    return RollbackResult(previous, current, revision, outcome)


def status(config: ServiceConfig) -> Status:
    home = config.home
    problems: list[str] = []
    current = current_version(home)
    record = InstallRecord.read(venvs_dir(home) / current) if current else None
    if current is not None and not (venvs_dir(home) / current).is_dir():
        problems.append(f"{current_link(home)} points at a missing venv {current}")
    try:
        hook = restart_command(home)
    except SelfUpdateError as error:
        hook = None
        problems.append(str(error))
    try:
        revision = database_revision(config)
    except Exception as error:  # status reports what it cannot read
        revision = None
        problems.append(f"the database cannot be read: {type(error).__name__}")
    return Status(
        current=current,
        previous=record.previous if record else None,
        installed=installed_versions(home),
        running=running_version(),
        database_revision=revision,
        restart_command=hook,
        problems=tuple(problems),
    )


# --- hook after a rollout -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AfterRollout:
    """What :func:`after_rollout` did: ``installed``, ``skipped`` or ``failed``, and why."""

    action: str
    message: str
    result: InstallResult | None = None


def after_rollout(config: ServiceConfig, db: Session, release: Release) -> AfterRollout:
    """After ``release`` rolled on every node: self-update when its service release is newer than ``current``.

    Acts only on a home already in the self-update layout (``current`` exists). Call it after the rollout's
    transaction committed, with a session that has not queried yet: the new code migrates the database from
    another process meanwhile, and on PostgreSQL a table this session had read would make the migration wait.
    Only ``release.version`` and ``release.staged_path`` are read (a detached row is fine). An install or a
    failure is audited in ``db`` (the caller commits); a failure does not raise: the rollout itself is done,
    and ``current`` is unchanged.
    """
    current = current_version(config.home)
    if current is None:
        return AfterRollout("skipped", f"{config.home} is not in the self-update layout (no current link)")
    version = parse_version(release.version)
    try:
        newer = version > parse_version(current)
    except VerificationError:
        newer = True  # current names no release version (a hand-made venv): the release's package is newer
    if not newer:
        return AfterRollout("skipped", f"service release {current} is already at least {version}")
    if release.staged_path is None:
        return AfterRollout("skipped", f"release {version} is not staged here: no service package to install")
    try:
        result = install(config, package_from_staged_dir(Path(release.staged_path)))
    except SelfUpdateError as error:
        log.error("self-update to %s failed: %s", version, error)
        audit.record(
            db, actor="self-update", action="self-update.install", target=str(version),
            outcome=Outcome.FAILED, detail=str(error),
        )  # fmt: skip
        return AfterRollout("failed", str(error))
    audit.record(
        db, actor="self-update", action="self-update.install", target=str(version),
        detail=f"from {current}; database {result.database_revision_before} -> "
        f"{result.database_revision_after}; restart: {result.restart}",
    )  # fmt: skip
    return AfterRollout("installed", f"service release {version} is current (was {current})", result)
