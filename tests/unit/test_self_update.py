"""Self-update of the update service: real venvs (``venv``), a real offline pip install of real wheels built
from this repository, real Alembic migrations on a real SQLite store, real symlink switches.

Wheels are built once per module (``bundle_kit.build_service_wheel``): 0.2.0 and 0.2.1 carry today's schema,
0.3.0 adds one migration (so the previous release's code does not know the migrated database).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.unit import bundle_kit as kit_
from updater.cli import self_update_commands as cli
from updater.config import ServiceConfig, save_settings, write_secret_key
from updater.domain.semver import parse_version
from updater.services.bundles.staging import StagedRelease, verify_and_stage
from updater.services.installation import self_update as su
from updater.store import queries as q
from updater.store.db import (
    current_revision,
    head_revision,
    make_engine,
    migrate,
    session_factory,
    transaction,
)
from updater.store.models import AuditEntry, Outcome, Release, ReleaseSource, RolloutLogLine

NEW_REVISION = "9001_selftest"
# A migration that creates a table and then fails: SQLite keeps such DDL, so the store must be restored.
BROKEN_MIGRATION = (
    'op.create_table("half_{revision}", sa.Column("id", sa.Integer, primary_key=True))\n'
    '    raise RuntimeError("this migration has a bug")'
)


def needs_a_new_dependency(tree: Path) -> None:
    """A release whose CLI imports a package the current venv does not have."""
    cli_module = tree / "updater" / "cli" / "updater.py"
    cli_module.write_text(
        cli_module.read_text() + "\nimport corral_dependency_not_installed  # noqa: E402, F401\n"
    )


# --- helpers shared with tests/integration/test_self_update_process.py ------------------------------------


def make_home(home: Path, database_url: str = "") -> ServiceConfig:
    """A service home as ``init`` leaves it (settings, secret key, migrated store: SQLite unless
    ``database_url`` is given) with some history."""
    home.mkdir(mode=0o700, parents=True)
    config = ServiceConfig(home=home, database_url=database_url, secret_key=os.urandom(32))
    save_settings(config)
    write_secret_key(home, config.secret_key)
    engine = make_engine(config.effective_database_url)
    try:
        migrate(engine)
        with transaction(session_factory(engine)) as db:
            release = q.add_release(
                db,
                version="0.1.0",
                channel="stable",
                release_date=date(2026, 10, 1),
                source=ReleaseSource.IMPORTED,
            )
            q.mark_installed(db, release)
            q.add_rollout(
                db, rollout_id="r-history", release=release, created_by="alice", plan={}, nodes=["n1", "n2"]
            )
            q.append_log(db, "r-history", [("n1", "stdout", "drained"), ("n2", "stdout", "rebooted")])
            q.add_audit(
                db,
                actor="alice",
                action="apply",
                target="0.1.0",
                outcome=Outcome.OK,
                source_ip=None,
                detail="",
            )
    finally:
        engine.dispose()
    return config


def history(config: ServiceConfig) -> dict[str, object]:
    """What the operators' history holds, to compare before and after."""
    engine = make_engine(config.effective_database_url)
    try:
        with transaction(session_factory(engine)) as db:
            rollout = q.get_rollout(db, "r-history")
            return {
                "rollout": (rollout.id, rollout.created_by, [s.node for s in rollout.steps]),
                "log": [
                    line.text for line in db.scalars(sa.select(RolloutLogLine).order_by(RolloutLogLine.seq))
                ],
                "releases": sorted(r.version for r in q.list_releases(db)),
                "audit_apply": db.scalar(sa.select(sa.func.count()).where(AuditEntry.action == "apply")),
            }
    finally:
        engine.dispose()


