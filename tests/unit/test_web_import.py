"""Importing a bundle: the import service on real signed (and encrypted) bundles and a real SQLite store, and
the Import page and ``POST /api/v1/releases`` through Flask's test client.

The worker's part (``corral.stage_upload``) is the service function :func:`imports.stage`, called here
directly; the integration tier runs it through Redis and a real Celery worker behind gunicorn.
"""

from __future__ import annotations

import fcntl
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port
from tests.unit import bundle_kit as kit_
from tests.unit.test_web import bearer, csrf_from, login, make_site
from updater.cli.updater import main
from updater.config import save_settings, write_secret_key
from updater.services.bundles import imports
from updater.services.vendor import keys as vendor
from updater.services.vendor import writer
from updater.store import queries as q
from updater.store.db import transaction
from updater.store.models import Outcome

UPLOAD_LIMIT = 1024 * 1024
PASSED_CHECKS = [
    "keyring",
    "signature-threshold",
    "manifest",
    "license",
    "entitlement-key",
    "license-entitlement",
    "payload",
    "staged",
]


class Installation:
    """A site whose home has the vendor trust, a license and its entitlement key, as `init` writes them."""

    def __init__(self, tmp_path: Path) -> None:
        self.kit = kit_.make_kit(tmp_path / "vendor-side")
        self.license = kit_.issue(self.kit, nodes=5)
        # A closed loopback port: the task queue is not reachable in the unit tier.
        (tmp_path / "home").mkdir()
        self.site = make_site(
            tmp_path / "home",
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            max_upload_bytes=UPLOAD_LIMIT,
        )
        trust = self.site.home / "trust"
        trust.mkdir()
        shutil.copy(self.kit.vendor.trust_root, trust / "trust-root.json")
        shutil.copy(self.kit.vendor.keyring, trust / "keyring.json")
        shutil.copy(self.license.license_path, trust / "license.json")
        shutil.copy(self.license.key_path, trust / "entitlement-key")

    @property
    def config(self) -> Any:
        return self.site.app.extensions["corral"].config

    def bundle(self, version: str = "1.3.0", **options: Any) -> Path:
        return kit_.build_bundle(self.kit, version, **options)

    def spooled(self, source: Path) -> Path:
        """An upload as the web app spools it: a private file under home/imports."""
        path, handle = imports.spool_file(self.config)
        with handle, source.open("rb") as data:
            shutil.copyfileobj(data, handle)
        return path

    def imported(self, source: Path, *, actor: str = "olga") -> imports.ImportStatus:
        """What an upload followed by the worker's task does."""
        ticket = imports.begin(self.config, self.spooled(source), actor=actor, filename=source.name)
        ticket.hand_over()
        return imports.stage(self.config, self.site.sessions, ticket.import_id)

    def tampered(self, version: str = "1.3.0") -> Path:
        """A signed bundle with one byte of its node image flipped."""
        bundle = self.bundle(version)
        data = bytearray(bundle.read_bytes())
        data[data.index(bytes([10]) * 3000) + 100] ^= 0xFF  # inside usr/lib/corral/file010
        tampered = self.kit.root / f"tampered-{version}.bundle"
        tampered.write_bytes(bytes(data))
        return tampered

    def leftovers(self) -> list[str]:
        """Files an import could leave behind: spooled uploads, bundles, the lock, staging temporaries."""
        found = [p.name for p in (self.site.home / "imports").glob("*") if p.suffix != ".json"]
        found += [p.name for p in (self.site.home / "imports").glob("lock.json")]
        staging = self.site.home / "staging"
        found += [p.name for p in staging.glob(".staging-*")] if staging.exists() else []
        return sorted(found)

    def staged(self) -> list[str]:
        staging = self.site.home / "staging"
        return sorted(p.name for p in staging.iterdir()) if staging.exists() else []

    def releases(self) -> dict[str, tuple[bool, list[tuple[str, bool]]]]:
        with transaction(self.site.sessions) as db:
            return {
                r.version: (r.staged_path is not None, [(c.name, c.passed) for c in r.checks])
                for r in q.list_releases(db)
            }


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    made = Installation(tmp_path)
    yield made
    made.site.app.extensions["corral"].engine.dispose()


