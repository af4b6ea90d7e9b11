"""One probe operation: retries inside the deadline are counted; errors past it, or bad data, fail it."""

from __future__ import annotations

import pytest

from updater.probe.runner import DataError, Probe, run_operation


class VirtualTime:
    """A clock the test advances: the runner's only notion of time, so deadlines are exact."""

    def __init__(self) -> None:
        self.now = 100.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FlakyService:
    """Fails the first `failures` attempts (each taking `attempt_s`), then succeeds."""

    name = "flaky"

    def __init__(
        self,
        time: VirtualTime,
        failures: int,
        attempt_s: float = 0.1,
        bad_data: bool = False,
        overrun: bool = False,
    ) -> None:
        self.time, self.failures, self.attempt_s, self.bad_data = time, failures, attempt_s, bad_data
        self.overrun = overrun  # a client library that ignores the timeout it is given
        self.attempts = 0

    def setup(self) -> None:
        return None

    def attempt(self, timeout: float) -> None:
        self.attempts += 1
        self.time.now += self.attempt_s if self.overrun else min(self.attempt_s, timeout)
        if self.bad_data:
            raise DataError("read back differs")
        if self.attempts <= self.failures:
            raise ConnectionRefusedError("connection refused")

    def close(self) -> None:
        return None


def test_success_after_retries_counts_the_retries() -> None:
    t = VirtualTime()
    op = run_operation(
        FlakyService(t, failures=3), deadline_s=5.0, retry_delay_s=0.05, clock=t.clock, sleep=t.sleep
    )
    assert op.ok
    assert op.retries == 3
    assert op.latency == pytest.approx(4 * 0.1 + 3 * 0.05)


def test_no_success_by_the_deadline_is_a_failure_naming_the_last_error() -> None:
    t = VirtualTime()
    op = run_operation(
        FlakyService(t, failures=10_000), deadline_s=5.0, retry_delay_s=0.05, clock=t.clock, sleep=t.sleep
    )
    assert not op.ok
    assert "5 s deadline" in op.error
    assert "ConnectionRefusedError: connection refused" in op.error
    assert op.latency <= 5.0 + 0.1


def test_wrong_data_fails_at_once_without_retry() -> None:
    t = VirtualTime()
    service = FlakyService(t, failures=0, bad_data=True)
    op = run_operation(service, deadline_s=5.0, clock=t.clock, sleep=t.sleep)
    assert not op.ok
    assert service.attempts == 1
    assert op.error == "DataError: read back differs"


def test_a_success_that_arrives_after_the_deadline_is_still_a_failure() -> None:
    t = VirtualTime()
    service = FlakyService(t, failures=0, attempt_s=6.0, overrun=True)
    op = run_operation(service, deadline_s=5.0, clock=t.clock, sleep=t.sleep)
    assert not op.ok
    assert op.error == "succeeded after the 5 s deadline (6.00 s)"


def test_an_attempt_is_given_only_the_time_left_before_the_deadline() -> None:
    t = VirtualTime()
    op = run_operation(
        FlakyService(t, failures=0, attempt_s=6.0), deadline_s=5.0, clock=t.clock, sleep=t.sleep
    )
    assert op.ok
    assert op.latency == pytest.approx(5.0)


def test_probe_refuses_no_clients_and_duplicate_names() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Probe([])
    t = VirtualTime()
    with pytest.raises(ValueError, match="unique"):
        Probe([FlakyService(t, 0), FlakyService(t, 0)])