def revision(config: ServiceConfig) -> str | None:
    engine = make_engine(config.effective_database_url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def package(wheel: Path, version: str) -> su.ServicePackage:
    data = wheel.read_bytes()
    return su.ServicePackage(parse_version(version), wheel, hashlib.sha256(data).hexdigest(), len(data))


def venv_reports(home: Path) -> dict[str, str]:
    """Ask ``current``'s interpreter (a fresh process, isolated from this checkout) what it runs."""
    out = subprocess.run(
        [
            str(home / "current" / "bin" / "python"), "-I", "-c",
            "import importlib.metadata as m, json, updater; "
            "print(json.dumps({'version': m.version('corral-updater'), 'module': updater.__file__}))",
        ],
        capture_output=True, text=True, check=True, cwd=home,
    )  # fmt: skip
    result: dict[str, str] = json.loads(out.stdout)
    return result


def layout(home: Path) -> tuple[str | None, list[str]]:
    venvs = home / "venvs"
    return su.current_version(home), sorted(p.name for p in venvs.iterdir()) if venvs.exists() else []


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    return {
        "0.2.0": kit_.build_service_wheel(out, "0.2.0"),
        "0.2.1": kit_.build_service_wheel(out, "0.2.1"),
        "0.3.0": kit_.build_service_wheel(out, "0.3.0", migration=NEW_REVISION),
        "broken-migration": kit_.build_service_wheel(
            out, "0.4.0", migration="9002_broken", migration_body=BROKEN_MIGRATION
        ),
        "new-dependency": kit_.build_service_wheel(out, "0.5.0", patch=needs_a_new_dependency),
    }


@pytest.fixture
def config(tmp_path: Path) -> ServiceConfig:
    return make_home(tmp_path / "home")


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    """Directories made immutable (chattr +i: even root cannot create entries there), undone afterwards."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def stage_release(tmp_path: Path, version: str, service: Path | None) -> StagedRelease:
    kit = kit_.make_kit(tmp_path / "vendor-kit")
    artifacts = kit_.make_artifacts(tmp_path / f"artifacts-{version}", version, service=service)
    bundle = kit_.build_bundle(kit, version, upgrade_from=">=0.1.0", artifacts=artifacts)
    lic = kit_.issue(kit)
    root = tmp_path / "staging"
    root.mkdir(exist_ok=True)
    return verify_and_stage(
        bundle, trust=kit.trust(), now=kit_.NOW, license_document=lic.document, entitlement_key=lic.key,
        installed_version="0.1.0", node_count=3, base_images_dir=None, staging_root=root,
    )  # fmt: skip


# --- install ----------------------------------------------------------------------------------------------


def test_install_creates_the_venv_offline_migrates_and_points_current_at_it(
    config: ServiceConfig, wheels: dict[str, Path], tmp_path: Path
) -> None:
    staged = stage_release(tmp_path, "0.2.0", wheels["0.2.0"])
    before = history(config)

    result = su.install(config, staged)

    home = config.home
    assert (result.version, result.previous) == ("0.2.0", None)
    assert os.readlink(home / "current") == "venvs/0.2.0"  # relative: the home can be moved whole
    reports = venv_reports(home)
    assert reports["version"] == "0.2.0"
    module = Path(reports["module"]).resolve()
    assert module.is_relative_to(home / "venvs" / "0.2.0" / "lib")  # the wheel's code, not this tree
    layer = (su.site_packages(home / "venvs" / "0.2.0") / su.LAYER_FILE).read_text().split()
    assert layer == [str(su.site_packages(Path(sys.prefix)))]  # dependencies reused, nothing downloaded
    record = su.InstallRecord.read(home / "venvs" / "0.2.0")
    assert record is not None
    assert (record.version, record.previous, record.head) == ("0.2.0", None, head_revision())
    assert result.database_revision_after == head_revision() == revision(config)
    assert history(config) == before
    assert "not configured" in result.restart
    assert [p.name for p in (home / "venvs").iterdir() if p.name.startswith(".incoming")] == []


def test_a_second_install_keeps_the_previous_venv_and_rollback_switches_back(
    config: ServiceConfig, wheels: dict[str, Path]
) -> None:
    su.install(config, package(wheels["0.2.0"], "0.2.0"))
    second = su.install(config, package(wheels["0.2.1"], "0.2.1"))
    assert (second.previous, layout(config.home)) == (
        "0.2.0",
        ("0.2.1", [".self-update.lock", "0.2.0", "0.2.1"]),
    )
    # 0.2.1 layers on the same dependencies as 0.2.0 (not on 0.2.0's own site-packages): no chain to keep
    layer = (su.site_packages(config.home / "venvs" / "0.2.1") / su.LAYER_FILE).read_text().split()
    assert layer == [str(su.site_packages(Path(sys.prefix)))]

    result = su.rollback(config)

    assert (result.version, result.rolled_back_from) == ("0.2.0", "0.2.1")
    assert venv_reports(config.home)["version"] == "0.2.0"
    assert su.installed_versions(config.home) == ("0.2.0", "0.2.1")


def test_rollback_is_refused_when_the_new_release_migrated_past_what_the_old_code_knows(
    config: ServiceConfig, wheels: dict[str, Path]
) -> None:
    su.install(config, package(wheels["0.2.0"], "0.2.0"))
    before = history(config)
    result = su.install(config, package(wheels["0.3.0"], "0.3.0"))
    assert (result.database_revision_before, result.database_revision_after) == (
        head_revision(),
        NEW_REVISION,
    )
    assert history(config) == before  # the migration is additive: every history row is still there

    copy = config.home / "venvs" / "0.3.0" / su.DATABASE_BACKUP
    assert copy.stat().st_mode & 0o777 == 0o600  # the store before 0.3.0 migrated it, kept with 0.3.0's venv
    with pytest.raises(
        su.RollbackRefused, match=rf"revision {NEW_REVISION}, which service release 0.2.0 does not know"
    ) as refused:
        su.rollback(config)
    assert f"restore the database copy from before 0.3.0 was installed ({copy})" in str(refused.value)

    assert su.current_version(config.home) == "0.3.0"
    assert venv_reports(config.home)["version"] == "0.3.0"


def test_rollback_without_a_previous_release_is_refused(
    config: ServiceConfig, wheels: dict[str, Path]
) -> None:
    with pytest.raises(su.RollbackRefused, match=r"no self-update to roll back"):
        su.rollback(config)
    su.install(config, package(wheels["0.2.0"], "0.2.0"))
    with pytest.raises(su.RollbackRefused, match=r"0.2.0 has no previous release"):
        su.rollback(config)
    assert su.current_version(config.home) == "0.2.0"


# --- bad inputs: a clear message, nothing changed ---------------------------------------------------------


def assert_nothing_changed(config: ServiceConfig, before: dict[str, object], current: str | None) -> None:
    assert su.current_version(config.home) == current
    venvs = config.home / "venvs"
    left = sorted(p.name for p in venvs.iterdir()) if venvs.exists() else []
    assert [name for name in left if name not in (".self-update.lock", current)] == []
    assert history(config) == before
    assert revision(config) == head_revision()


def test_a_wheel_that_no_longer_matches_the_manifest_is_refused(
    config: ServiceConfig, wheels: dict[str, Path], tmp_path: Path
) -> None:
    staged = stage_release(tmp_path, "0.2.0", wheels["0.2.0"])
    before = history(config)
    data = bytearray(staged.service_package.read_bytes())
    data[len(data) // 2] ^= 0xFF
    staged.service_package.write_bytes(bytes(data))

    with pytest.raises(su.SelfUpdateError, match=r"does not match the signed manifest.*re-import"):
        su.install(config, staged)
    assert_nothing_changed(config, before, None)


def test_a_missing_wheel_is_refused(config: ServiceConfig, wheels: dict[str, Path], tmp_path: Path) -> None:
    staged = stage_release(tmp_path, "0.2.0", wheels["0.2.0"])
    before = history(config)
    staged.service_package.unlink()
    with pytest.raises(
        su.SelfUpdateError, match=r"service package .* is missing: re-import the release 0.2.0"
    ):
        su.install(config, staged)
    assert_nothing_changed(config, before, None)


def test_a_service_file_that_is_not_a_wheel_is_refused(config: ServiceConfig, tmp_path: Path) -> None:
    staged = stage_release(tmp_path, "0.2.0", None)  # the kit's stand-in bytes: signed, but no zip
    before = history(config)
    with pytest.raises(su.SelfUpdateError, match=r"is not a readable wheel"):
        su.install(config, staged)
    assert_nothing_changed(config, before, None)


def test_a_wheel_of_another_version_than_the_release_is_refused(
    config: ServiceConfig, wheels: dict[str, Path], tmp_path: Path
) -> None:
    staged = stage_release(tmp_path, "0.4.0", wheels["0.2.0"])  # a signed 0.4.0 bundle carrying 0.2.0's wheel
    before = history(config)
    with pytest.raises(su.SelfUpdateError, match=r"is service version 0.2.0, but the release is 0.4.0"):
        su.install(config, staged)
    assert_nothing_changed(config, before, None)


def test_a_failed_migration_restores_the_sqlite_store_and_keeps_current(
    config: ServiceConfig, wheels: dict[str, Path]
) -> None:
    su.install(config, package(wheels["0.2.0"], "0.2.0"))
    before = history(config)
    with pytest.raises(su.SelfUpdateError, match="this migration has a bug") as failed:
        su.install(config, package(wheels["broken-migration"], "0.4.0"))
    assert (
        f"the database was restored from the copy taken before the migration (revision {head_revision()})"
        in str(failed.value)
    )
    assert "current is unchanged" in str(failed.value)
    assert_nothing_changed(config, before, "0.2.0")
    engine = make_engine(config.effective_database_url)
    try:
        assert "half_9002_broken" not in sa.inspect(engine).get_table_names()  # the half-done DDL is gone too
    finally:
        engine.dispose()


def test_a_failed_migration_never_shows_a_secret_in_its_message(
    config: ServiceConfig, tmp_path: Path
) -> None:
    leaky = kit_.build_service_wheel(
        tmp_path,
        "0.2.0",
        migration="9003_leaky",
        migration_body=(
            'import os; raise RuntimeError(open(os.environ["CORRAL_UPDATER_HOME"] + "/secret_key").read())'
        ),
    )
    with pytest.raises(su.SelfUpdateError, match=r"RuntimeError: \*\*\*") as failed:
        su.install(config, package(leaky, "0.2.0"))
    assert config.secret_key.hex() not in str(failed.value)
    assert su.current_version(config.home) is None


def test_a_release_that_needs_a_dependency_the_layer_lacks_is_refused_before_the_database(
    config: ServiceConfig, wheels: dict[str, Path]
) -> None:
    before = history(config)
    with pytest.raises(
        su.SelfUpdateError,
        match=r"loading the service from .*0\.5\.0 failed .*corral_dependency_not_installed",
    ):
        su.install(config, package(wheels["new-dependency"], "0.5.0"))
    assert_nothing_changed(config, before, None)


def test_an_unwritable_home_is_refused_before_anything_is_written(
    config: ServiceConfig, wheels: dict[str, Path], immutable: list[Path]
) -> None:
    before = history(config)
    subprocess.run(["chattr", "+i", str(config.home)], check=True)
    immutable.append(config.home)
    with pytest.raises(
        su.SelfUpdateError, match=r"cannot write the self-update layout .*nothing was changed"
    ):
        su.install(config, package(wheels["0.2.0"], "0.2.0"))
    subprocess.run(["chattr", "-i", str(config.home)], check=True)  # SQLite needs the home to read the store
    immutable.remove(config.home)
    assert_nothing_changed(config, before, None)


def test_an_unwritable_venvs_directory_after_a_first_install_leaves_current_alone(
    config: ServiceConfig, wheels: dict[str, Path], immutable: list[Path]
) -> None:
    su.install(config, package(wheels["0.2.0"], "0.2.0"))
    before = history(config)
    subprocess.run(["chattr", "+i", str(config.home / "venvs")], check=True)
    immutable.append(config.home / "venvs")
    with pytest.raises(su.SelfUpdateError, match=r"nothing was changed"):
        su.install(config, package(wheels["0.2.1"], "0.2.1"))
    assert_nothing_changed(config, before, "0.2.0")


def test_the_current_release_or_an_older_one_is_refused(
    config: ServiceConfig, wheels: dict[str, Path]
) -> None:
    su.install(config, package(wheels["0.2.1"], "0.2.1"))
    with pytest.raises(su.SelfUpdateError, match=r"0.2.1 is already the current one"):
        su.install(config, package(wheels["0.2.1"], "0.2.1"))
    with pytest.raises(
        su.SelfUpdateError, match=r"0.2.0 is older than the current 0.2.1; use `self-update rollback`"
    ):
        su.install(config, package(wheels["0.2.0"], "0.2.0"))
    assert layout(config.home) == ("0.2.1", [".self-update.lock", "0.2.1"])


def test_a_second_self_update_at_the_same_time_is_refused(
    config: ServiceConfig, wheels: dict[str, Path]
) -> None:
    (config.home / "venvs").mkdir()
    fd = os.open(config.home / "venvs" / su.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(su.SelfUpdateError, match=r"another self-update is running"):
            su.install(config, package(wheels["0.2.0"], "0.2.0"))
    finally:
        os.close(fd)
    assert su.current_version(config.home) is None


def test_a_broken_restart_setting_is_refused_before_anything_changes(
    config: ServiceConfig, wheels: dict[str, Path]
) -> None:
    (config.home / su.SETTINGS_FILE).write_text(json.dumps({"restart_command": "systemctl restart x"}))
    with pytest.raises(su.SelfUpdateError, match=r"restart_command must be a non-empty list"):
        su.install(config, package(wheels["0.2.0"], "0.2.0"))
    assert layout(config.home) == (None, [])


def test_the_restart_hook_runs_after_the_switch_with_the_versions(
    config: ServiceConfig, wheels: dict[str, Path], tmp_path: Path
) -> None:
    seen = tmp_path / "hook.txt"
    script = (
        f"import os, pathlib; pathlib.Path({str(seen)!r}).write_text("
        "os.environ['CORRAL_SELF_UPDATE_VERSION'] + ' ' + os.environ['CORRAL_SELF_UPDATE_PREVIOUS'] + ' ' "
        "+ os.readlink(os.environ['CORRAL_UPDATER_HOME'] + '/current'))"
    )
    (config.home / su.SETTINGS_FILE).write_text(
        json.dumps({"restart_command": [sys.executable, "-c", script]})
    )
    su.install(config, package(wheels["0.2.0"], "0.2.0"))
    result = su.install(config, package(wheels["0.2.1"], "0.2.1"))
    assert result.restart == "restart command ran"
    assert seen.read_text() == "0.2.1 0.2.0 venvs/0.2.1"  # it ran after current was switched

    (config.home / su.SETTINGS_FILE).write_text(json.dumps({"restart_command": ["false"]}))
    back = su.rollback(config)
    assert back.restart.startswith(
        "failed: the restart command exited 1; restart the service processes by hand"
    )
    assert su.current_version(config.home) == "0.2.0"


# --- after a rollout --------------------------------------------------------------------------------------


def add_staged_release(config: ServiceConfig, staged: StagedRelease) -> Release:
    engine = make_engine(config.effective_database_url)
    try:
        with transaction(session_factory(engine)) as db:
            return q.add_release(
                db, version=str(staged.version), channel="stable", release_date=date(2026, 11, 1),
                source=ReleaseSource.IMPORTED, staged_path=str(staged.path),
            )  # fmt: skip
    finally:
        engine.dispose()


def run_after_rollout(config: ServiceConfig, release: Release) -> su.AfterRollout:
    engine = make_engine(config.effective_database_url)
    try:
        with transaction(session_factory(engine)) as db:
            return su.after_rollout(config, db, release)
    finally:
        engine.dispose()


def self_update_audit(config: ServiceConfig) -> list[tuple[str, str, str]]:
    engine = make_engine(config.effective_database_url)
    try:
        with transaction(session_factory(engine)) as db:
            entries = db.scalars(sa.select(AuditEntry).where(AuditEntry.action.like("self-update.%"))).all()
            return [(e.action, e.target, str(e.outcome)) for e in entries]
    finally:
        engine.dispose()


def test_after_rollout_skips_a_home_not_in_the_layout(
    config: ServiceConfig, wheels: dict[str, Path], tmp_path: Path
) -> None:
    release = add_staged_release(config, stage_release(tmp_path, "0.2.0", wheels["0.2.0"]))
    outcome = run_after_rollout(config, release)
    assert (outcome.action, outcome.result) == ("skipped", None)
    assert "not in the self-update layout" in outcome.message
    assert layout(config.home) == (None, [])


def test_after_rollout_installs_a_newer_release_once_and_audits_it(
    config: ServiceConfig, wheels: dict[str, Path], tmp_path: Path
) -> None:
    su.install(config, package(wheels["0.2.0"], "0.2.0"))
    release = add_staged_release(config, stage_release(tmp_path, "0.2.1", wheels["0.2.1"]))

    outcome = run_after_rollout(config, release)

    assert outcome.action == "installed", outcome.message
    assert venv_reports(config.home)["version"] == "0.2.1"
    assert run_after_rollout(config, release).action == "skipped"  # already current
    assert self_update_audit(config) == [("self-update.install", "0.2.1", "ok")]


def test_after_rollout_records_a_failed_self_update_and_keeps_current(
    config: ServiceConfig, wheels: dict[str, Path], tmp_path: Path
) -> None:
    su.install(config, package(wheels["0.2.0"], "0.2.0"))
    release = add_staged_release(config, stage_release(tmp_path, "0.4.0", wheels["0.2.1"]))

    outcome = run_after_rollout(config, release)

    assert outcome.action == "failed"
    assert "is service version 0.2.1, but the release is 0.4.0" in outcome.message
    assert su.current_version(config.home) == "0.2.0"
    assert self_update_audit(config) == [("self-update.install", "0.4.0", "failed")]


# --- the CLI ----------------------------------------------------------------------------------------------


def test_cli_installs_a_staged_release_by_version_and_reports_status(
    config: ServiceConfig, wheels: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_staged_release(config, stage_release(tmp_path, "0.2.0", wheels["0.2.0"]))
    home = str(config.home)

    assert cli.main(["--home", home, "self-update", "install", "0.2.0", "--no-restart"]) == 0
    assert "service release 0.2.0 installed" in capsys.readouterr().out
    assert cli.main(["--home", home, "self-update", "status", "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert (state["current"], state["previous"], state["installed"]) == ("0.2.0", None, ["0.2.0"])
    assert state["database_revision"] == head_revision()
    assert self_update_audit(config) == [("self-update.install", "0.2.0", "ok")]


def test_cli_refusals_exit_2_with_one_line(config: ServiceConfig, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(config.home)
    assert cli.main(["--home", home, "self-update", "install", "9.9.9"]) == 2
    assert capsys.readouterr().err.strip() == (
        "corral-updater: release 9.9.9 is not staged here: import or download its bundle first"
    )
    assert cli.main(["--home", home, "self-update", "rollback"]) == 2
    assert "no self-update to roll back" in capsys.readouterr().err
    assert self_update_audit(config) == [
        ("self-update.install", "9.9.9", "refused"),
        ("self-update.rollback", "", "refused"),
    ]


def test_version_flag_reports_the_installed_package(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"corral-updater {su.running_version()}"


# --- the shipped examples ---------------------------------------------------------------------------------

PACKAGING = kit_.REPO / "updater" / "packaging"


def test_the_shipped_restart_setting_is_accepted(config: ServiceConfig) -> None:
    (config.home / su.SETTINGS_FILE).write_text((PACKAGING / "self-update.json").read_text())
    assert su.restart_command(config.home) == ("systemctl", "--no-block", "restart", "corral-updater.target")


def test_the_shipped_units_run_current_and_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Each unit starts ``<home>/current/bin/corral-updater <process>`` and is part of the target; with the
    home moved under tmp (an executable in place), ``systemd-analyze verify`` finds nothing to report."""
    home = tmp_path / "var-lib-corral-updater"
    launcher = home / "current" / "bin" / "corral-updater"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\nexit 0\n")
    launcher.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for unit in sorted((PACKAGING / "systemd").iterdir()):
        text = unit.read_text()
        if unit.suffix == ".service":
            process = unit.stem.removeprefix("corral-updater-")
            assert f"ExecStart=/var/lib/corral-updater/current/bin/corral-updater {process}\n" in text
            assert "PartOf=corral-updater.target\n" in text
            assert "Restart=always\n" in text
        (units / unit.name).write_text(text.replace("/var/lib/corral-updater", str(home)))
    done = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(u) for u in units.iterdir())],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr.strip()) == (0, "")
