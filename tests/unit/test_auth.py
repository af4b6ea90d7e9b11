"""Passwords, throttling, API tokens, roles and log redaction; a real SQLite store where one is needed."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher, Type
from sqlalchemy.orm import Session, sessionmaker

from updater.services.accounts import auth
from updater.store import queries as q
from updater.store.db import make_engine, migrate, session_factory, transaction
from updater.store.models import Role, utcnow


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'updater.db'}")
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


class FakeClock:
    """Time for the throttle; the throttle's policy is about time, not about waiting in a test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.production_password_hashing
def test_passwords_are_hashed_with_memory_hard_argon2id_and_a_fresh_salt() -> None:
    first, second = auth.hash_password("correct horse battery"), auth.hash_password("correct horse battery")
    assert first.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert first != second
    assert auth.verify_password(first, "correct horse battery")
    assert not auth.verify_password(first, "correct horse batterz")
    assert not auth.verify_password("not a hash", "correct horse battery")


@pytest.mark.parametrize(
    ("password", "message"),
    [("short", "at least 12"), ("x" * 1025, "at most 1024")],
)
def test_weak_or_absurd_passwords_are_refused(password: str, message: str) -> None:
    with pytest.raises(auth.BadInput, match=message):
        auth.hash_password(password)


@pytest.mark.parametrize("name", ["", "Alice", "1abc", "a b", "a" * 65, "ünï"])
def test_usernames_follow_one_simple_rule(name: str) -> None:
    with pytest.raises(auth.BadInput, match="lower-case letter"):
        auth.validate_username(name)


def test_an_unknown_role_is_refused_with_the_choices() -> None:
    assert auth.parse_role("operator") is Role.OPERATOR
    with pytest.raises(auth.BadInput, match="viewer, operator"):
        auth.parse_role("admin")


def test_login_is_refused_after_repeated_failures_until_the_lockout_ends() -> None:
    clock = FakeClock()
    throttle = auth.LoginThrottle(max_failures=3, lockout_seconds=60, clock=clock)
    for _ in range(3):
        throttle.check("alice", "10.0.0.1")
        throttle.failed("alice", "10.0.0.1")
    with pytest.raises(auth.Throttled, match="try again in 60 s") as refused:
        throttle.check("alice", "10.0.0.9")  # another address does not help: the username is locked
    assert refused.value.retry_after == 60
    clock.now += 59.5
    with pytest.raises(auth.Throttled):
        throttle.check("alice", None)
    clock.now += 1
    throttle.check("alice", "10.0.0.1")


def test_one_address_guessing_many_usernames_is_throttled() -> None:
    throttle = auth.LoginThrottle(max_failures=3, lockout_seconds=60, clock=FakeClock())
    for name in ("a", "b", "c"):
        throttle.failed(name, "10.0.0.1")
    with pytest.raises(auth.Throttled):
        throttle.check("d", "10.0.0.1")
    throttle.check("d", "10.0.0.2")


def test_a_successful_login_clears_the_usernames_failures() -> None:
    throttle = auth.LoginThrottle(max_failures=2, lockout_seconds=60, clock=FakeClock())
    throttle.failed("alice", None)
    throttle.succeeded("alice")
    throttle.failed("alice", None)
    throttle.check("alice", None)


def test_authenticate_accepts_only_the_right_password_of_an_enabled_user(
    factory: sessionmaker[Session],
) -> None:
    throttle = auth.LoginThrottle()
    with transaction(factory) as session:
        auth.create_user(session, "alice", "correct horse battery", Role.OPERATOR)
        bob = auth.create_user(session, "bob", "correct horse battery", Role.VIEWER)
        bob.disabled = True
    with transaction(factory) as session:
        assert (
            auth.authenticate(session, throttle, "alice", "correct horse battery", "::1").username == "alice"
        )
        for name, password in [
            ("alice", "wrong password!"),
            ("nobody", "correct horse battery"),
            ("bob", "correct horse battery"),
        ]:
            with pytest.raises(auth.InvalidCredentials, match=r"^invalid username or password$"):
                auth.authenticate(session, throttle, name, password, "::1")


def test_a_throttled_user_is_refused_even_with_the_right_password(factory: sessionmaker[Session]) -> None:
    throttle = auth.LoginThrottle(max_failures=2, lockout_seconds=60, clock=FakeClock())
    with transaction(factory) as session:
        auth.create_user(session, "alice", "correct horse battery", Role.OPERATOR)
    with transaction(factory) as session:
        for _ in range(2):
            with pytest.raises(auth.InvalidCredentials):
                auth.authenticate(session, throttle, "alice", "wrong password!", None)
        with pytest.raises(auth.Throttled):
            auth.authenticate(session, throttle, "alice", "correct horse battery", None)