# --- the import service -------------------------------------------------------------------------------------


def test_a_good_bundle_is_verified_staged_and_recorded_with_every_check(inst: Installation) -> None:
    status = inst.imported(inst.bundle("1.3.0"))
    assert (status.state, status.version, status.done) == ("staged", "1.3.0", True)
    assert [c.name for c in status.checks] == PASSED_CHECKS
    assert all(c.passed and c.detail for c in status.checks)
    assert inst.releases() == {"1.3.0": (True, [(name, True) for name in PASSED_CHECKS])}
    assert inst.staged() == ["1.3.0"]
    assert (inst.site.home / "staging" / "1.3.0" / "image.tar").is_file()
    assert inst.leftovers() == []
    with transaction(inst.site.sessions) as db:
        release = q.find_release(db, "1.3.0")
        assert release is not None
        assert "Fixes and improvements." in release.notes
    entry = inst.site.audit()[-1]
    assert (entry.actor, entry.action, entry.target, entry.outcome) == (
        "olga",
        "release.import",
        "1.3.0",
        Outcome.OK,
    )


def test_a_bundle_encrypted_to_the_license_is_decrypted_with_the_installed_key(inst: Installation) -> None:
    encrypted = inst.kit.root / "corral-1.3.0.bundle.enc"
    writer.encrypt_file(
        inst.bundle("1.3.0"),
        encrypted,
        license_id=inst.license.license.license_id,
        entitlement_key=inst.license.key,
    )
    status = inst.imported(encrypted)
    assert status.state == "staged"
    assert status.checks[0].name == "decryption"
    assert inst.license.license.license_id in status.checks[0].detail
    assert inst.staged() == ["1.3.0"]


def test_a_tampered_bundle_keeps_its_failed_check_on_record_and_stages_nothing(inst: Installation) -> None:
    status = inst.imported(inst.tampered("1.3.0"))
    assert status.state == "failed"
    assert [(c.name, c.passed) for c in status.checks] == [("payload-hash-mismatch", False)]
    assert "payload-hash-mismatch" in status.message
    assert inst.releases() == {}, "a failed import is no release: it reserves no version"
    with transaction(inst.site.sessions) as db:
        kept = [(f.import_id, f.claimed_version, f.failed_check) for f in q.list_failed_imports(db)]
    assert kept == [(status.import_id, "1.3.0", "payload-hash-mismatch")]
    assert inst.staged() == []
    assert inst.leftovers() == []
    assert inst.site.audit()[-1].outcome is Outcome.FAILED


def test_a_truncated_bundle_fails_its_check_and_leaves_nothing(inst: Installation) -> None:
    bundle = inst.bundle("1.3.0")
    bundle.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    status = inst.imported(bundle)
    assert status.state == "failed"
    assert status.checks[0].name == "bundle-truncated"
    assert inst.staged() == []
    assert inst.leftovers() == []


def test_a_good_import_after_a_failed_one_replaces_the_failed_checks(inst: Installation) -> None:
    assert inst.imported(inst.tampered("1.3.0")).state == "failed"
    assert inst.imported(inst.bundle("1.3.0")).state == "staged"
    assert inst.releases() == {"1.3.0": (True, [(name, True) for name in PASSED_CHECKS])}


def test_the_same_release_imported_twice_is_refused_and_the_staged_one_kept(inst: Installation) -> None:
    bundle = inst.bundle("1.3.0")
    assert inst.imported(bundle).state == "staged"
    again = inst.imported(bundle)
    assert again.state == "failed"
    assert again.checks[0].name == "already-staged"
    assert inst.releases()["1.3.0"][0] is True
    assert inst.staged() == ["1.3.0"]
    assert inst.leftovers() == []


