"""The operator's account mutations (the one implementation behind the UI, the API and ``corral-updater``):
each changes the store and writes its audit entry together, and a refusal writes neither. A real SQLite
store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from updater.services.accounts import auth, users
from updater.store import queries
from updater.store.db import make_engine, migrate, session_factory, transaction
from updater.store.models import Outcome, Role

OLGA = users.Actor("olga", "192.0.2.7")


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'updater.db'}")
    migrate(engine)
    with transaction(session_factory(engine)) as db:
        auth.create_user(db, "olga", "olga's long password", Role.OPERATOR)
    yield session_factory(engine)
    engine.dispose()


def _audit(factory: sessionmaker[Session]) -> list[tuple[str, str, str, Outcome, str | None, str]]:
    with transaction(factory) as db:
        entries = reversed(queries.list_audit(db))
        return [(e.actor, e.action, e.target, e.outcome, e.source_ip, e.detail) for e in entries]


def _refused_leaves_no_trace(
    factory: sessionmaker[Session], change: Callable[[Session], Any], error: type[Exception], match: str
) -> None:
    with transaction(factory) as db:
        users_before = [(u.username, u.role, u.disabled, u.password_hash) for u in queries.list_users(db)]
    audit_before = _audit(factory)
    with pytest.raises(error, match=match), transaction(factory) as db:
        change(db)
    with transaction(factory) as db:
        assert [
            (u.username, u.role, u.disabled, u.password_hash) for u in queries.list_users(db)
        ] == users_before
    assert _audit(factory) == audit_before


def test_an_added_user_signs_in_with_the_password_shown_once_and_the_addition_is_audited(
    factory: sessionmaker[Session],
) -> None:
    with transaction(factory) as db:
        added = users.add_user(db, OLGA, "vera", "viewer")
    assert (added.user.username, added.user.role, added.user.disabled) == ("vera", Role.VIEWER, False)
    assert added.password not in repr(added)
    with transaction(factory) as db:
        user = auth.authenticate(db, auth.LoginThrottle(), "vera", added.password, None)
        assert user.password_hash != added.password
    assert _audit(factory) == [("olga", "user.add", "vera", Outcome.OK, "192.0.2.7", "role viewer")]


@pytest.mark.parametrize(
    ("username", "role", "error", "match"),
    [
        ("vera", "admin", auth.BadInput, "role must be one of viewer, operator"),
        ("Vera", "viewer", auth.BadInput, "lower-case letter"),
        ("olga", "viewer", queries.AlreadyExists, "olga"),
    ],
)
def test_a_refused_addition_changes_nothing_and_writes_no_entry(
    factory: sessionmaker[Session], username: str, role: str, error: type[Exception], match: str
) -> None:
    _refused_leaves_no_trace(factory, lambda db: users.add_user(db, OLGA, username, role), error, match)


def test_an_issued_token_authenticates_its_user_and_its_issue_is_audited(
    factory: sessionmaker[Session],
) -> None:
    with transaction(factory) as db:
        token = users.issue_token(db, OLGA, "olga", "ci", valid_days=7)
    with transaction(factory) as db:
        assert auth.user_for_token(db, token).username == "olga"
        (record,) = queries.get_user(db, "olga").tokens
        assert record.name == "ci"
        assert record.expires_at is not None
        assert token not in (record.secret_hash, record.token_id)
    assert _audit(factory) == [("olga", "token.create", "olga", Outcome.OK, "192.0.2.7", "token ci")]


@pytest.mark.parametrize(
    ("username", "name", "error", "match"),
    [("nobody", "ci", queries.NotFound, "nobody"), ("olga", "", auth.BadInput, "1-64 characters")],
)
def test_a_refused_token_is_not_issued_and_writes_no_entry(
    factory: sessionmaker[Session], username: str, name: str, error: type[Exception], match: str
) -> None:
    _refused_leaves_no_trace(factory, lambda db: users.issue_token(db, OLGA, username, name), error, match)
    with transaction(factory) as db:
        assert queries.get_user(db, "olga").tokens == []


def test_a_disabled_user_cannot_sign_in_until_enabled_again_and_both_are_audited(
    factory: sessionmaker[Session],
) -> None:
    with transaction(factory) as db:
        password = users.add_user(db, OLGA, "vera", "viewer").password
    with transaction(factory) as db:
        assert users.set_disabled(db, OLGA, "vera", disabled=True).disabled
    with pytest.raises(auth.InvalidCredentials), transaction(factory) as db:
        auth.authenticate(db, auth.LoginThrottle(), "vera", password, None)
    with transaction(factory) as db:
        assert not users.set_disabled(db, OLGA, "vera", disabled=False).disabled
    with transaction(factory) as db:
        assert auth.authenticate(db, auth.LoginThrottle(), "vera", password, None).username == "vera"
    assert [(action, target) for _, action, target, *_ in _audit(factory)] == [
        ("user.add", "vera"),
        ("user.disable", "vera"),
        ("user.enable", "vera"),
    ]


@pytest.mark.parametrize(
    ("username", "error", "match"),
    [("olga", auth.BadInput, "you cannot disable your own account"), ("nobody", queries.NotFound, "nobody")],
)
def test_nobody_disables_their_own_account_or_one_that_does_not_exist(
    factory: sessionmaker[Session], username: str, error: type[Exception], match: str
) -> None:
    _refused_leaves_no_trace(
        factory, lambda db: users.set_disabled(db, OLGA, username, disabled=True), error, match
    )


def test_the_first_operator_is_set_up_once_and_reset_only_when_asked(factory: sessionmaker[Session]) -> None:
    host = users.Actor("cli:root")
    with transaction(factory) as db:
        first = users.set_up_admin(db, host, "admin", reset=False)
    _refused_leaves_no_trace(
        factory, lambda db: users.set_up_admin(db, host, "olga", reset=False), queries.AlreadyExists, "olga"
    )
    with transaction(factory) as db:
        users.add_user(db, host, "vera", "viewer")
        users.set_disabled(db, host, "vera", disabled=True)
    with transaction(factory) as db:
        second = users.set_up_admin(db, host, "vera", reset=True)
    with transaction(factory) as db:
        for name, password in (("admin", first), ("vera", second)):
            user = auth.authenticate(db, auth.LoginThrottle(), name, password, None)
            assert (user.role, user.disabled) == (Role.OPERATOR, False)
    assert [(actor, action, target) for actor, action, target, *_ in _audit(factory)] == [
        ("cli:root", "init", "admin"),
        ("cli:root", "user.add", "vera"),
        ("cli:root", "user.disable", "vera"),
        ("cli:root", "init", "vera"),
    ]
