"""The store's schema and queries, on a real SQLite file migrated by Alembic.

tests/integration/test_store_pg.py runs these same tests against a real PostgreSQL server too, by
overriding the ``engine`` fixture; so every test here must hold on both backends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from updater.domain.states import NodeState, RolloutState
from updater.store import queries as q
from updater.store.db import (
    StoreError,
    current_revision,
    head_revision,
    make_engine,
    migrate,
    require_current_schema,
    schema_differences,
    session_factory,
    transaction,
)
from updater.store.models import Outcome, Release, ReleaseSource, Role, Rollout, RolloutStep


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'updater.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: sa.Engine) -> sessionmaker[Session]:
    return session_factory(engine)


def _release(session: Session, version: str = "1.1.0", **extra: object) -> Release:
    values: dict[str, object] = {
        "version": version,
        "channel": "stable",
        "release_date": date(2026, 11, 1),
        "source": ReleaseSource.IMPORTED,
    }
    values.update(extra)
    return q.add_release(session, **values)  # type: ignore[arg-type]


def test_migrations_create_exactly_the_schema_the_models_describe(engine: sa.Engine) -> None:
    assert current_revision(engine) == head_revision()
    assert schema_differences(engine) == []


def test_migrating_an_up_to_date_database_changes_nothing(
    engine: sa.Engine, factory: sessionmaker[Session]
) -> None:
    with transaction(factory) as session:
        q.add_user(session, "alice", "hash", Role.OPERATOR)
    migrate(engine)
    with transaction(factory) as session:
        assert [u.username for u in q.list_users(session)] == ["alice"]
    assert current_revision(engine) == head_revision()


def test_an_unmigrated_database_is_refused_with_the_command_to_run(engine: sa.Engine) -> None:
    require_current_schema(engine)
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM alembic_version"))
    with pytest.raises(StoreError, match=r"corral-updater migrate"):
        require_current_schema(engine)


def test_usernames_are_unique(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        q.add_user(session, "alice", "hash", Role.VIEWER)
    with pytest.raises(q.AlreadyExists, match="alice"), transaction(factory) as session:
        q.add_user(session, "alice", "other", Role.OPERATOR)
    # The database enforces it too, for writers that skip the query layer.
    with pytest.raises(IntegrityError), transaction(factory) as session:
        session.execute(
            sa.text(
                "INSERT INTO users (username, password_hash, role, created_at, disabled) "
                "VALUES ('alice', 'x', 'viewer', :now, false)"
            ),
            {"now": datetime.now(UTC)},
        )


def test_the_database_refuses_a_role_that_does_not_exist(factory: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), transaction(factory) as session:
        session.execute(
            sa.text(
                "INSERT INTO users (username, password_hash, role, created_at, disabled) "
                "VALUES ('mallory', 'x', 'admin', :now, false)"
            ),
            {"now": datetime.now(UTC)},
        )


def test_times_come_back_as_aware_utc_and_naive_times_are_refused(factory: sessionmaker[Session]) -> None:
    moment = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)
    with transaction(factory) as session:
        q.add_audit(session, actor="alice", action="login", outcome=Outcome.OK, at=moment)
    with transaction(factory) as session:
        (entry,) = q.list_audit(session)
        assert entry.at == moment
        assert entry.at.tzinfo is not None
    with pytest.raises(StatementError, match="naive datetime"), transaction(factory) as session:
        q.add_audit(session, actor="alice", action="login", outcome=Outcome.OK, at=datetime(2026, 1, 1))


def test_a_failed_unit_of_work_leaves_nothing_behind(factory: sessionmaker[Session]) -> None:
    def add_bob_twice() -> None:
        with transaction(factory) as session:
            q.add_user(session, "bob", "hash", Role.VIEWER)
            q.add_audit(session, actor="root", action="user.add", target="bob", outcome=Outcome.OK)
            q.add_user(session, "bob", "hash", Role.VIEWER)

    with pytest.raises(q.AlreadyExists):
        add_bob_twice()
    with transaction(factory) as session:
        assert q.list_users(session) == []
        assert q.list_audit(session) == []


def test_a_release_keeps_its_verification_result_per_check(factory: sessionmaker[Session]) -> None:
    checks = [q.CheckResult("signature", True), q.CheckResult("license", False, "updates period ended")]
    with transaction(factory) as session:
        _release(session, notes="Ceph 16.2.15", staged_path="/srv/staged/1.1.0", checks=checks)
    with transaction(factory) as session:
        release = q.find_release(session, "1.1.0")
        assert release is not None
        assert [(c.name, c.passed, c.detail) for c in release.checks] == [
            ("signature", True, ""),
            ("license", False, "updates period ended"),
        ]
        assert release.source is ReleaseSource.IMPORTED
        assert release.release_date == date(2026, 11, 1)
    with pytest.raises(q.AlreadyExists, match=r"1\.1\.0"), transaction(factory) as session:
        _release(session)


def test_the_installed_release_is_the_one_most_recently_rolled_out(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        assert q.installed_release(session) is None
        old, new = _release(session, "1.0.0"), _release(session, "1.1.0")
        _release(session, "1.2.0")  # known, never installed
        now = datetime.now(UTC)
        q.mark_installed(session, old, now - timedelta(days=3))
        q.mark_installed(session, new, now)
    with transaction(factory) as session:
        installed = q.installed_release(session)
        assert installed is not None
        assert installed.version == "1.1.0"


def test_a_rollout_keeps_its_plan_steps_log_and_report(factory: sessionmaker[Session]) -> None:
    plan = {"batches": [["node3"], ["node1"], ["node2"]], "estimate_seconds": 540}
    with transaction(factory) as session:
        release = _release(session)
        q.add_rollout(
            session,
            rollout_id="r-1",
            release=release,
            created_by="alice",
            plan=plan,
            nodes=["node3", "node1", "node2"],
        )
    started = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    with transaction(factory) as session:
        rollout = q.get_rollout(session, "r-1")
        rollout.state = RolloutState.RUNNING
        rollout.started_at = started
        step = rollout.steps[0]
        step.state = NodeState.ACTIVE
        step.started_at, step.finished_at = started, started + timedelta(seconds=95)
        step.phase_seconds = {"drain": 20.5, "reboot": 40.0, "verify": 34.5}
        rollout.executed_order = ["node3"]
        rollout.probe_report = {"failures": 0, "services": {"zookeeper": {"longest_gap": 0.4}}}
    with transaction(factory) as session:
        rollout = q.get_rollout(session, "r-1")
        assert rollout.plan == plan
        assert [s.node for s in rollout.steps] == ["node3", "node1", "node2"]
        assert rollout.steps[0].duration_seconds == 95.0
        assert rollout.steps[0].phase_seconds["reboot"] == 40.0
        assert rollout.steps[1].duration_seconds is None
        assert rollout.state is RolloutState.RUNNING
        assert rollout.target_release.version == "1.1.0"
        assert rollout.probe_report == {"failures": 0, "services": {"zookeeper": {"longest_gap": 0.4}}}
        assert rollout.executed_order == ["node3"]


def test_a_rollout_id_is_used_once_and_names_each_node_once(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        release = _release(session)
        q.add_rollout(session, rollout_id="r-1", release=release, created_by="a", plan={}, nodes=["n1"])

    def add(rollout_id: str, nodes: list[str]) -> None:
        with transaction(factory) as session:
            release = q.find_release(session, "1.1.0")
            assert release is not None
            q.add_rollout(
                session, rollout_id=rollout_id, release=release, created_by="a", plan={}, nodes=nodes
            )

    with pytest.raises(q.AlreadyExists, match="r-1"):
        add("r-1", ["n1"])
    with pytest.raises(ValueError, match="each node once"):
        add("r-2", ["n1", "n1"])
    with transaction(factory) as session:
        assert [r.id for r in q.list_rollouts(session)] == ["r-1"]


def test_a_rollout_must_target_a_known_release(factory: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), transaction(factory) as session:
        session.add(Rollout(id="r-x", target_release_id=999, state=RolloutState.PLANNED, created_by="a"))


def test_log_lines_get_consecutive_sequence_numbers_and_can_be_followed(
    factory: sessionmaker[Session],
) -> None:
    with transaction(factory) as session:
        release = _release(session)
        q.add_rollout(session, rollout_id="r-1", release=release, created_by="a", plan={}, nodes=["n1"])
        q.append_log(session, "r-1", [("n1", "stdout", "TASK [drain]"), ("n1", "stdout", "ok: [n1]")])
    with transaction(factory) as session:
        q.append_log(session, "r-1", [(None, "event", "rollout paused")])
    with transaction(factory) as session:
        assert [(line.seq, line.text) for line in q.log_lines(session, "r-1")] == [
            (0, "TASK [drain]"),
            (1, "ok: [n1]"),
            (2, "rollout paused"),
        ]
        assert [line.seq for line in q.log_lines(session, "r-1", after_seq=1)] == [2]


def test_two_writers_of_one_rollout_log_take_turns(factory: sessionmaker[Session]) -> None:
    """The worker logs inside an open transaction while an operator's pause logs too: the pause's line comes
    after the worker's, and neither fails (they used to read the same last number and collide)."""
    with transaction(factory) as session:
        release = _release(session)
        q.add_rollout(session, rollout_id="r-1", release=release, created_by="a", plan={}, nodes=["n1"])
    worker_wrote = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with transaction(factory) as session:
                q.append_log(session, "r-1", [("n1", "stdout", "TASK [drain]"), ("n1", "stdout", "ok: [n1]")])
                worker_wrote.set()
                time.sleep(0.5)  # still in its transaction when the operator's line is written
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)
            worker_wrote.set()

    thread = threading.Thread(target=worker)
    thread.start()
    assert worker_wrote.wait(10)
    with transaction(factory) as session:
        q.append_log(session, "r-1", [(None, "event", "pause requested by operator1")])
    thread.join(10)
    assert errors == []
    with transaction(factory) as session:
        assert [(line.seq, line.text) for line in q.log_lines(session, "r-1")] == [
            (0, "TASK [drain]"),
            (1, "ok: [n1]"),
            (2, "pause requested by operator1"),
        ]