def test_a_file_that_is_not_a_bundle_is_refused_at_once(inst: Installation) -> None:
    for content, reason in [
        (b"", "the uploaded file is empty"),
        (b"\x1f\x8b" + b"x" * 600, "not a Corral bundle"),
        (b"hello world\n" * 100, "not a Corral bundle"),
    ]:
        upload = inst.site.home / "not-a-bundle.txt"
        upload.write_bytes(content)
        with pytest.raises(imports.ImportRefused, match=reason):
            imports.begin(inst.config, inst.spooled(upload), actor="olga", filename="x.txt")
    assert inst.leftovers() == []
    assert imports.lock_holder(inst.config) is None


def test_an_installation_without_a_license_refuses_to_stage_with_the_reason(inst: Installation) -> None:
    (inst.site.home / "trust" / "license.json").unlink()
    status = inst.imported(inst.bundle("1.3.0"))
    assert status.state == "failed"
    assert "lacks license.json" in status.message
    assert inst.staged() == []
    assert inst.leftovers() == []


def test_a_second_import_while_one_runs_is_refused_naming_the_holder(inst: Installation) -> None:
    first = imports.begin(
        inst.config, inst.spooled(inst.bundle("1.3.0")), actor="olga", filename="corral-1.3.0.bundle"
    )
    second_upload = inst.spooled(inst.bundle("1.4.0", upgrade_from=">=1.2.0"))
    with pytest.raises(imports.ImportConflict) as uploading:
        imports.begin(inst.config, second_upload, actor="vera", filename="corral-1.4.0.bundle")
    assert "corral-1.3.0.bundle" in uploading.value.holder
    assert "by olga since" in uploading.value.holder
    assert not second_upload.exists()
    first.hand_over()  # queued for the worker: still held
    with pytest.raises(imports.ImportConflict, match="queued"):
        imports.begin(inst.config, inst.spooled(inst.bundle("1.4.0")), actor="vera", filename="b")
    assert imports.stage(inst.config, inst.site.sessions, first.import_id).state == "staged"
    assert imports.lock_holder(inst.config) is None
    assert inst.imported(inst.bundle("1.4.0", upgrade_from=">=1.2.0")).state == "staged"


def test_the_lock_file_appears_whole_and_flocked_and_a_taken_one_is_left_alone(tmp_path: Path) -> None:
    """A second import reads the holder as soon as the lock's name exists: it must never see it empty (it once
    reported "import ? of '?'") nor unflocked (it would judge it stale and remove it)."""
    path = tmp_path / imports.LOCK_NAME
    holder = {
        "import_id": "imp-1",
        "actor": "olga",
        "filename": "a.bundle",
        "since": "now",
        "phase": "uploaded",
    }
    handle = imports._create_lock(path, holder)
    try:
        assert json.loads(path.read_text()) == holder
        with path.open("rb") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FileExistsError):
            imports._create_lock(path, {**holder, "import_id": "imp-2"})
        assert json.loads(path.read_text()) == holder
        assert sorted(p.name for p in tmp_path.iterdir()) == [imports.LOCK_NAME]  # no private copy left
    finally:
        handle.close()


def test_a_lock_left_by_a_dead_process_is_taken_over_and_its_import_marked_abandoned(
    inst: Installation,
) -> None:
    dead = imports.begin(inst.config, inst.spooled(inst.bundle("1.3.0")), actor="olga", filename="a")
    dead._close()  # the process died mid-upload: its flock is gone, the lock file stays
    status = inst.imported(inst.bundle("1.3.0"), actor="vera")
    assert status.state == "staged"
    abandoned = imports.read_status(inst.config, dead.import_id)
    assert abandoned.state == "failed"
    assert "abandoned" in abandoned.message
    assert not imports.spool_path(inst.config, dead.import_id).exists()


