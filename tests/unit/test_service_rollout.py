"""The rollout service's logic that needs no cluster: refusals decided from the store (before the cluster is
touched), the estimate from past rollouts, the release checks, where ZooKeeper is, what is secret in an
inventory, and the CLI's refusals (exit 2, audited). The store is a real SQLite file migrated by Alembic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from updater.cli import updater as cli
from updater.config import ServiceConfig, save_settings, write_secret_key
from updater.domain.inventory import inventory_from_ansible
from updater.domain.states import NodeState, RolloutState
from updater.services.cluster.access import ClusterAccessError, _secrets, load_cluster, zookeeper_hosts
from updater.services.rollouts import control as rollouts
from updater.store import queries
from updater.store.db import make_engine, migrate, session_factory, transaction
from updater.store.models import ReleaseSource, Rollout

VERSION = "0.2.0"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    config = ServiceConfig(home=home)  # no inventory: any step that needs the cluster is refused
    save_settings(config)
    write_secret_key(home, b"k" * 32)
    return home


@pytest.fixture
def config(home: Path) -> ServiceConfig:
    from updater.config import load_config

    return load_config(home)


@pytest.fixture
def sessions(config: ServiceConfig) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(config.effective_database_url)
    migrate(engine)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


def _release(db: Session, staged: Path | None, checks: list[queries.CheckResult]) -> None:
    queries.add_release(
        db,
        version=VERSION,
        channel="stable",
        release_date=date(2026, 11, 1),
        source=ReleaseSource.IMPORTED,
        staged_path=str(staged) if staged else None,
        checks=checks,
    )


def _rollout(db: Session, rollout_id: str, state: RolloutState, by: str = "alice") -> None:
    release = queries.find_release(db, VERSION)
    assert release is not None
    row = queries.add_rollout(
        db, rollout_id=rollout_id, release=release, created_by=by, plan={}, nodes=["node1", "node2"]
    )
    row.state = state
    row.created_at = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


# --- refusals decided from the store ----------------------------------------------------------------------
def test_start_is_a_conflict_naming_the_active_rollout_before_the_cluster_is_touched(
    config: ServiceConfig, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as db:
        _release(db, None, [])
        _rollout(db, "update-a", RolloutState.RUNNING, by="alice")
    queued: list[str] = []
    with transaction(sessions) as db, pytest.raises(rollouts.RolloutConflict) as refused:
        rollouts.start(config, db, VERSION, "bob", queued.append)
    assert str(refused.value) == (
        "another rollout is in progress: "
        "rollout update-a started by alice at 2026-11-20 09:30:00 UTC (running)"
    )
    assert refused.value.holder.startswith("rollout update-a started by alice")
    assert queued == []


@pytest.mark.parametrize("state", [RolloutState.PLANNED, RolloutState.RUNNING, RolloutState.PAUSED])
def test_every_active_state_blocks_a_second_start(
    config: ServiceConfig, sessions: sessionmaker[Session], state: RolloutState
) -> None:
    with transaction(sessions) as db:
        _release(db, None, [])
        _rollout(db, "update-a", state)
        _rollout(db, "update-old", RolloutState.SUCCEEDED)
        assert [row.id for row in rollouts.active_rollouts(db)] == ["update-a"]


def test_ended_rollouts_do_not_block_a_start_which_then_needs_the_inventory(
    config: ServiceConfig, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as db:
        _release(db, None, [])
        for index, state in enumerate((RolloutState.SUCCEEDED, RolloutState.FAILED, RolloutState.ABORTED)):
            _rollout(db, f"update-{index}", state)
    with (
        transaction(sessions) as db,
        pytest.raises(rollouts.RolloutRefused, match="no inventory is configured"),
    ):
        rollouts.start(config, db, VERSION, "bob", lambda _id: None)


def test_an_unknown_release_is_refused_by_name(
    config: ServiceConfig, sessions: sessionmaker[Session]
) -> None:
    with (
        transaction(sessions) as db,
        pytest.raises(rollouts.RolloutRefused, match=r"release 1\.9\.0 is unknown"),
    ):
        rollouts.start(config, db, "1.9.0", "bob", lambda _id: None)


@pytest.mark.parametrize(
    ("action", "state", "message"),
    [
        ("pause", RolloutState.PAUSED, "is paused: only a running rollout can be paused"),
        ("pause", RolloutState.SUCCEEDED, "is succeeded: only a running rollout can be paused"),
        ("resume", RolloutState.RUNNING, "is running: only a paused rollout can be resumed"),
        ("resume", RolloutState.FAILED, "is failed: only a paused rollout can be resumed"),
        ("abort", RolloutState.ABORTED, "is aborted: it has already ended"),
        ("abort", RolloutState.SUCCEEDED, "is succeeded: it has already ended"),
    ],
)
def test_controls_in_the_wrong_state_are_refused_and_change_nothing(
    config: ServiceConfig, sessions: sessionmaker[Session], action: str, state: RolloutState, message: str
) -> None:
    with transaction(sessions) as db:
        _release(db, None, [])
        _rollout(db, "update-a", state)
    calls = {
        "pause": lambda db: rollouts.pause(config, db, "update-a", "carol"),
        "resume": lambda db: rollouts.resume(config, db, "update-a", "carol", lambda _id: None),
        "abort": lambda db: rollouts.abort(config, db, "update-a", "carol"),
    }
    with transaction(sessions) as db, pytest.raises(rollouts.RolloutRefused, match=message):
        calls[action](db)
    with transaction(sessions) as db:
        assert queries.get_rollout(db, "update-a").state is state
        assert queries.log_lines(db, "update-a") == []
        assert queries.list_audit(db) == []


def test_a_control_on_an_unknown_rollout_is_refused(
    config: ServiceConfig, sessions: sessionmaker[Session]
) -> None:
    with (
        transaction(sessions) as db,
        pytest.raises(rollouts.RolloutRefused, match="there is no rollout 'ghost'"),
    ):
        rollouts.pause(config, db, "ghost", "carol")


# --- estimate and release checks --------------------------------------------------------------------------
def test_the_estimate_is_the_default_per_node_without_history_and_the_mean_of_past_nodes_with_it(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as db:
        _release(db, None, [])
        assert rollouts.estimate_seconds(db, 3) == 3 * rollouts.DEFAULT_SECONDS_PER_NODE
        _rollout(db, "update-a", RolloutState.SUCCEEDED)
        _rollout(db, "update-b", RolloutState.FAILED)  # a failed rollout's timings are not a norm
        rows = {row.id: row for row in queries.list_rollouts(db)}
        for step, total in zip(rows["update-a"].steps, (30.0, 50.0), strict=True):
            step.phase_seconds = {"drain": 1.0, "total": total}
            step.finished_at = datetime(2026, 11, 20, 10, tzinfo=UTC)
        for step in rows["update-b"].steps:
            step.phase_seconds = {"total": 900.0}
            step.finished_at = datetime(2026, 11, 20, 10, tzinfo=UTC)
        db.flush()
        assert rollouts.estimate_seconds(db, 3) == 120


def test_release_checks_need_the_staged_manifest_and_every_verification_passed(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    staged = tmp_path / "staging" / VERSION
    with transaction(sessions) as db:
        _release(db, staged, [queries.CheckResult("signature", True), queries.CheckResult("license", False)])
        release = queries.find_release(db, VERSION)
        assert release is not None
        checks = {check.name: check for check in rollouts._release_checks(release)}
        assert not checks["release staged"].passed
        assert "is recorded at" in checks["release staged"].detail
        assert (checks["release verified"].passed, checks["release verified"].detail) == (
            False,
            "failed checks: license",
        )
        staged.mkdir(parents=True)
        (staged / "manifest.json").write_text("{}")
        release.checks[1].passed = True
        checks = {check.name: check for check in rollouts._release_checks(release)}
        assert checks["release staged"].passed
        assert checks["release verified"] == rollouts.PreflightCheck(
            "release verified", True, "2 checks passed"
        )


def test_a_preview_as_json_says_whether_it_is_ready() -> None:
    preview = rollouts.PlanPreview(
        version=VERSION,
        batches=[["node1"], ["node2"]],
        lines=["1. quorum: node1", "2. quorum: node2"],
        estimated_seconds=360,
        preflight=[rollouts.PreflightCheck("nodes answer", False, "node2: unreachable")],
        plan={},
    )
    assert preview.as_json() == {
        "version": VERSION,
        "batches": [["node1"], ["node2"]],
        "lines": ["1. quorum: node1", "2. quorum: node2"],
        "estimated_seconds": 360,
        "preflight": [{"name": "nodes answer", "passed": False, "detail": "node2: unreachable"}],
        "ready": False,
    }
    assert json.dumps(preview.as_json())


def test_rollout_ids_are_unique_per_second_and_valid_znode_names() -> None:
    rollout_id = rollouts.new_rollout_id("1.3.0", datetime(2026, 11, 21, 13, 5, 9, tzinfo=UTC))
    assert rollout_id == "update-to-1.3.0-20261121T130509Z"
    assert "/" not in rollout_id
    assert len(rollouts.new_rollout_id("1.3.0-" + "x" * 80)) == 64


# --- the cluster as the inventory describes it ------------------------------------------------------------
def _inventory_data(extra: dict[str, Any] | None = None, address: bool = True) -> dict[str, Any]:
    hostvars = {
        f"node{i}": {
            **({"corral_address": f"10.0.0.{i}"} if address else {}),
            "corral_bmc_password": "s3cret-bmc",
            "corral_bmc_user": "admin",
            "ansible_ssh_private_key_file": "/root/.ssh/id",
            **(extra or {}),
        }
        for i in (1, 2, 3)
    }
    return {"_meta": {"hostvars": hostvars}, "nodes": {"hosts": list(hostvars)}}


def test_zookeeper_is_found_as_the_rolling_playbook_finds_it() -> None:
    data = _inventory_data()
    assert zookeeper_hosts(data, inventory_from_ansible(data)) == "10.0.0.1:2181,10.0.0.2:2181,10.0.0.3:2181"
    data = _inventory_data({"corral_rolling_zookeeper_port": 2281})
    assert zookeeper_hosts(data, inventory_from_ansible(data)).endswith("10.0.0.3:2281")
    data = _inventory_data({"corral_rolling_zookeeper_hosts": "127.0.0.1:3000"})
    assert zookeeper_hosts(data, inventory_from_ansible(data)) == "127.0.0.1:3000"
    data = _inventory_data(address=False)
    with pytest.raises(ClusterAccessError, match="every ZooKeeper member needs corral_address"):
        zookeeper_hosts(data, inventory_from_ansible(data))


def test_inventory_secrets_are_collected_for_redaction_but_paths_and_users_are_not() -> None:
    assert _secrets(_inventory_data()) == ("s3cret-bmc",)


# --- the CLI: refusals exit 2 with one line, and are audited ----------------------------------------------
def test_cli_plan_without_an_inventory_is_refused_and_audited(
    home: Path, sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    with transaction(sessions) as db:
        _release(db, None, [])
    assert cli.main(["--home", str(home), "plan", VERSION]) == 2
    assert "no inventory is configured" in capsys.readouterr().err
    with transaction(sessions) as db:
        (entry,) = queries.list_audit(db)
        assert (entry.action, entry.target, str(entry.outcome)) == ("rollout.plan", VERSION, "refused")


def test_cli_controls_without_a_rollout_in_progress_are_refused(
    home: Path, sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("pause", "abort"):
        assert cli.main(["--home", str(home), command]) == 2
        assert "no rollout is in progress: give its id" in capsys.readouterr().err
    assert cli.main(["--home", str(home), "resume"]) == 2
    assert "no rollout is paused: give its id" in capsys.readouterr().err


def test_cli_apply_while_a_rollout_is_active_is_refused_naming_it(
    home: Path, sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    with transaction(sessions) as db:
        _release(db, None, [])
        _rollout(db, "update-a", RolloutState.RUNNING)
    assert cli.main(["--home", str(home), "apply", VERSION, "--yes"]) == 2
    assert "rollout update-a started by alice" in capsys.readouterr().err
    with transaction(sessions) as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(Rollout)) == 1
        assert queries.get_rollout(db, "update-a").steps[0].state is NodeState.ACTIVE


def test_the_cluster_is_read_once_through_ansible_inventory_until_the_inventory_changes(
    tmp_path: Path,
) -> None:
    inventory = tmp_path / "inventory.yml"
    hosts = {f"node{i}": {"corral_address": f"10.0.0.{i}"} for i in (1, 2, 3)}
    inventory.write_text(json.dumps({"all": {"children": {"nodes": {"hosts": hosts}}}}))
    config = ServiceConfig(home=tmp_path, inventory_path=str(inventory))
    first = load_cluster(config)
    assert first.zookeeper_hosts == "10.0.0.1:2181,10.0.0.2:2181,10.0.0.3:2181"
    assert load_cluster(config) is first
    hosts["node1"]["corral_address"] = "10.0.9.1"
    inventory.write_text(json.dumps({"all": {"children": {"nodes": {"hosts": hosts}}}}))
    written = inventory.stat()
    os.utime(inventory, ns=(written.st_atime_ns, written.st_mtime_ns + 1_000_000_000))  # a later edit
    again = load_cluster(config)
    assert again is not first
    assert again.zookeeper_hosts.startswith("10.0.9.1:2181")
