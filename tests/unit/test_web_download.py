"""The Download button and ``POST /api/v1/releases/<version>/download`` through Flask's test client.

Refusals (viewer, missing CSRF token, unknown release, already staged, one running, no task queue) change
nothing and are audited; the progress the Updates page and ``GET /api/v1/releases/<version>`` show is the
``release_downloads`` record written by the download service. A download through the real worker and the
reference update server is in tests/integration/test_web_download.py.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.unit.test_web import Site, bearer, csrf_from, login, make_site
from updater.cli.updater import main
from updater.store import queries as q
from updater.store.db import transaction
from updater.store.models import DownloadState, Outcome, ReleaseDownload, ReleaseSource

VERSION = "1.4.0"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    # A closed loopback port: the task queue is not reachable in the unit tier.
    made = make_site(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    _offered(made, VERSION)
    yield made
    made.app.extensions["corral"].engine.dispose()


def _offered(site: Site, version: str, *, staged: bool = False) -> None:
    """A release the channel check recorded (pulled, not downloaded yet unless ``staged``)."""
    path = site.home / "staging" / version
    if staged:
        path.mkdir(parents=True)
    with transaction(site.sessions) as db:
        q.add_release(
            db,
            version=version,
            channel="stable",
            release_date=date(2026, 11, 1),
            source=ReleaseSource.PULLED,
            staged_path=str(path) if staged else None,
        )


def _record(site: Site, version: str, state: DownloadState, done: int, total: int) -> None:
    with transaction(site.sessions) as db:
        release = q.find_release(db, version)
        assert release is not None
        db.add(
            ReleaseDownload(
                release_id=release.id,
                state=state,
                bytes_done=done,
                bytes_total=total,
                resumed_from=0,
                started_by="olga",
                message="downloading",
            )
        )


@pytest.fixture
def downloading(site: Site) -> Iterator[int]:
    """A download of VERSION in progress: its record, and its lock held as the download service holds it."""
    _record(site, VERSION, DownloadState.RUNNING, 3 * 1024 * 1024, 12 * 1024 * 1024)
    downloads_dir = site.app.extensions["corral"].config.downloads_dir
    downloads_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(downloads_dir / f"{VERSION}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, b"4242\n", 0)
    yield fd
    os.close(fd)


def _download_audit(site: Site) -> list[tuple[str, str, Outcome, str]]:
    return [
        (e.actor, e.target, e.outcome, e.detail)
        for e in site.audit()
        if e.action.startswith("release.download")
    ]


def _records(site: Site) -> int:
    with transaction(site.sessions) as db:
        return db.query(ReleaseDownload).count()


# --- the Updates page -------------------------------------------------------------------------------------


def test_an_offered_release_not_downloaded_yet_has_a_download_button_for_an_operator(site: Site) -> None:
    client = site.client()
    login(client, "olga")
    page = client.get("/updates").get_data(as_text=True)
    assert f'action="/updates/{VERSION}/download"' in page
    assert f"Download {VERSION}</button>" in page
    assert "not downloaded yet" in page
    assert "Update to" not in page
    assert 'src="/static/download.js"' in page
    assert "<script>" not in page  # CSP: no inline script


def test_a_viewer_sees_no_download_button_and_pressing_it_anyway_is_refused(site: Site) -> None:
    client = site.client()
    login(client, "vera")
    page = client.get("/updates").get_data(as_text=True)
    assert "not downloaded yet" in page
    assert f"/updates/{VERSION}/download" not in page
    token = csrf_from(client, "/updates")
    response = client.post(f"/updates/{VERSION}/download", data={"csrf_token": token})
    assert response.status_code == 403
    refused = [(e.actor, e.outcome) for e in site.audit() if e.action != "login"]
    assert refused == [("vera", Outcome.REFUSED)]
    assert _records(site) == 0


def test_a_download_without_its_csrf_token_is_refused(site: Site) -> None:
    client = site.client()
    login(client, "olga")
    response = client.post(f"/updates/{VERSION}/download")
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert _download_audit(site) == []
    assert _records(site) == 0


def test_a_download_of_an_unknown_release_is_404_and_audited(site: Site) -> None:
    client = site.client()
    login(client, "olga")
    token = csrf_from(client, "/updates")
    response = client.post("/updates/9.9.9/download", data={"csrf_token": token})
    assert response.status_code == 404
    assert "no release 9.9.9 is known: run a channel check first" in response.get_data(as_text=True)
    response = client.post("/updates/not-a-version/download", data={"csrf_token": token})
    assert response.status_code == 404
    assert [(a, t, o) for a, t, o, _ in _download_audit(site)] == [
        ("olga", "9.9.9", Outcome.REFUSED),
        ("olga", "not-a-version", Outcome.REFUSED),
    ]


def test_the_page_shows_a_running_download_with_its_progress_and_polls_it(
    site: Site, downloading: int
) -> None:
    client = site.client()
    login(client, "vera")
    page = client.get("/updates").get_data(as_text=True)
    assert f'data-poll="/updates/{VERSION}/download"' in page
    assert '<progress max="100" value="25.0">' in page
    assert "Downloading… 25.0 %" in page
    polled = client.get(f"/updates/{VERSION}/download", headers={"Accept": "application/json"})
    assert polled.status_code == 200
    body = polled.get_json()
    assert (body["state"], body["active"], body["percent"]) == ("running", True, 25.0)
    assert client.get("/updates/9.9.9/download").status_code == 404


def test_a_download_left_running_by_a_dead_worker_offers_the_button_again(site: Site) -> None:
    _record(site, VERSION, DownloadState.RUNNING, 1024, 4096)  # no process holds the lock
    client = site.client()
    login(client, "olga")
    page = client.get("/updates").get_data(as_text=True)
    assert "data-poll" not in page
    assert "stopped (its worker died): download again to resume" in page
    assert f"Download {VERSION}</button>" in page


def test_a_second_download_while_one_runs_is_409_naming_the_holder(site: Site, downloading: int) -> None:
    client = site.client()
    login(client, "olga")
    token = csrf_from(client, "/updates")
    response = client.post(f"/updates/{VERSION}/download", data={"csrf_token": token})
    assert response.status_code == 409
    assert f"release {VERSION} is already being downloaded (by pid 4242)" in response.get_data(as_text=True)
    api = site.client().post(f"/api/v1/releases/{VERSION}/download", headers=bearer(site.operator_token))
    assert api.status_code == 409
    assert "by pid 4242" in api.get_json()["error"]["message"]
    assert [o for _, _, o, _ in _download_audit(site)] == [Outcome.REFUSED, Outcome.REFUSED]


def test_a_staged_release_is_not_downloaded_again(site: Site) -> None:
    _offered(site, "1.5.0", staged=True)
    response = site.client().post("/api/v1/releases/1.5.0/download", headers=bearer(site.operator_token))
    assert response.status_code == 409
    assert response.get_json()["error"]["message"] == "release 1.5.0 is already downloaded and staged"


def test_without_the_task_queue_the_download_is_503_and_nothing_is_queued(site: Site) -> None:
    client = site.client()
    login(client, "olga")
    token = csrf_from(client, "/updates")
    response = client.post(f"/updates/{VERSION}/download", data={"csrf_token": token})
    assert response.status_code == 503
    assert "the task queue (Redis at redis://127.0.0.1:" in response.get_data(as_text=True)
    (entry,) = _download_audit(site)
    assert entry[:3] == ("olga", VERSION, Outcome.REFUSED)
    assert _records(site) == 0


# --- the API ----------------------------------------------------------------------------------------------


def test_the_api_refuses_a_viewer_and_an_unknown_release(site: Site) -> None:
    client = site.client()
    viewer = client.post(f"/api/v1/releases/{VERSION}/download", headers=bearer(site.viewer_token))
    assert viewer.status_code == 403
    unknown = client.post("/api/v1/releases/9.9.9/download", headers=bearer(site.operator_token))
    assert unknown.status_code == 404
    assert unknown.get_json()["error"]["message"] == "no release 9.9.9 is known: run a channel check first"
    assert client.post(f"/api/v1/releases/{VERSION}/download").status_code == 401
    assert _records(site) == 0


def test_the_release_answer_carries_its_download_progress(site: Site, downloading: int) -> None:
    client = site.client()
    _offered(site, "1.5.0")
    assert (
        client.get("/api/v1/releases/1.5.0", headers=bearer(site.viewer_token)).get_json()["download"] is None
    )
    body = client.get(f"/api/v1/releases/{VERSION}", headers=bearer(site.viewer_token)).get_json()
    download = body["download"]
    assert body["staged"] is False
    assert download["state"] == "running"
    assert download["active"] is True
    assert (download["bytes_done"], download["bytes_total"], download["percent"]) == (
        3 * 1024 * 1024,
        12 * 1024 * 1024,
        25.0,
    )
    assert download["started_by"] == "olga"


# --- the CLI ----------------------------------------------------------------------------------------------


def test_the_download_command_refuses_an_unknown_release_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "cli-home"
    assert main(["--home", str(home), "init", "--bind", "127.0.0.1:18443"]) == 0
    capsys.readouterr()
    code = main(["--home", str(home), "download", "9.9.9"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert "release 9.9.9 is not known here: run a channel check first" in err
    code = main(["--home", str(home), "download", "not-a-version"])
    assert code == 2
    assert "'not-a-version' is not a release version" in capsys.readouterr().err
