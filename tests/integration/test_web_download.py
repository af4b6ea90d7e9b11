"""The Download button end to end: the Updates page queues ``corral.download`` for a real Celery worker
(through a real Redis), which downloads the release from the reference update server over HTTPS on
127.0.0.1, verifies and stages it; the page's progress endpoint follows it until "Update to X" appears.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.conftest import Tls, UpdateServer, Vendor
from tests.integration.test_channel_check import make_site, publish, sessions_of
from tests.integration.test_download import start_worker
from tests.support.redis_server import RedisServer
from tests.support.service_stack import wait_for
from tests.unit.test_web import HttpsClient, bearer, csrf_from, login
from updater.services.accounts import auth
from updater.services.channel.check import check_channel
from updater.store import queries as q
from updater.store.db import transaction
from updater.store.models import Outcome, Role
from updater.web import create_app

MIB = 1024 * 1024


def test_the_download_button_stages_the_release_through_the_worker_and_offers_the_update(
    make_server: Callable[..., UpdateServer], vendor: Vendor, tls: Tls, redis: RedisServer, tmp_path: Path
) -> None:
    server = make_server(channels=("stable",))
    bundle = vendor.build_bundle("1.1.0", image=vendor.image("web-download-image-1.1.0.tar", 2 * MIB))
    publish(server, bundle)
    config = make_site(
        tmp_path / "site", server, vendor, tls, "lic-web-download", extra=("--redis-url", redis.url)
    )
    sessions = sessions_of(config)
    with transaction(sessions) as db:
        auth.create_user(db, "olga", "correct horse battery staple", Role.OPERATOR)
        token = auth.create_token(db, q.get_user(db, "olga"), "test")
    check_channel(config, sessions, actor="beat")
    worker = start_worker(config, tmp_path / "worker.log")
    app = create_app(config, engine=sessions.kw["bind"])
    app.test_client_class = HttpsClient
    try:
        client = app.test_client()
        login(client, "olga", "correct horse battery staple")
        page = client.get("/updates").get_data(as_text=True)
        assert "Download 1.1.0</button>" in page
        assert "Update to 1.1.0" not in page

        response = client.post("/updates/1.1.0/download", data={"csrf_token": csrf_from(client, "/updates")})
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/updates?queued=1.1.0&at=")
        queued = client.get(response.headers["Location"]).get_data(as_text=True)
        assert 'data-poll="/updates/1.1.0/download"' in queued

        def staged() -> dict[str, Any] | None:
            answer = client.get("/updates/1.1.0/download")
            body: dict[str, Any] | None = answer.get_json() if answer.status_code == 200 else None
            return body if body and body["state"] == "staged" else None

        done = wait_for(staged, 120, "release 1.1.0 staged", worker)
        assert done["active"] is False
        assert done["bytes_done"] == done["bytes_total"] == bundle.stat().st_size
        assert done["percent"] == 100.0
        page = client.get("/updates").get_data(as_text=True)
        assert "Update to 1.1.0" in page
        assert "Download 1.1.0" not in page

        api = client.post("/api/v1/releases/1.1.0/download", headers=bearer(token))
        assert api.status_code == 409
        assert api.get_json()["error"]["message"] == "release 1.1.0 is already downloaded and staged"
        release = client.get("/api/v1/releases/1.1.0", headers=bearer(token)).get_json()
        assert release["staged"] is True
        assert release["download"]["state"] == "staged"
        with transaction(sessions) as db:
            audit = [(e.actor, e.action, e.outcome) for e in reversed(q.list_audit(db))]
        assert ("olga", "release.download.request", Outcome.OK) in audit
        assert ("olga", "release.download", Outcome.OK) in audit  # the worker's download, in olga's name
        assert ("olga", "release.download.request", Outcome.REFUSED) in audit
    finally:
        worker.stop()
        sessions.kw["bind"].dispose()
