"""The login throttle every web worker process shares: the policy of
:class:`~updater.services.accounts.auth.LoginThrottle` (after ``max_failures`` failures within
``lockout_seconds``, per username and per client address, logins are refused until the oldest of them ages
out; a success clears its username) kept in Redis.

The web tier runs several gunicorn worker processes (``web_workers``); a throttle in one process's memory
would let a guesser spread attempts over them (and lose its count when a worker restarts). The counting is
the ``limits`` library's moving window over its Redis storage: the engine and storage Flask-Limiter is built
on, one Lua script per check, so two processes counting at once never lose a failure. Flask-Limiter itself
limits requests per route in the web adapter; this policy counts failed sign-ins in the service (the CLI and
any adapter get the same throttle) and forgets a username's failures when it signs in, which ``limits``'
``hit``/``test``/``clear`` express directly.

Keys are ``corral-login:…`` with the SHA-256 of the username or address, so a guesser cannot grow Redis
with long usernames. When Redis cannot be asked the login is refused (:class:`ThrottleUnavailable`, an
answer with ``Retry-After``): failing open would let guessing run unthrottled for as long as Redis is down.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from updater.config import ServiceConfig
from updater.services.accounts.auth import LoginThrottle, Throttle, Throttled

KEY_PREFIX = "corral-login"
IN_PROCESS = "memory://"
UNAVAILABLE_RETRY_SECONDS = 5.0
REDIS_TIMEOUT_SECONDS = 2.0  # a hung Redis refuses a login after this, never holds the worker thread


class ThrottleUnavailable(Throttled):
    """The shared throttle's store cannot be reached: the login is refused, to be tried again soon."""

    def __init__(self) -> None:
        super().__init__(UNAVAILABLE_RETRY_SECONDS)
        self.args = (
            "sign-in is unavailable: the login throttle's store (Redis) does not answer; "
            f"try again in {UNAVAILABLE_RETRY_SECONDS:g} s",
        )


def _limits_uri(url: str) -> str:
    # limits takes Redis sockets as redis+unix://; the service's redis_url may say unix:// (as redis-py does).
    return "redis+unix://" + url.removeprefix("unix://") if url.startswith("unix://") else url


class SharedLoginThrottle:
    """:class:`LoginThrottle`'s policy over a ``limits`` storage (``redis://…``; ``memory://`` for tests)."""

    def __init__(
        self,
        storage_url: str,
        *,
        max_failures: int,
        lockout_seconds: float,
        clock: Callable[[], float] = time.time,  # to turn the store's reset time into a Retry-After
    ) -> None:
        options: dict[str, float | str | bool] = {}
        if not storage_url.startswith("memory://"):
            options = {
                "key_prefix": KEY_PREFIX,
                "socket_timeout": REDIS_TIMEOUT_SECONDS,
                "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
            }
        self._storage = storage_from_string(_limits_uri(storage_url), wrap_exceptions=True, **options)
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._item = RateLimitItemPerSecond(max_failures, max(1, round(lockout_seconds)))
        self._clock = clock

    @staticmethod
    def _keys(username: str, source: str | None) -> list[str]:
        def digest(text: str) -> str:
            return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]

        return [f"user:{digest(username)}"] + ([f"ip:{digest(source)}"] if source else [])

    def check(self, username: str, source: str | None) -> None:
        """Raise :class:`Throttled` if this username or this address is locked out now."""
        try:
            for key in self._keys(username, source):
                if not self._limiter.test(self._item, KEY_PREFIX, key):
                    reset_at = self._limiter.get_window_stats(self._item, KEY_PREFIX, key).reset_time
                    raise Throttled(max(1.0, reset_at - self._clock()))
        except StorageError as error:
            raise ThrottleUnavailable() from error

    def failed(self, username: str, source: str | None) -> None:
        try:
            for key in self._keys(username, source):
                self._limiter.hit(self._item, KEY_PREFIX, key)
        except StorageError as error:
            raise ThrottleUnavailable() from error

    def succeeded(self, username: str) -> None:
        try:
            self._limiter.clear(self._item, KEY_PREFIX, self._keys(username, None)[0])
        except StorageError as error:
            raise ThrottleUnavailable() from error


def login_throttle(config: ServiceConfig) -> Throttle:
    """The throttle ``config`` asks for: ``login_throttle_url`` (empty: the service's Redis, ``redis_url``);
    ``memory://`` keeps it in this process, which config allows only with one web worker process."""
    url = config.login_throttle_url or config.redis_url
    if url == IN_PROCESS:
        return LoginThrottle(config.login_max_failures, float(config.login_lockout_seconds))
    return SharedLoginThrottle(
        url, max_failures=config.login_max_failures, lockout_seconds=float(config.login_lockout_seconds)
    )