def test_a_task_for_an_import_that_lost_its_lock_stages_nothing(inst: Installation) -> None:
    ticket = imports.begin(inst.config, inst.spooled(inst.bundle("1.3.0")), actor="olga", filename="a")
    ticket.hand_over()
    (inst.site.home / "imports" / "lock.json").unlink()  # taken over after the queue grace period
    status = imports.stage(inst.config, inst.site.sessions, ticket.import_id)
    assert status.state == "failed"
    assert "no longer holds the import lock" in status.message
    assert inst.staged() == []
    assert inst.leftovers() == []


def test_import_ids_from_urls_never_name_another_file(inst: Installation) -> None:
    for bad in ["../secret_key", "imp-../../x", "imp-a/b", "x" * 100]:
        with pytest.raises(imports.ImportRefused, match="no import"):
            imports.read_status(inst.config, bad)


# --- the Import page and the API ----------------------------------------------------------------------------


def _upload(client: Any, path: str, content: bytes, name: str = "corral.bundle", **extra: Any) -> Any:
    data = {"bundle": (io.BytesIO(content), name), **extra}
    return client.post(path, data=data, content_type="multipart/form-data", **extra.pop("_kw", {}))


def test_the_import_page_offers_the_upload_form_to_operators_only(inst: Installation) -> None:
    operator = inst.site.client()
    login(operator, "olga")
    page = operator.get("/import").get_data(as_text=True)
    assert 'id="import-form"' in page
    assert 'enctype="multipart/form-data"' in page
    assert "import.js" in page
    assert 'href="/import"' in page
    assert 'href="/updates"' in page
    viewer = inst.site.client()
    login(viewer, "vera")
    assert 'id="import-form"' not in viewer.get("/import").get_data(as_text=True)


def test_an_upload_through_the_page_is_spooled_under_the_home_and_handed_to_the_queue(
    inst: Installation,
) -> None:
    client = inst.site.client()
    login(client, "olga")
    token = csrf_from(client, "/import")
    response = client.post(
        "/import",
        data={"csrf_token": token, "bundle": (io.BytesIO(inst.bundle().read_bytes()), "corral-1.3.0.bundle")},
        content_type="multipart/form-data",
        headers={"Accept": "application/json"},
    )
    # The unit tier has no Redis: the hand-over is refused, and everything is undone.
    assert response.status_code == 503
    assert "task queue" in response.get_json()["error"]["message"]
    assert inst.leftovers() == []
    assert imports.lock_holder(inst.config) is None
    entry = inst.site.audit()[-1]
    assert (entry.action, entry.target, entry.outcome) == (
        "release.import",
        "corral-1.3.0.bundle",
        Outcome.REFUSED,
    )


def test_a_non_bundle_upload_is_refused_with_the_reason_and_leaves_nothing(inst: Installation) -> None:
    api = inst.site.client()
    response = api.post(
        "/api/v1/releases",
        data={"bundle": (io.BytesIO(b"just some text\n" * 200), "notes.txt")},
        content_type="multipart/form-data",
        headers=bearer(inst.site.operator_token),
    )
    assert response.status_code == 400
    assert "not a Corral bundle" in response.get_json()["error"]["message"]
    missing = api.post(
        "/api/v1/releases",
        data={"other": "x"},
        content_type="multipart/form-data",
        headers=bearer(inst.site.operator_token),
    )
    assert missing.status_code == 400
    assert "form field 'bundle'" in missing.get_json()["error"]["message"]
    assert inst.leftovers() == []
    assert [e.outcome for e in inst.site.audit()[-2:]] == [Outcome.REFUSED, Outcome.REFUSED]


def test_an_upload_while_an_import_runs_gets_409_naming_the_holder(inst: Installation) -> None:
    holder = imports.begin(
        inst.config, inst.spooled(inst.bundle("1.3.0")), actor="olga", filename="first.bundle"
    )
    try:
        response = inst.site.client().post(
            "/api/v1/releases",
            data={"bundle": (io.BytesIO(inst.bundle("1.3.0").read_bytes()), "second.bundle")},
            content_type="multipart/form-data",
            headers=bearer(inst.site.operator_token),
        )
        assert response.status_code == 409
        message = response.get_json()["error"]["message"]
        assert "first.bundle" in message
        assert "olga" in message
        assert "since" in message
        page = inst.site.client()
        login(page, "vera")
        assert "An import is running: import imp-" in page.get("/import").get_data(as_text=True)
    finally:
        holder.cancel("test over")
    assert inst.leftovers() == []


