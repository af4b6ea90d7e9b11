"""The job queue gives up as the web tier expects when Redis is down: no part of Celery retries longer."""

from __future__ import annotations

from pathlib import Path

from updater.config import ServiceConfig
from updater.services.jobs import RETRY_POLICY, celery_app


def test_the_result_backend_retries_no_longer_than_publishing_does(tmp_path: Path) -> None:
    # A web thread that sends a job also touches the result backend; Celery's own default there is 20
    # retries (about 19 s with Redis down), which held the thread long after publishing had given up.
    app = celery_app(ServiceConfig(home=tmp_path, redis_url="redis://127.0.0.1:1/0", secret_key=b"k" * 32))
    policy = app.backend.retry_policy
    assert policy["max_retries"] == RETRY_POLICY["max_retries"]
    assert policy["interval_max"] == RETRY_POLICY["interval_max"]
