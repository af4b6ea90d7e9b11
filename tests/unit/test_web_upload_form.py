"""What an upload's multipart form may hold: one bundle, bounded fields and parts, safe file names."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_web import bearer, login
from tests.unit.test_web_import import Installation
from updater.store.models import Outcome

HOSTILE_NAME = "evil\x01\x1b[31mred\u202egnp.bundle"


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    made = Installation(tmp_path)
    yield made
    made.site.app.extensions["corral"].engine.dispose()


def _post(inst: Installation, body: bytes, boundary: str = "XyZ") -> Any:
    return inst.site.client().post(
        "/api/v1/releases",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
        headers=bearer(inst.site.operator_token),
    )


def _file_part(name: str, filename: str, content: bytes) -> bytes:
    return (
        (
            f'--XyZ\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + b"\r\n"
    )


def test_two_bundle_parts_in_one_upload_are_refused_and_neither_kept(inst: Installation) -> None:
    bundle = inst.bundle().read_bytes()
    body = (
        _file_part("bundle", "a.bundle", bundle) + _file_part("bundle", "b.bundle", bundle) + b"--XyZ--\r\n"
    )
    response = _post(inst, body)
    assert response.status_code == 400
    assert "more than one file in the form field 'bundle'" in response.get_json()["error"]["message"]
    assert inst.leftovers() == []
    assert [(e.action, e.outcome) for e in inst.site.audit()[-1:]] == [("release.import", Outcome.REFUSED)]


def test_a_form_field_over_its_limit_is_refused_naming_that_limit(inst: Installation) -> None:
    limit = inst.site.app.config["MAX_FORM_MEMORY_SIZE"]
    inst.site.app.config["MAX_CONTENT_LENGTH"] = 8 * limit  # the body is well within the upload limit
    field = b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\n' + b"x" * (limit + 1) + b"\r\n"
    response = _post(inst, field + _file_part("bundle", "a.bundle", b"\0" * 512) + b"--XyZ--\r\n")
    assert response.status_code == 413
    message = response.get_json()["error"]["message"]
    assert message == f"a form field is larger than the limit of {limit} bytes for one field", message
    assert "upload limit" not in message
    assert inst.leftovers() == []


def test_more_parts_than_the_limit_are_refused_naming_that_limit(inst: Installation) -> None:
    limit = inst.site.app.config["MAX_FORM_PARTS"]
    parts = b"".join(
        f'--XyZ\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n'.encode()
        for i in range(limit + 1)
    )
    response = _post(inst, parts + b"--XyZ--\r\n")
    assert response.status_code == 413
    message = response.get_json()["error"]["message"]
    assert message == f"the form has more than {limit} parts", message
    assert inst.leftovers() == []


def test_control_characters_in_an_upload_file_name_are_never_stored_or_shown(inst: Installation) -> None:
    refused = _post(inst, _file_part("bundle", HOSTILE_NAME, b"not a bundle\n" * 100) + b"--XyZ--\r\n")
    assert refused.status_code == 400
    queued = _post(inst, _file_part("bundle", HOSTILE_NAME, inst.bundle().read_bytes()) + b"--XyZ--\r\n")
    assert queued.status_code == 503  # the unit tier has no task queue; the import's status is kept
    statuses = [json.loads(p.read_text()) for p in (inst.site.home / "imports").glob("imp-*.json")]
    assert len(statuses) == 1
    shown = [statuses[0]["filename"]]
    shown += [e.target for e in inst.site.audit()] + [e.detail for e in inst.site.audit()]
    page = inst.site.client()
    login(page, "vera")
    shown.append(page.get(f"/imports/{statuses[0]['import_id']}").get_data(as_text=True))
    for text in shown:
        assert not [c for c in text if unicodedata.category(c) in ("Cc", "Cf") and c not in "\n\t"], text
    assert statuses[0]["filename"] == "evil\ufffd\ufffd[31mred\ufffdgnp.bundle"
    assert any("evil\\x01\\x1b[31mred\\u202egnp.bundle" in e.detail for e in inst.site.audit())