@pytest.mark.production_password_hashing
def test_a_weaker_hash_is_upgraded_at_the_next_login(factory: sessionmaker[Session]) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID).hash(
        "correct horse battery"
    )
    with transaction(factory) as session:
        q.add_user(session, "alice", weak, Role.VIEWER)
    with transaction(factory) as session:
        auth.authenticate(session, auth.LoginThrottle(), "alice", "correct horse battery", None)
    with transaction(factory) as session:
        upgraded = q.get_user(session, "alice").password_hash
        assert upgraded.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        assert auth.verify_password(upgraded, "correct horse battery")


def test_tokens_are_stored_only_as_a_hash_and_verify_back_to_their_user(
    factory: sessionmaker[Session],
) -> None:
    with transaction(factory) as session:
        alice = auth.create_user(session, "alice", "correct horse battery", Role.VIEWER)
        token = auth.create_token(session, alice, "ci")
    token_id, secret = auth.parse_token(token)
    with transaction(factory) as session:
        stored = session.execute(sa.text("SELECT token_id, secret_hash FROM api_tokens")).one()
        assert stored.token_id == token_id
        assert secret not in stored.secret_hash
        assert token not in stored.secret_hash
        assert auth.user_for_token(session, token).username == "alice"


def test_a_wrong_malformed_revoked_or_expired_token_is_refused(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        alice = auth.create_user(session, "alice", "correct horse battery", Role.VIEWER)
        good = auth.create_token(session, alice, "good")
        revoked = auth.create_token(session, alice, "revoked")
        expired = auth.create_token(session, alice, "expired", valid_days=1)
    token_id, secret = auth.parse_token(good)
    forged = f"crl_{token_id}_{'A' * len(secret)}"
    unknown = f"crl_{'0' * 16}_{secret}"
    with transaction(factory) as session:
        q.find_token(session, auth.parse_token(revoked)[0]).revoked = True  # type: ignore[union-attr]
        q.find_token(session, auth.parse_token(expired)[0]).expires_at = utcnow() - timedelta(seconds=1)  # type: ignore[union-attr]
    with transaction(factory) as session:
        for bad in [forged, unknown, "Bearer x", good + "x", revoked, expired]:
            with pytest.raises(auth.InvalidToken, match="invalid or revoked API token"):
                auth.user_for_token(session, bad)
        assert auth.user_for_token(session, good).username == "alice"


def test_a_disabled_users_tokens_stop_working(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        alice = auth.create_user(session, "alice", "correct horse battery", Role.OPERATOR)
        token = auth.create_token(session, alice, "ci")
    with transaction(factory) as session:
        q.get_user(session, "alice").disabled = True
    with transaction(factory) as session, pytest.raises(auth.InvalidToken):
        auth.user_for_token(session, token)


def test_operator_includes_viewer_but_not_the_other_way_round() -> None:
    auth.require_role(Role.OPERATOR, Role.VIEWER)
    auth.require_role(Role.OPERATOR, Role.OPERATOR)
    auth.require_role(Role.VIEWER, Role.VIEWER)
    with pytest.raises(auth.Forbidden, match="needs the operator role; you are a viewer"):
        auth.require_role(Role.VIEWER, Role.OPERATOR)


def _logger_with(redactor: auth.RedactSecrets) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test-redaction-{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    auth.install_redaction(redactor, logger)
    return logger, stream


def test_registered_secrets_and_any_api_token_never_reach_a_log() -> None:
    key = "corral-ek1-c2VjcmV0LWtleS1tYXRlcmlhbA"
    token = auth.issue_token().token
    redactor = auth.RedactSecrets([key])
    redactor.add("hunter2-but-longer")
    logger, stream = _logger_with(redactor)
    logger.warning("license key %s and password %s", key, "hunter2-but-longer")
    logger.info("request with %s", token)
    logger.info("plain %d", 42)
    out = stream.getvalue()
    assert key not in out
    assert "hunter2-but-longer" not in out
    assert token not in out
    assert out.count(auth.REDACTED) == 3
    assert "plain 42" in out


def test_secrets_in_exception_tracebacks_are_redacted_too() -> None:
    redactor = auth.RedactSecrets(["super-secret-password"])
    logger, stream = _logger_with(redactor)
    try:
        raise ValueError("connect failed for postgresql://corral:super-secret-password@db/x")
    except ValueError:
        logger.exception("database down")
    assert "super-secret-password" not in stream.getvalue()
    assert "postgresql://corral:[REDACTED]@db/x" in stream.getvalue()


def test_very_short_values_are_not_treated_as_secrets() -> None:
    redactor = auth.RedactSecrets(["abc"])
    assert redactor.redact("abc def") == "abc def"
