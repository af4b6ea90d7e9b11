"""The shared login throttle keeps :class:`LoginThrottle`'s policy (per username, per address, a success
clears its username, a Retry-After), refuses sign-in when its store does not answer, and the configuration
refuses a per-process throttle for a web tier of several processes. The same throttle over a real Redis,
shared by two apps and two processes, is in tests/integration/test_login_throttle_shared.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.net import free_port
from updater.config import ConfigError, ServiceConfig
from updater.services.accounts.auth import LoginThrottle, Throttled
from updater.services.accounts.throttle import (
    SharedLoginThrottle,
    ThrottleUnavailable,
    login_throttle,
)


def shared(max_failures: int = 3) -> SharedLoginThrottle:
    return SharedLoginThrottle("memory://", max_failures=max_failures, lockout_seconds=60)


def test_a_username_is_locked_after_its_failures_from_any_address() -> None:
    throttle = shared()
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        throttle.check("alice", address)
        throttle.failed("alice", address)
    with pytest.raises(Throttled) as refused:
        throttle.check("alice", "10.0.0.9")
    assert 1 <= refused.value.retry_after <= 60
    throttle.check("bob", "10.0.0.9")


def test_one_address_guessing_many_usernames_is_locked() -> None:
    throttle = shared()
    for name in ("a", "b", "c"):
        throttle.failed(name, "10.0.0.1")
    with pytest.raises(Throttled):
        throttle.check("d", "10.0.0.1")
    throttle.check("d", "10.0.0.2")


def test_a_success_clears_the_usernames_failures() -> None:
    throttle = shared(max_failures=2)
    throttle.failed("alice", None)
    throttle.succeeded("alice")
    throttle.failed("alice", None)
    throttle.check("alice", None)


def test_a_long_username_is_stored_under_a_fixed_size_key() -> None:
    throttle = shared(max_failures=1)
    throttle.failed("x" * 100_000, None)
    with pytest.raises(Throttled):
        throttle.check("x" * 100_000, None)
    assert all(len(key) < 64 for key in throttle._keys("x" * 100_000, "::1"))


def test_sign_in_is_refused_while_redis_does_not_answer() -> None:
    throttle = SharedLoginThrottle(f"redis://127.0.0.1:{free_port()}/0", max_failures=3, lockout_seconds=60)
    with pytest.raises(ThrottleUnavailable, match="does not answer") as refused:
        throttle.check("alice", "::1")
    assert refused.value.retry_after > 0
    with pytest.raises(ThrottleUnavailable):
        throttle.failed("alice", "::1")


def test_the_configuration_chooses_the_throttles_store(tmp_path: Path) -> None:
    home = tmp_path
    default = ServiceConfig(home=home, redis_url="redis://127.0.0.1:1/0")
    assert isinstance(login_throttle(default), SharedLoginThrottle)
    one_process = ServiceConfig(home=home, login_throttle_url="memory://", web_workers=1)
    assert isinstance(login_throttle(one_process), LoginThrottle)


def test_a_per_process_throttle_is_refused_for_several_web_workers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="each worker's allowance"):
        ServiceConfig(home=tmp_path, login_throttle_url="memory://", web_workers=2)
    with pytest.raises(ConfigError, match="login_throttle_url must be"):
        ServiceConfig(home=tmp_path, login_throttle_url="memcached://x")
    with pytest.raises(ConfigError, match="web_workers must be"):
        ServiceConfig(home=tmp_path, web_workers=0)
