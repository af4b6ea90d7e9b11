"""Importing a bundle for real: ``corral-updater web`` (gunicorn, HTTPS), Redis, and a ``corral-updater
worker`` process that runs ``corral.stage_upload``; the home is made by ``corral-updater init`` with the
vendor's trust root, keyring, a license and its entitlement key.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.redis_server import RedisServer
from tests.support.service_stack import Stack, running_stack, wait_for
from tests.unit import bundle_kit as kit_


def _inventory(path: Path) -> Path:
    hostvars = {f"node{i}": {"corral_address": f"10.99.0.{10 + i}"} for i in (1, 2, 3)}
    data = {
        "_meta": {"hostvars": hostvars},
        "all": {"children": ["nodes"]},
        "nodes": {"hosts": list(hostvars)},
    }
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def stack(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("web-import")
    kit = kit_.make_kit(root / "vendor-side")
    with running_stack(
        root,
        redis_url=redis.url,
        inventory=_inventory(root / "inventory.json"),
        kit=kit,
        license=kit_.issue(kit, nodes=5),
    ) as running:
        yield running


def test_two_concurrent_uploads_get_one_import_and_one_409_naming_the_holder(stack: Stack) -> None:
    # No worker yet: the winning import stays queued, so the second one meets the held lock every time.
    first, second = stack.kit.root / "first.bundle", stack.kit.root / "second.bundle"
    bundle = kit_.build_bundle(stack.kit, "1.3.0")
    first.write_bytes(bundle.read_bytes())
    second.write_bytes(bundle.read_bytes())
    answers: dict[str, requests.Response] = {}
    threads = [
        threading.Thread(target=lambda p=p: answers.update({p.name: stack.upload(p)}))
        for p in (first, second)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(r.status_code for r in answers.values())
    assert codes == [202, 409], {n: r.text for n, r in answers.items()}
    accepted = next(r for r in answers.values() if r.status_code == 202)
    refused = next(r for r in answers.values() if r.status_code == 409)
    winner = accepted.json()["filename"]
    message = refused.json()["error"]["message"]
    assert f"of '{winner}' by admin since" in message
    assert message.endswith(("(uploaded)", "(queued)"))  # being handed over, or waiting for the worker
    assert accepted.headers["Location"] == accepted.json()["status_url"]
    assert accepted.json()["state"] == "queued"

    stack.start_worker()
    status = stack.finished(accepted.json()["status_url"])
    assert status["state"] == "staged", status
    assert [c["name"] for c in status["checks"]][-1] == "staged"
    assert all(c["passed"] for c in status["checks"])
    assert stack.releases()["1.3.0"][0] is True
    assert (stack.home / "staging" / "1.3.0" / "image.tar").is_file()
    assert stack.leftovers() == []
    release = stack.get("/api/v1/releases/1.3.0").json()
    assert release["staged"] is True
    assert "Fixes and improvements." in release["notes"]


def test_an_upload_through_the_page_shows_each_check_when_the_worker_is_done(stack: Stack) -> None:
    stack.start_worker()
    browser = requests.Session()
    form = browser.get(f"{stack.base}/login", timeout=10, verify=stack.ca).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    browser.post(
        f"{stack.base}/login",
        data={"username": "admin", "password": stack.password, "csrf_token": token.group(1)},
        timeout=10,
        verify=stack.ca,
    )
    page = browser.get(f"{stack.base}/import", timeout=10, verify=stack.ca).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    bundle = kit_.build_bundle(stack.kit, "1.4.0", upgrade_from=">=1.2.0")
    with bundle.open("rb") as data:
        answer = browser.post(
            f"{stack.base}/import",
            data={"csrf_token": csrf.group(1)},
            files={"bundle": (bundle.name, data, "application/octet-stream")},
            headers={"Accept": "application/json"},
            timeout=60,
            verify=stack.ca,
        )
    assert answer.status_code == 202, answer.text
    result_url = answer.json()["result_url"]
    wait_for(
        lambda: (
            "verified and staged"
            in browser.get(f"{stack.base}{result_url}", timeout=10, verify=stack.ca).text
        ),
        90,
        "the result page shows the staged release",
        stack.worker,
    )
    result = browser.get(f"{stack.base}{result_url}", timeout=10, verify=stack.ca).text
    for check in ("signature-threshold", "license-entitlement", "payload", "staged"):
        assert f"<td>{check}</td>" in result
    assert "FAILED" not in result
    updates = browser.get(f"{stack.base}/updates", timeout=10, verify=stack.ca).text
    assert ">Update to 1.4.0</a>" in updates


def test_a_tampered_upload_is_a_failed_import_not_a_release_and_nothing_is_staged(stack: Stack) -> None:
    stack.start_worker()
    bundle = kit_.build_bundle(stack.kit, "1.5.0", upgrade_from=">=1.2.0")
    data = bytearray(bundle.read_bytes())
    data[data.index(bytes([10]) * 3000) + 100] ^= 0xFF
    tampered = stack.kit.root / "tampered-1.5.0.bundle"
    tampered.write_bytes(bytes(data))
    accepted = stack.upload(tampered)
    assert accepted.status_code == 202, accepted.text
    status = stack.finished(accepted.json()["status_url"])
    assert status["state"] == "failed"
    assert [(c["name"], c["passed"]) for c in status["checks"]] == [("payload-hash-mismatch", False)]
    # A failed import is no release: 1.5.0 stays free for the genuine bundle (or the channel's offer).
    assert stack.get("/api/v1/releases/1.5.0").status_code == 404
    assert not (stack.home / "staging" / "1.5.0").exists()
    assert not list((stack.home / "staging").glob(".staging-*"))
    assert stack.leftovers() == []


def test_a_non_bundle_upload_is_refused_at_once_over_https(stack: Stack) -> None:
    junk = stack.kit.root / "junk.bin"
    junk.write_bytes(b"\x1f\x8b\x08" + b"not a bundle" * 1000)
    refused = stack.upload(junk)
    assert refused.status_code == 400
    assert "not a Corral bundle" in refused.json()["error"]["message"]
    assert stack.leftovers() == []
    time.sleep(0.2)
    assert stack.password not in stack.web.output()