def test_a_truncated_upload_is_refused_and_its_spool_file_removed(inst: Installation) -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="bundle"; filename="c.bundle"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + inst.bundle().read_bytes()[:200_000]
    )
    response = inst.site.client().post(
        "/api/v1/releases",
        input_stream=io.BytesIO(body),
        content_type="multipart/form-data; boundary=XyZ",
        headers={**bearer(inst.site.operator_token), "Content-Length": str(len(body) + 50_000)},
    )
    assert response.status_code == 400
    message = response.get_json()["error"]["message"]
    assert message.startswith("the upload was cut short: the body ended inside the file after "), message
    assert re.search(r"after \d+ bytes \(the request announced \d+\)", message), message
    assert "nothing was kept" in message
    assert inst.leftovers() == []
    assert inst.releases() == {}


def test_an_oversized_upload_is_refused_with_413_before_it_is_spooled(inst: Installation) -> None:
    big = inst.bundle().read_bytes() + b"\0" * UPLOAD_LIMIT
    response = inst.site.client().post(
        "/api/v1/releases",
        data={"bundle": (io.BytesIO(big), "big.bundle")},
        content_type="multipart/form-data",
        headers=bearer(inst.site.operator_token),
    )
    assert response.status_code == 413
    assert inst.leftovers() == []


def test_a_viewer_or_a_form_without_csrf_cannot_import_and_nothing_is_kept(inst: Installation) -> None:
    content = inst.bundle().read_bytes()
    viewer = inst.site.client()
    login(viewer, "vera")
    token = csrf_from(viewer, "/import")
    refused = viewer.post(
        "/import",
        data={"csrf_token": token, "bundle": (io.BytesIO(content), "c.bundle")},
        content_type="multipart/form-data",
    )
    assert refused.status_code == 403
    operator = inst.site.client()
    login(operator, "olga")
    no_csrf = operator.post(
        "/import", data={"bundle": (io.BytesIO(content), "c.bundle")}, content_type="multipart/form-data"
    )
    assert no_csrf.status_code == 400
    assert "CSRF" in no_csrf.get_data(as_text=True)
    api = inst.site.client().post(
        "/api/v1/releases",
        data={"bundle": (io.BytesIO(content), "c.bundle")},
        content_type="multipart/form-data",
        headers=bearer(inst.site.viewer_token),
    )
    assert api.status_code == 403
    assert inst.leftovers() == []
    assert inst.releases() == {}


def test_the_result_page_and_the_api_show_each_check_of_an_import(inst: Installation) -> None:
    good = inst.imported(inst.bundle("1.3.0"))
    client = inst.site.client()
    login(client, "vera")
    page = client.get(f"/imports/{good.import_id}").get_data(as_text=True)
    assert "Release 1.3.0 verified and staged." in page
    for name in PASSED_CHECKS:
        assert f"<td>{name}</td>" in page
    assert "data-poll" not in page  # done: nothing to poll
    polled = client.get(f"/imports/{good.import_id}/status").get_json()
    assert polled["done"] is True
    assert polled["state"] == "staged"
    api = inst.site.client()
    status = api.get(f"/api/v1/imports/{good.import_id}", headers=bearer(inst.site.viewer_token)).get_json()
    assert [c["name"] for c in status["checks"]] == PASSED_CHECKS
    release = api.get("/api/v1/releases/1.3.0", headers=bearer(inst.site.viewer_token)).get_json()
    assert release["staged"] is True
    assert [c["name"] for c in release["checks"]] == PASSED_CHECKS
    assert api.get("/api/v1/releases/9.9.9", headers=bearer(inst.site.viewer_token)).status_code == 404
    assert api.get("/api/v1/imports/imp-nope", headers=bearer(inst.site.viewer_token)).status_code == 404
    assert client.get("/imports/..%2Fsecret_key").status_code == 404