def test_deleting_a_rollout_removes_its_steps_and_log(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        release = _release(session)
        q.add_rollout(session, rollout_id="r-1", release=release, created_by="a", plan={}, nodes=["n1", "n2"])
        q.append_log(session, "r-1", [("n1", "stdout", "x")])
    with transaction(factory) as session:
        session.delete(q.get_rollout(session, "r-1"))
    with transaction(factory) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(RolloutStep)) == 0
        assert q.log_lines(session, "r-1") == []
        with pytest.raises(q.NotFound, match="r-1"):
            q.get_rollout(session, "r-1")


def test_each_nodes_latest_step_comes_from_the_newest_rollout(factory: sessionmaker[Session]) -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    with transaction(factory) as session:
        release = _release(session)
        first = q.add_rollout(
            session, rollout_id="r-1", release=release, created_by="a", plan={}, nodes=["n1", "n2"]
        )
        first.created_at = t0
        second = q.add_rollout(
            session, rollout_id="r-2", release=release, created_by="a", plan={}, nodes=["n2"]
        )
        second.created_at = t0 + timedelta(hours=1)
        second.steps[0].state = NodeState.FAILED
    with transaction(factory) as session:
        latest = q.latest_steps_by_node(session)
        assert latest["n1"].rollout_id == "r-1"
        assert (latest["n2"].rollout_id, latest["n2"].state) == ("r-2", NodeState.FAILED)
        assert [r.id for r in q.list_rollouts(session)] == ["r-2", "r-1"]


def test_audit_entries_are_listed_newest_first_in_pages(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        for i in range(5):
            q.add_audit(session, actor="alice", action=f"a{i}", outcome=Outcome.OK, source_ip="127.0.0.1")
    with transaction(factory) as session:
        page = q.list_audit(session, limit=2)
        assert [e.action for e in page] == ["a4", "a3"]
        assert [e.action for e in q.list_audit(session, limit=10, before_id=page[-1].id)] == [
            "a2",
            "a1",
            "a0",
        ]
