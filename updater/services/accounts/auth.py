"""Who may do what: passwords (argon2id), login throttling, API tokens, roles; secrets kept out of logs.

The pure parts (hashing, throttle policy, token format, role checks, redaction) need no database; the
functions at the end combine them with the store. Secrets (passwords, tokens, entitlement keys) are never
returned by anything but the function that creates them, and never logged: :class:`RedactSecrets` replaces
known secret values in every log record it sees.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.orm import Session

from updater.store import queries
from updater.store.models import Role, User, utcnow

USERNAME_PATTERN = re.compile(r"[a-z][a-z0-9._-]{0,63}")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; bound it so a login cannot be made arbitrarily slow
TOKEN_PREFIX = "crl_"  # noqa: S105 (a format prefix, not a secret)
_TOKEN_PATTERN = re.compile(r"crl_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")

# argon2id, RFC 9106's second recommended option (64 MiB, 3 passes): memory-hard for a guessing attacker,
# ≈ 0.1 s for one login on this class of machine.
_HASHER = PasswordHasher(
    time_cost=3, memory_cost=64 * 1024, parallelism=4, hash_len=32, salt_len=16, type=Type.ID
)


class AuthError(Exception):
    """Base of authentication and authorisation refusals; the message is safe to show to the caller."""


class InvalidCredentials(AuthError):
    def __init__(self) -> None:
        # One message for unknown user, wrong password and disabled account: no account enumeration.
        super().__init__("invalid username or password")


class Throttled(AuthError):
    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many failed logins; try again in {max(1, round(retry_after))} s")


class InvalidToken(AuthError):
    def __init__(self) -> None:
        super().__init__("invalid or revoked API token")


class Forbidden(AuthError):
    def __init__(self, role: Role, needed: Role) -> None:
        super().__init__(f"this needs the {needed} role; you are a {role}")


class BadInput(ValueError):
    """An invalid username, password or role; the message says which rule it broke."""


# --- passwords ---------------------------------------------------------------------------------------------


def validate_username(username: str) -> str:
    if not USERNAME_PATTERN.fullmatch(username):
        raise BadInput(
            "a username is 1-64 characters: a lower-case letter, then lower-case letters, digits,"
            " '.', '_' or '-'"
        )
    return username


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadInput(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise BadInput(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    return password


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise BadInput(f"role must be one of {', '.join(r.value for r in Role)}, got {text!r}") from None


def hash_password(password: str) -> str:
    return _HASHER.hash(validate_password(password))


def verify_password(password_hash: str, password: str) -> bool:
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _HASHER.check_needs_rehash(password_hash)


# A hash to verify against when the user does not exist, so that both cases cost one argon2 run.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def generate_password() -> str:
    """A password for a new account, shown once: 24 URL-safe characters (144 bits)."""
    return secrets.token_urlsafe(18)


# --- login throttling ---------------------------------------------------------------------------------------


class Throttle(Protocol):
    """What :func:`authenticate` asks of a login throttle: :class:`LoginThrottle` (one process's memory) or
    :class:`~updater.services.accounts.throttle.SharedLoginThrottle` (Redis, shared by every web worker)."""

    def check(self, username: str, source: str | None) -> None: ...
    def failed(self, username: str, source: str | None) -> None: ...
    def succeeded(self, username: str) -> None: ...


@dataclass
class LoginThrottle:
    """Refuses logins for a while after ``max_failures`` recent failures, per username and per client address.

    In this process's memory: for the CLI, the tests and a web tier of one worker process
    (``login_throttle_url = "memory://"``); several worker processes share
    :class:`~updater.services.accounts.throttle.SharedLoginThrottle`, the same policy in Redis. A success for
    a username clears that username.
    """

    max_failures: int = 5
    lockout_seconds: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, list[float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _keys(self, username: str, source: str | None) -> list[str]:
        return [f"user:{username}"] + ([f"ip:{source}"] if source else [])

    def check(self, username: str, source: str | None) -> None:
        """Raise :class:`Throttled` if this username or this address is locked out now."""
        now = self.clock()
        with self._lock:
            for key in self._keys(username, source):
                recent = [t for t in self._failures.get(key, []) if now - t < self.lockout_seconds]
                self._failures[key] = recent
                if len(recent) >= self.max_failures:
                    raise Throttled(self.lockout_seconds - (now - recent[-self.max_failures]))

    def failed(self, username: str, source: str | None) -> None:
        now = self.clock()
        with self._lock:
            for key in self._keys(username, source):
                self._failures.setdefault(key, []).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{username}", None)


# --- API tokens --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    token_id: str
    secret_hash: str
    token: str = field(repr=False)  # the only copy of the secret: show it once, store only secret_hash


def _secret_hash(secret: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough (no guessing attack to slow down).
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_token() -> IssuedToken:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return IssuedToken(token_id, _secret_hash(secret), f"{TOKEN_PREFIX}{token_id}_{secret}")


def parse_token(token: str) -> tuple[str, str]:
    """``(token_id, secret)`` of a well-formed token, else :class:`InvalidToken`."""
    match = _TOKEN_PATTERN.fullmatch(token)
    if match is None:
        raise InvalidToken()
    return match.group(1), match.group(2)


def token_matches(secret_hash: str, secret: str) -> bool:
    return hmac.compare_digest(secret_hash, _secret_hash(secret))


# --- roles -------------------------------------------------------------------------------------------------

_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1}


def has_role(role: Role, needed: Role) -> bool:
    return _RANK[role] >= _RANK[needed]


def require_role(role: Role, needed: Role) -> None:
    if not has_role(role, needed):
        raise Forbidden(role, needed)


# --- secrets in logs ---------------------------------------------------------------------------------------

REDACTED = "[REDACTED]"


class RedactSecrets(logging.Filter):
    """Replaces every registered secret value (and every API token) in a record's rendered message.

    Install it on the handlers (``install_redaction``) so records from any logger pass through it.
    """

    def __init__(self, secrets_: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        for value in secrets_:
            self.add(value)

    def add(self, value: str) -> None:
        if len(value) >= 6:  # shorter values would redact ordinary words
            with self._lock:
                self._secrets.add(value)

    def redact(self, text: str) -> str:
        with self._lock:
            values = sorted(self._secrets, key=len, reverse=True)
        for value in values:
            text = text.replace(value, REDACTED)
        return _TOKEN_PATTERN.sub(REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


def install_redaction(redactor: RedactSecrets, logger: logging.Logger | None = None) -> None:
    """Put ``redactor`` on every handler of ``logger`` (default: the root logger)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if redactor not in handler.filters:
            handler.addFilter(redactor)


# --- with the store ----------------------------------------------------------------------------------------


def create_user(session: Session, username: str, password: str, role: Role) -> User:
    return queries.add_user(session, validate_username(username), hash_password(password), role)


def authenticate(
    session: Session, throttle: Throttle, username: str, password: str, source: str | None
) -> User:
    """The user with these credentials, or :class:`InvalidCredentials` / :class:`Throttled`."""
    throttle.check(username, source)
    user = queries.find_user(session, username) if USERNAME_PATTERN.fullmatch(username) else None
    valid = verify_password(user.password_hash if user else _DUMMY_HASH, password)
    if user is None or not valid or user.disabled:
        throttle.failed(username, source)
        raise InvalidCredentials()
    throttle.succeeded(username)
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def create_token(session: Session, user: User, name: str, *, valid_days: int | None = None) -> str:
    """A new API token for ``user``; the returned text is the only time the token exists in clear."""
    if not 1 <= len(name) <= 64:
        raise BadInput("a token name has 1-64 characters")
    if valid_days is not None and valid_days < 1:
        raise BadInput("a token is valid for at least 1 day")
    issued = issue_token()
    record = queries.add_token(
        session, user, token_id=issued.token_id, secret_hash=issued.secret_hash, name=name
    )
    if valid_days is not None:
        record.expires_at = utcnow() + timedelta(days=valid_days)
    return issued.token


def user_for_token(session: Session, token: str) -> User:
    token_id, secret = parse_token(token)
    record = queries.find_token(session, token_id)
    if record is None:
        # Same work as a hit, so timing does not tell which token ids exist.
        token_matches(_secret_hash(""), secret)
        raise InvalidToken()
    expired = record.expires_at is not None and record.expires_at <= utcnow()
    if not token_matches(record.secret_hash, secret) or record.revoked or expired or record.user.disabled:
        raise InvalidToken()
    return record.user


def set_disabled(session: Session, username: str, disabled: bool) -> User:
    """Disable (or re-enable) an account: its sessions and tokens stop working at their next request."""
    user = queries.get_user(session, username)
    user.disabled = disabled
    return user