def test_a_failed_import_page_names_the_failed_check(inst: Installation) -> None:
    bundle = inst.bundle("1.3.0")
    bundle.write_bytes(bundle.read_bytes()[:-5000])
    failed = inst.imported(bundle)
    client = inst.site.client()
    login(client, "vera")
    page = client.get(f"/imports/{failed.import_id}").get_data(as_text=True)
    assert "Refused: bundle-truncated" in page
    assert "FAILED" in page


def test_a_queued_import_page_polls_until_the_result_lands(inst: Installation) -> None:
    ticket = imports.begin(inst.config, inst.spooled(inst.bundle("1.3.0")), actor="olga", filename="q.bundle")
    ticket.hand_over()
    client = inst.site.client()
    login(client, "vera")
    page = client.get(f"/imports/{ticket.import_id}").get_data(as_text=True)
    assert "Waiting for the worker" in page
    assert f'data-poll="/imports/{ticket.import_id}/status"' in page
    assert client.get(f"/imports/{ticket.import_id}/status").get_json()["done"] is False
    imports.stage(inst.config, inst.site.sessions, ticket.import_id)
    assert client.get(f"/imports/{ticket.import_id}/status").get_json()["state"] == "staged"


def test_import_status_files_hold_no_secret(inst: Installation) -> None:
    status = inst.imported(inst.bundle("1.3.0"))
    text = (inst.site.home / "imports" / f"{status.import_id}.json").read_text()
    key_text = inst.license.key_path.read_text().strip()
    assert key_text not in text
    assert json.loads(text)["state"] == "staged"


# --- corral-updater import / check --------------------------------------------------------------------------


