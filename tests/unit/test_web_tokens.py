"""Revoking API tokens (issue 17 item 2): from the CLI, the API and the Users page, audited each time, and a
revoked token is refused at its very next request. Operators revoke anyone's tokens, a viewer only their
own. Flask's test client and ``corral-updater`` on a real SQLite store; the integration tier does the same
against the served service (test_web_sessions_tokens.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_web import Site, bearer, csrf_from, login, make_site
from tests.unit.test_web_cli import run
from updater.config import load_config
from updater.services.accounts import auth
from updater.store import queries as q
from updater.store.db import make_engine, session_factory, transaction
from updater.store.models import Outcome


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = make_site(tmp_path)
    yield made
    made.app.extensions["corral"].engine.dispose()


def _token_id(token: str) -> str:
    return auth.parse_token(token)[0]


def _secret(token: str) -> str:
    return auth.parse_token(token)[1]


def _revoke(site: Site, username: str, token: str, by: str) -> tuple[int, dict[str, object]]:
    response = site.client().post(
        f"/api/v1/users/{username}/tokens/{_token_id(token)}/revoke", headers=bearer(by)
    )
    body: dict[str, object] = response.get_json()
    return response.status_code, body


def test_a_revoked_token_is_refused_at_its_next_request(site: Site) -> None:
    api = site.client()
    assert api.get("/api/v1/whoami", headers=bearer(site.viewer_token)).status_code == 200
    code, body = _revoke(site, "vera", site.viewer_token, by=site.operator_token)
    assert code == 200
    assert body["state"] == "revoked"
    refused = api.get("/api/v1/whoami", headers=bearer(site.viewer_token))
    assert refused.status_code == 401
    assert refused.get_json()["error"]["message"] == "invalid or revoked API token"
    last = site.audit()[-1]
    assert (last.actor, last.action, last.target, last.outcome) == (
        "olga",
        "token.revoke",
        "vera",
        Outcome.OK,
    )
    assert last.detail == f"token test ({_token_id(site.viewer_token)})"
    assert last.source_ip == "192.0.2.10"


def test_a_users_tokens_are_listed_with_their_state_and_never_their_secret(site: Site) -> None:
    api = site.client()
    created = api.post("/api/v1/users/vera/tokens", json={"name": "ci"}, headers=bearer(site.operator_token))
    assert created.status_code == 201
    _revoke(site, "vera", site.viewer_token, by=site.operator_token)
    response = api.get("/api/v1/users/vera/tokens", headers=bearer(site.operator_token))
    assert response.status_code == 200
    listed = response.get_json()["tokens"]
    assert [(t["name"], t["token_id"], t["state"], t["username"]) for t in listed] == [
        ("test", _token_id(site.viewer_token), "revoked", "vera"),
        ("ci", _token_id(created.get_json()["token"]), "active", "vera"),
    ]
    text = response.get_data(as_text=True)
    assert _secret(site.viewer_token) not in text
    assert _secret(created.get_json()["token"]) not in text
    assert api.get("/api/v1/users/nobody/tokens", headers=bearer(site.operator_token)).status_code == 404


def test_a_viewer_revokes_their_own_token_but_not_anothers(site: Site) -> None:
    code, body = _revoke(site, "olga", site.operator_token, by=site.viewer_token)
    assert code == 403
    assert body == {"error": {"code": 403, "message": "this needs the operator role; you are a viewer"}}
    last = site.audit()[-1]
    assert (last.actor, last.outcome) == ("vera", Outcome.REFUSED)
    assert site.client().get("/api/v1/whoami", headers=bearer(site.operator_token)).status_code == 200
    code, body = _revoke(site, "vera", site.viewer_token, by=site.viewer_token)
    assert code == 200
    assert site.client().get("/api/v1/whoami", headers=bearer(site.viewer_token)).status_code == 401


def test_a_token_is_revoked_only_under_its_own_user(site: Site) -> None:
    """The path names the user: olga's token under vera's name is not found, and stays valid."""
    code, body = _revoke(site, "vera", site.operator_token, by=site.operator_token)
    assert code == 404
    assert body["error"] == {
        "code": 404,
        "message": f"user 'vera' has no API token '{_token_id(site.operator_token)}'",
    }
    assert site.client().get("/api/v1/whoami", headers=bearer(site.operator_token)).status_code == 200
    refusal = site.audit()[-1]
    assert (refusal.action, refusal.target, refusal.outcome) == ("token.revoke", "vera", Outcome.REFUSED)


def test_revoking_a_revoked_token_changes_nothing_and_is_audited(site: Site) -> None:
    assert _revoke(site, "vera", site.viewer_token, by=site.operator_token)[0] == 200
    code, body = _revoke(site, "vera", site.viewer_token, by=site.operator_token)
    assert (code, body["state"]) == (200, "revoked")
    assert site.audit()[-1].detail.endswith("was already revoked")


def test_the_users_page_lists_tokens_and_revokes_one_with_its_csrf_token(site: Site) -> None:
    olga = site.client()
    login(olga, "olga")
    page = olga.get("/users").get_data(as_text=True)
    vera_id, olga_id = _token_id(site.viewer_token), _token_id(site.operator_token)
    assert f"/users/vera/tokens/{vera_id}/revoke" in page
    assert f"/users/olga/tokens/{olga_id}/revoke" in page
    assert _secret(site.viewer_token) not in page
    url = f"/users/vera/tokens/{vera_id}/revoke"
    assert olga.post(url).status_code == 400  # no CSRF token
    assert site.client().get("/api/v1/whoami", headers=bearer(site.viewer_token)).status_code == 200
    response = olga.post(url, data={"csrf_token": csrf_from(olga, "/users")})
    assert response.status_code == 302
    assert site.client().get("/api/v1/whoami", headers=bearer(site.viewer_token)).status_code == 401
    page = olga.get("/users").get_data(as_text=True)
    assert "revoked: it is refused from now on" in page
    assert url not in page  # a revoked token has no Revoke button
    assert [(e.action, e.target, e.outcome) for e in site.audit()][-1] == ("token.revoke", "vera", Outcome.OK)


def test_a_viewer_sees_a_revoke_button_on_their_own_tokens_only(site: Site) -> None:
    vera = site.client()
    login(vera, "vera")
    page = vera.get("/users").get_data(as_text=True)
    assert f"/users/vera/tokens/{_token_id(site.viewer_token)}/revoke" in page
    assert f"/users/olga/tokens/{_token_id(site.operator_token)}/revoke" not in page
    assert _token_id(site.operator_token) in page  # viewers read everything, secrets aside
    forbidden = vera.post(
        f"/users/olga/tokens/{_token_id(site.operator_token)}/revoke",
        data={"csrf_token": csrf_from(vera, "/users")},
    )
    assert forbidden.status_code == 403
    assert site.client().get("/api/v1/whoami", headers=bearer(site.operator_token)).status_code == 200


def test_tokens_are_listed_and_revoked_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert run(home, "init", "--bind", "127.0.0.1:18443", capsys=capsys)[0] == 0
    code, out, _ = run(home, "token", "create", "admin", "--name", "ci", capsys=capsys)
    assert code == 0
    token = out.strip()
    token_id = _token_id(token)
    code, out, _ = run(home, "token", "list", capsys=capsys)
    assert code == 0
    assert f"{token_id}  admin" in out
    assert "active" in out
    assert _secret(token) not in out
    assert run(home, "token", "revoke", "admin", "ffffffffffffffff", capsys=capsys)[0] == 2
    code, out, _ = run(home, "token", "revoke", "admin", token_id, capsys=capsys)
    assert (code, out.strip()) == (
        0,
        f"API token 'ci' ({token_id}) of admin revoked: it is refused from now on",
    )
    code, out, _ = run(home, "token", "list", "admin", "--json", capsys=capsys)
    assert [(t["token_id"], t["state"]) for t in json.loads(out)] == [(token_id, "revoked")]
    assert run(home, "token", "list", "nobody", capsys=capsys)[0] == 2
    engine = make_engine(load_config(home).effective_database_url)
    try:
        with pytest.raises(auth.InvalidToken), transaction(session_factory(engine)) as db:
            auth.user_for_token(db, token)
        with transaction(session_factory(engine)) as db:
            actions = [(e.actor.startswith("cli:"), e.action, e.outcome) for e in reversed(q.list_audit(db))]
    finally:
        engine.dispose()
    assert actions[-1] == (True, "token.revoke", Outcome.OK)