def _cli(inst: Installation, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    save_settings(inst.config)
    write_secret_key(inst.site.home, inst.config.secret_key)
    code = main(["--home", str(inst.site.home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_imports_with_the_same_service_and_prints_each_check(
    inst: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = inst.bundle("1.3.0")
    code, out, _ = _cli(inst, capsys, "import", str(bundle))
    assert code == 0
    for name in PASSED_CHECKS:
        assert f"ok     {name}: " in out
    assert "release 1.3.0 verified and staged" in out
    assert bundle.exists()  # the operator's file is left as it was
    assert inst.staged() == ["1.3.0"]
    assert inst.leftovers() == []
    code, out, _ = _cli(inst, capsys, "check")
    assert code == 0
    assert "installed release: not recorded yet" in out
    assert "1.3.0        stable     2026-11-01  staged" in out
    assert "newer release available: 1.3.0" in out
    assert inst.site.audit()[-1].actor.startswith("cli:")


def test_the_cli_refuses_a_bad_bundle_with_the_failed_check_and_exit_code_2(
    inst: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(inst, capsys, "import", str(inst.tampered("1.3.0")))
    assert code == 2
    assert "FAILED payload-hash-mismatch:" in out
    assert err.startswith("corral-updater: payload-hash-mismatch:")
    code, _, err = _cli(inst, capsys, "import", str(inst.site.home / "missing.bundle"))
    assert code == 2
    assert "not found" in err
    text = inst.site.home / "notes.txt"
    text.write_text("hello\n" * 200)
    code, _, err = _cli(inst, capsys, "import", str(text))
    assert code == 2
    assert "not a Corral bundle" in err
    assert inst.staged() == []
    assert inst.leftovers() == []
    code, out, _ = _cli(inst, capsys, "check", "--json")
    assert code == 0
    assert json.loads(out)["newer"] == []
    assert json.loads(out)["releases"] == []
    assert json.loads(out)["failed_imports"][0]["failed_check"] == "payload-hash-mismatch"


def test_the_cli_import_is_refused_while_another_import_runs(
    inst: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = imports.begin(
        inst.config, inst.spooled(inst.bundle("1.3.0")), actor="olga", filename="web.bundle"
    )
    try:
        code, _, err = _cli(inst, capsys, "import", str(inst.bundle("1.3.0")))
    finally:
        holder.cancel("test over")
    assert code == 2
    assert "another import is running" in err
    assert "web.bundle" in err
    assert inst.leftovers() == []


def test_a_chunked_upload_past_the_limit_is_refused_mid_body_and_its_spool_file_removed(
    inst: Installation,
) -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="bundle"; filename="c.bundle"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        + inst.bundle().read_bytes()
        + b"\0" * UPLOAD_LIMIT
        + b"\r\n--XyZ--\r\n"
    )
    response = inst.site.client().post(
        "/api/v1/releases",
        input_stream=io.BytesIO(body),
        content_type="multipart/form-data; boundary=XyZ",
        headers={**bearer(inst.site.operator_token), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # what gunicorn says of a chunked body
    )
    assert response.status_code == 413
    assert response.get_json()["error"]["message"] == (
        f"the request body is larger than the upload limit of {UPLOAD_LIMIT} bytes"
    )
    assert inst.leftovers() == []
    assert inst.releases() == {}


def test_a_delta_bundle_is_rebuilt_over_its_base_image_from_the_home(inst: Installation) -> None:
    base = kit_.make_artifacts(inst.kit.root / "base", "1.2.0")
    target = kit_.make_artifacts(inst.kit.root / "target", "1.3.0")
    delta = kit_.build_bundle(inst.kit, artifacts=target, delta_base=base.image, name="delta-1.3.0.bundle")
    missing = inst.imported(delta)
    assert missing.state == "failed"
    assert missing.checks[0].name == "delta-base-missing"
    assert inst.staged() == []
    bases = inst.site.home / "base-images"
    bases.mkdir()
    base_sha, _ = writer.file_digest(base.image)
    shutil.copy(base.image, bases / f"{base_sha}.tar")
    status = inst.imported(delta)
    assert status.state == "staged"
    assert "delta-base" in [c.name for c in status.checks]
    assert (inst.site.home / "staging" / "1.3.0" / "image.tar").read_bytes() == target.image.read_bytes()


def test_an_imported_bundle_carrying_a_rotated_keyring_leaves_the_installation_trusting_it(
    inst: Installation,
) -> None:
    installed = inst.site.home / "trust" / "keyring.json"
    before = installed.read_bytes()
    new_key, rotated = vendor.rotate_key(inst.kit.vendor_dir, now=kit_.NOW)
    old_key = next(k for k in rotated.role_keys("release") if k != new_key)
    bundle = inst.bundle(carry_keyring=True, keyids=[new_key, old_key])  # needs the rotated-in key

    status = inst.imported(bundle)

    assert status.state == "staged", status.message
    assert {c.name: c.detail for c in status.checks}["keyring"] == "trusted keyring version 2"
    assert before != rotated.envelope
    assert installed.read_bytes() == rotated.envelope
    assert sorted(p.name for p in installed.parent.iterdir()) == [
        "entitlement-key", "keyring.json", "license.json", "trust-root.json",
    ]  # fmt: skip


def test_an_imported_bundle_carrying_a_rotated_keyring_that_fails_a_check_leaves_the_keyring_alone(
    inst: Installation,
) -> None:
    installed = inst.site.home / "trust" / "keyring.json"
    before = installed.read_bytes()
    vendor.rotate_key(inst.kit.vendor_dir, now=kit_.NOW)
    bundle = inst.bundle(carry_keyring=True)
    data = bytearray(bundle.read_bytes())
    data[data.index(bytes([10]) * 3000) + 100] ^= 0xFF  # the keyring verifies; the payload hash does not

    bundle.write_bytes(bytes(data))
    status = inst.imported(bundle)

    assert status.state == "failed"
    assert [c.name for c in status.checks] == ["payload-hash-mismatch"]
    assert installed.read_bytes() == before
    assert inst.staged() == []
