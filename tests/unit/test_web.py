"""The web app through Flask's test client, on a real SQLite store: sign-in, sessions, CSRF, roles, API.

Requests go to https URLs because the session cookie is Secure, as in production.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.routing import Rule

from updater.config import ServiceConfig
from updater.domain.states import NodeState, RolloutState
from updater.services.accounts import auth
from updater.services.cluster import view as cluster_view
from updater.services.cluster.access import Observation
from updater.store import queries as q
from updater.store.db import make_engine, migrate, session_factory, transaction
from updater.store.models import AuditEntry, Outcome, ReleaseSource, Role
from updater.web import AppSetupError, create_app
from updater.web.openapi import openapi_document
from updater.web.security import MUTATING_METHODS, public, unguarded_views

PASSWORD = "correct horse battery staple"
UPLOAD_LIMIT = 64 * 1024


class HttpsClient(FlaskClient):
    """The service is HTTPS only: its Secure cookie and HSTS header only make sense on https URLs."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        if not (args and not isinstance(args[0], str)):
            kwargs.setdefault("base_url", "https://localhost")
        return super().open(*args, **kwargs)


@dataclass
class Site:
    app: Flask
    sessions: sessionmaker[Session]
    operator_token: str
    viewer_token: str
    home: Path

    def client(self) -> FlaskClient:
        self.app.test_client_class = HttpsClient
        client = self.app.test_client()
        client.environ_base["REMOTE_ADDR"] = "192.0.2.10"
        return client

    def audit(self) -> list[AuditEntry]:
        with transaction(self.sessions) as db:
            return list(reversed(q.list_audit(db, limit=1000)))


def _inventory(path: Path) -> Path:
    data = {
        "_meta": {
            "hostvars": {
                f"node{i}": {"corral_address": f"10.99.0.{10 + i}", "corral_rack": f"r{i}"} for i in (1, 2, 3)
            }
        },
        "all": {"children": ["ungrouped", "nodes"]},
        "nodes": {"hosts": ["node1", "node2", "node3"]},
    }
    path.write_text(json.dumps(data))
    return path


def make_site(tmp_path: Path, **overrides: Any) -> Site:
    settings: dict[str, Any] = {
        "home": tmp_path,
        "secret_key": secrets.token_bytes(32),
        "max_upload_bytes": UPLOAD_LIMIT,
        "inventory_path": str(_inventory(tmp_path / "inventory.json")),
        "login_max_failures": 3,
        # One app, no Redis: the throttle in this process (tests/integration/test_login_throttle_shared.py
        # runs it in Redis across two apps).
        "login_throttle_url": "memory://",
        "web_workers": 1,
    }
    settings.update(overrides)
    config = ServiceConfig(**settings)
    engine = make_engine(config.effective_database_url)
    migrate(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as db:
        olga = auth.create_user(db, "olga", PASSWORD, Role.OPERATOR)
        vera = auth.create_user(db, "vera", PASSWORD, Role.VIEWER)
        operator_token = auth.create_token(db, olga, "test")
        viewer_token = auth.create_token(db, vera, "test")
    return Site(create_app(config, engine=engine), sessions, operator_token, viewer_token, tmp_path)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = make_site(tmp_path)
    yield made
    made.app.extensions["corral"].engine.dispose()


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = CSRF.search(page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    token = csrf_from(client)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- sign-in and sessions -----------------------------------------------------------------------------------


def test_signing_in_sets_a_secure_httponly_strict_session_cookie(site: Site) -> None:
    client = site.client()
    response = login(client, "olga")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "corral_session=" in cookie
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Expires=" in cookie
    page = client.get("/")
    assert page.status_code == 200
    assert "olga (operator)" in page.get_data(as_text=True)
    assert [(e.actor, e.action, e.outcome, e.source_ip) for e in site.audit()] == [
        ("olga", "login", Outcome.OK, "192.0.2.10")
    ]


def test_pages_need_a_signed_in_user(site: Site) -> None:
    client = site.client()
    for path in ["/", "/history", "/audit", "/users"]:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next=")


def test_a_wrong_password_is_refused_audited_and_then_throttled(site: Site) -> None:
    client = site.client()
    for _ in range(3):
        refused = login(client, "olga", "not the password")
        assert refused.status_code == 401
        assert "invalid username or password" in refused.get_data(as_text=True)
    throttled = login(client, "olga")
    assert throttled.status_code == 429
    assert "too many failed logins" in throttled.get_data(as_text=True)
    assert client.get("/").status_code == 302
    outcomes = [(e.action, e.outcome) for e in site.audit()]
    assert outcomes == [("login", Outcome.REFUSED)] * 4
    assert all("not the password" not in e.detail for e in site.audit())


def test_a_login_without_its_csrf_token_is_refused(site: Site) -> None:
    client = site.client()
    response = client.post("/login", data={"username": "olga", "password": PASSWORD})
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert site.audit() == []


def test_an_expired_session_sends_the_user_back_to_sign_in(site: Site) -> None:
    client = site.client()
    login(client, "olga")
    lifetime = site.app.extensions["corral"].config.session_lifetime_seconds
    with client.session_transaction() as session:
        session["login_at"] = time.time() - lifetime - 1
    response = client.get("/history")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/history"
    assert "session has expired" in client.get("/login").get_data(as_text=True)
    assert client.get("/").status_code == 302  # the expired session was cleared, not renewed


def test_an_expired_session_cannot_change_anything_and_is_sent_to_sign_in(site: Site) -> None:
    """Every operator form posted after the session expired (its CSRF token from before) changes nothing."""
    client = site.client()
    login(client, "olga")
    token = csrf_from(client, "/")
    lifetime = site.app.extensions["corral"].config.session_lifetime_seconds
    with client.session_transaction() as session:
        session["login_at"] = time.time() - lifetime - 1
    with transaction(site.sessions) as db:
        before = [(u.username, u.role, u.disabled) for u in q.list_users(db)]
    audited = len(site.audit())
    for endpoint, (values, form) in {**UI_MUTATIONS, **UI_RELEASE_MUTATIONS}.items():
        if endpoint == "ui.logout":
            continue
        response = client.post(_url(site.app, endpoint, values), data={**form, "csrf_token": token})
        assert response.status_code in (302, 400), (endpoint, response.status_code)
        if response.status_code == 302:
            assert response.headers["Location"].startswith("/login"), endpoint
    with transaction(site.sessions) as db:
        assert [(u.username, u.role, u.disabled) for u in q.list_users(db)] == before
        assert q.list_rollouts(db) == []
    assert [e.action for e in site.audit()[audited:] if e.outcome is Outcome.OK] == []


def test_the_session_cookie_itself_expires_with_the_configured_lifetime(tmp_path: Path) -> None:
    site = make_site(tmp_path, session_lifetime_seconds=1)
    client = site.client()
    login(client, "olga")
    assert client.get("/").status_code == 200
    time.sleep(2.1)  # itsdangerous signs whole seconds
    assert client.get("/").status_code == 302


def test_signing_out_ends_the_session(site: Site) -> None:
    client = site.client()
    login(client, "vera")
    token = csrf_from(client, "/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302
    assert [e.action for e in site.audit()] == ["login", "logout"]


def test_a_disabled_user_is_signed_out_at_the_next_request(site: Site) -> None:
    client = site.client()
    login(client, "vera")
    with transaction(site.sessions) as db:
        auth.set_disabled(db, "vera", True)
    assert client.get("/").status_code == 302


def test_after_sign_in_only_local_paths_are_followed(site: Site) -> None:
    client = site.client()
    token = csrf_from(client)
    response = client.post(
        "/login",
        data={"username": "olga", "password": PASSWORD, "csrf_token": token, "next": "//evil.example/x"},
    )
    assert response.headers["Location"] == "/"


# --- CSRF, roles and audit on every mutation ----------------------------------------------------------------

# One valid request per mutating endpoint; a test fails when a mutating route is missing from this table.
UI_MUTATIONS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "ui.logout": ({}, {}),
    "ui.add_user": ({}, {"username": "newbie", "role": "viewer"}),
    "ui.disable_user": ({"username": "vera"}, {}),
    "ui.enable_user": ({"username": "vera"}, {}),
    "ui.create_token": ({"username": "vera"}, {"name": "ci"}),
    # another user's token: a viewer may revoke only their own (test_web_tokens.py)
    "ui.tokens.revoke": ({"username": "olga", "token_id": "0123456789abcdef"}, {}),
}
API_MUTATIONS: dict[str, tuple[dict[str, str], dict[str, Any] | None]] = {
    "api.add_user": ({}, {"username": "newbie", "role": "viewer"}),
    "api.disable_user": ({"username": "vera"}, None),
    "api.enable_user": ({"username": "vera"}, None),
    "api.create_token": ({"username": "vera"}, {"name": "ci"}),
    "api.tokens.revoke_token": ({"username": "olga", "token_id": "0123456789abcdef"}, None),
}
# Release and rollout mutations: each refused for a viewer and without CSRF; their effects are tested in
# test_web_import.py, test_web_rollout.py and the integration tier (they need a worker or ZooKeeper).
UI_RELEASE_MUTATIONS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "ui.releases.import_upload": ({}, {}),
    "ui.releases.download": ({"version": "1.3.0"}, {}),
    "ui.rollouts.start": ({}, {"version": "1.3.0"}),
    "ui.rollouts.pause": ({"rollout_id": "r-1"}, {}),
    "ui.rollouts.resume": ({"rollout_id": "r-1"}, {}),
    "ui.rollouts.abort": ({"rollout_id": "r-1"}, {}),
    "ui.rollouts.break_lock": ({}, {"token": "1"}),
}
API_RELEASE_MUTATIONS: dict[str, tuple[dict[str, str], dict[str, Any] | None]] = {
    "api.releases.import_release": ({}, None),
    "api.releases.download_release": ({"version": "1.3.0"}, None),
    "api.rollouts.start": ({}, {"version": "1.3.0"}),
    "api.rollouts.pause": ({"rollout_id": "r-1"}, None),
    "api.rollouts.resume": ({"rollout_id": "r-1"}, None),
    "api.rollouts.abort": ({"rollout_id": "r-1"}, None),
    "api.rollouts.break_lock": ({}, {"token": 1}),
}
PUBLIC_MUTATIONS = {"ui.login"}


def mutating_rules(app: Flask) -> list[Rule]:
    return [rule for rule in app.url_map.iter_rules() if MUTATING_METHODS & set(rule.methods or ())]


def _url(app: Flask, endpoint: str, values: dict[str, str]) -> str:
    with app.test_request_context():
        from flask import url_for

        arguments: dict[str, Any] = dict(values)
        return url_for(endpoint, **arguments)


def test_every_mutating_route_is_in_the_role_tables(site: Site) -> None:
    endpoints = {rule.endpoint for rule in mutating_rules(site.app)}
    assert endpoints == (
        set(UI_MUTATIONS)
        | set(API_MUTATIONS)
        | set(UI_RELEASE_MUTATIONS)
        | set(API_RELEASE_MUTATIONS)
        | PUBLIC_MUTATIONS
    )


def test_a_viewer_is_refused_every_ui_mutation_and_the_refusal_is_audited(site: Site) -> None:
    client = site.client()
    login(client, "vera")
    for endpoint, (values, form) in {**UI_MUTATIONS, **UI_RELEASE_MUTATIONS}.items():
        if endpoint == "ui.logout":
            continue  # signing out is every user's own business
        with transaction(site.sessions) as db:
            before = [(u.username, u.disabled) for u in q.list_users(db)]
        token = csrf_from(client, "/")
        response = client.post(_url(site.app, endpoint, values), data={**form, "csrf_token": token})
        assert response.status_code == 403, endpoint
        assert "needs the operator role; you are a viewer" in response.get_data(as_text=True)
        with transaction(site.sessions) as db:
            assert [(u.username, u.disabled) for u in q.list_users(db)] == before, endpoint
        last = site.audit()[-1]
        assert (last.actor, last.action, last.outcome) == ("vera", endpoint, Outcome.REFUSED)


def test_a_viewer_token_is_refused_every_api_mutation(site: Site) -> None:
    client = site.client()
    for endpoint, (values, body) in {**API_MUTATIONS, **API_RELEASE_MUTATIONS}.items():
        response = client.post(_url(site.app, endpoint, values), json=body, headers=bearer(site.viewer_token))
        assert response.status_code == 403, endpoint
        assert response.get_json() == {
            "error": {"code": 403, "message": "this needs the operator role; you are a viewer"}
        }
        assert site.audit()[-1].outcome is Outcome.REFUSED
    with transaction(site.sessions) as db:
        assert [u.username for u in q.list_users(db)] == ["olga", "vera"]
        assert not q.get_user(db, "vera").disabled


def test_every_ui_mutation_needs_the_csrf_token(site: Site) -> None:
    client = site.client()
    login(client, "olga")
    for endpoint, (values, form) in {**UI_MUTATIONS, **UI_RELEASE_MUTATIONS}.items():
        response = client.post(_url(site.app, endpoint, values), data=form)
        assert response.status_code == 400, endpoint
        assert "missing or invalid CSRF token" in response.get_data(as_text=True)
        wrong = client.post(_url(site.app, endpoint, values), data={**form, "csrf_token": "forged"})
        assert wrong.status_code == 400, endpoint
    with transaction(site.sessions) as db:
        assert [(u.username, u.disabled) for u in q.list_users(db)] == [("olga", False), ("vera", False)]
    assert [e.action for e in site.audit()] == ["login"]


def test_every_operator_mutation_writes_the_audit_log(site: Site) -> None:
    with transaction(site.sessions) as db:  # the token the tables revoke
        q.add_token(db, q.get_user(db, "olga"), token_id="0123456789abcdef", secret_hash="0" * 64, name="old")
    client = site.client()
    login(client, "olga")
    for endpoint, (values, form) in UI_MUTATIONS.items():
        if endpoint == "ui.logout":
            continue
        fields = {**form, "username": "uinew"} if endpoint == "ui.add_user" else form
        token = csrf_from(client, "/")
        response = client.post(_url(site.app, endpoint, values), data={**fields, "csrf_token": token})
        assert response.status_code in (200, 302), endpoint
    api = site.client()
    for endpoint, (values, body) in API_MUTATIONS.items():
        response = api.post(_url(site.app, endpoint, values), json=body, headers=bearer(site.operator_token))
        assert response.status_code in (200, 201), (endpoint, response.get_json())
    actions = [(e.actor, e.action, e.target, e.outcome) for e in site.audit()]
    assert actions == [
        ("olga", "login", "", Outcome.OK),
        ("olga", "user.add", "uinew", Outcome.OK),
        ("olga", "user.disable", "vera", Outcome.OK),
        ("olga", "user.enable", "vera", Outcome.OK),
        ("olga", "token.create", "vera", Outcome.OK),
        ("olga", "token.revoke", "olga", Outcome.OK),
        ("olga", "user.add", "newbie", Outcome.OK),
        ("olga", "user.disable", "vera", Outcome.OK),
        ("olga", "user.enable", "vera", Outcome.OK),
        ("olga", "token.create", "vera", Outcome.OK),
        ("olga", "token.revoke", "olga", Outcome.OK),
    ]
    assert all(e.source_ip == "192.0.2.10" for e in site.audit())


def test_a_view_without_a_role_check_is_found(site: Site) -> None:
    site.app.add_url_rule("/forgotten", "forgotten", lambda: "open")
    assert unguarded_views(site.app) == ["/forgotten (forgotten)"]


def test_an_app_without_a_proper_secret_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AppSetupError, match="at least 32 bytes"):
        create_app(ServiceConfig(home=tmp_path, secret_key=b"short"), check_schema=False)


# --- users and tokens ---------------------------------------------------------------------------------------


def test_a_new_users_password_is_shown_once_and_works(site: Site) -> None:
    client = site.client()
    response = client.post(
        "/api/v1/users", json={"username": "nina", "role": "viewer"}, headers=bearer(site.operator_token)
    )
    assert response.status_code == 201
    body = response.get_json()
    assert (body["username"], body["role"], body["disabled"]) == ("nina", "viewer", False)
    password = body["password"]
    assert len(password) >= 20
    assert login(site.client(), "nina", password).status_code == 302
    listed = client.get("/api/v1/users", headers=bearer(site.operator_token)).get_data(as_text=True)
    audit_page = client.get("/api/v1/audit", headers=bearer(site.operator_token)).get_data(as_text=True)
    assert password not in listed
    assert password not in audit_page


def test_bad_user_input_is_refused_with_the_reason(site: Site) -> None:
    client = site.client()
    headers = bearer(site.operator_token)
    cases = [
        ({"username": "Nina", "role": "viewer"}, 400, "lower-case letter"),
        ({"username": "nina", "role": "admin"}, 400, "role must be one of viewer, operator"),
        ({"username": "vera", "role": "viewer"}, 409, "already exists"),
        ({"username": 7, "role": "viewer"}, 400, "field 'username' must be a string"),
    ]
    for body, status, message in cases:
        response = client.post("/api/v1/users", json=body, headers=headers)
        assert response.status_code == status, body
        assert message in response.get_json()["error"]["message"]
    not_json = client.post("/api/v1/users", data="username=x", headers=headers)
    assert not_json.status_code == 400
    assert "JSON object" in not_json.get_json()["error"]["message"]
    with transaction(site.sessions) as db:
        assert [u.username for u in q.list_users(db)] == ["olga", "vera"]


def test_an_operator_cannot_lock_themselves_out(site: Site) -> None:
    response = site.client().post("/api/v1/users/olga/disable", headers=bearer(site.operator_token))
    assert response.status_code == 400
    assert "your own account" in response.get_json()["error"]["message"]


def test_a_token_created_through_the_api_authenticates_its_user(site: Site) -> None:
    client = site.client()
    created = client.post(
        "/api/v1/users/vera/tokens", json={"name": "grafana"}, headers=bearer(site.operator_token)
    )
    assert created.status_code == 201
    token = created.get_json()["token"]
    assert client.get("/api/v1/whoami", headers=bearer(token)).get_json()["username"] == "vera"


# --- API authentication and errors --------------------------------------------------------------------------


def test_the_api_wants_a_bearer_token_and_ignores_session_cookies(site: Site) -> None:
    client = site.client()
    login(client, "olga")  # a browser session does not open the API (no CSRF exposure)
    for headers in [{}, {"Authorization": "Basic b2xnYTpwdw=="}, bearer("crl_nonsense")]:
        response = client.get("/api/v1/status", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="corral"'
        assert response.get_json()["error"]["code"] == 401


def test_unknown_api_routes_answer_404_in_json_and_ui_routes_in_html(site: Site) -> None:
    client = site.client()
    response = client.get("/api/v1/nothing-here", headers=bearer(site.viewer_token))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == 404
    assert client.get("/api").get_json()["error"]["code"] == 404
    page = client.get("/nothing-here")
    assert page.status_code == 404
    assert page.mimetype == "text/html"
    wrong_method = client.delete("/api/v1/users", headers=bearer(site.operator_token))
    assert wrong_method.status_code == 405
    assert wrong_method.get_json()["error"]["code"] == 405


def test_an_oversized_upload_is_refused_with_413_before_anything_happens(site: Site) -> None:
    client = site.client()
    big = {"username": "x" * (UPLOAD_LIMIT + 1), "role": "viewer"}
    response = client.post("/api/v1/users", json=big, headers=bearer(site.operator_token))
    assert response.status_code == 413
    assert "upload limit" in response.get_json()["error"]["message"]
    login(client, "olga")
    token = csrf_from(client, "/")
    page = client.post(
        "/users", data={"csrf_token": token, "username": "y" * (UPLOAD_LIMIT + 1), "role": "viewer"}
    )
    assert page.status_code == 413
    with transaction(site.sessions) as db:
        assert [u.username for u in q.list_users(db)] == ["olga", "vera"]


def test_pages_and_answers_carry_the_security_headers(site: Site) -> None:
    client = site.client()
    for response in [client.get("/login"), client.get("/api/v1/status", headers=bearer(site.viewer_token))]:
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")


# --- OpenAPI ------------------------------------------------------------------------------------------------


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def test_the_openapi_document_describes_exactly_the_registered_api_routes(site: Site) -> None:
    served = site.client().get("/api/v1/openapi.json")
    assert served.status_code == 200
    document = served.get_json()
    assert document == json.loads(json.dumps(openapi_document()))
    registered = {
        (_openapi_path(rule.rule), method.lower())
        for rule in site.app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == registered


def test_every_documented_mutation_says_it_can_be_refused(site: Site) -> None:
    for path, item in openapi_document()["paths"].items():
        for method, operation in item.items():
            if method != "get":
                assert {"401", "403", "413"} <= set(operation["responses"]), (path, method)


# --- what the pages show ------------------------------------------------------------------------------------


def _rollout_history(site: Site) -> None:
    start = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    with transaction(site.sessions) as db:
        release = q.add_release(
            db, version="1.1.0", channel="stable", release_date=date(2026, 11, 1), source=ReleaseSource.PULLED
        )
        rollout = q.add_rollout(
            db,
            rollout_id="r-20261121-1",
            release=release,
            created_by="olga",
            plan={},
            nodes=["node2", "node1"],
        )
        rollout.state = RolloutState.SUCCEEDED
        rollout.started_at, rollout.finished_at = start, start + timedelta(minutes=5)
        for i, step in enumerate(rollout.steps):
            step.state = NodeState.ACTIVE if i == 0 else NodeState.FAILED
            step.started_at = start + timedelta(minutes=2 * i)
            step.finished_at = step.started_at + timedelta(seconds=97)
            step.phase_seconds = {"drain": 12.0, "reboot": 40.0}
        rollout.probe_report = {"failures": 0}
        q.append_log(db, "r-20261121-1", [("node2", "stdout", "TASK [corral.cloud.rolling_node : drain]")])
        q.mark_installed(db, release)


def test_overview_shows_inventory_nodes_with_their_last_known_state(site: Site) -> None:
    _rollout_history(site)
    status = site.client().get("/api/v1/status", headers=bearer(site.viewer_token)).get_json()
    assert status["installed_release"] == "1.1.0"
    assert status["license"] is None
    assert "no license" not in " ".join(status["problems"])  # no license installed is not a problem
    nodes = {n["name"]: (n["address"], n["rack"], n["state"], n["last_rollout"]) for n in status["nodes"]}
    assert nodes == {
        "node1": ("10.99.0.11", "r1", "failed", "r-20261121-1"),
        "node2": ("10.99.0.12", "r2", "active", "r-20261121-1"),
        "node3": ("10.99.0.13", "r3", "unknown", None),
    }
    client = site.client()
    login(client, "vera")
    page = client.get("/").get_data(as_text=True)
    assert "10.99.0.13" in page
    assert "No license installed" in page


UNREACHABLE = "UNREACHABLE! ssh: connect to host 10.99.0.13 port 22: No route to host"


def test_overview_shows_each_nodes_release_and_health_from_the_last_observation(site: Site) -> None:
    config: ServiceConfig = site.app.extensions["corral"].config
    before = site.client().get("/api/v1/status", headers=bearer(site.viewer_token)).get_json()
    assert before["cluster_health"] == "not observed yet"
    assert before["observed_at"] is None
    assert {n["health"] for n in before["nodes"]} == {"unknown"}
    seen = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
    cluster_view.save(
        config,
        Observation(
            releases={"node1": "0.2.0", "node2": "0.1.0"},
            unreachable={"node3": UNREACHABLE},
            unhealthy={"node2": "Check Ceph is healthy: HEALTH_WARN (OSD_DOWN: 1 osds down)"},
        ),
        now=seen,
    )
    status = site.client().get("/api/v1/status", headers=bearer(site.viewer_token)).get_json()
    assert status["observed_at"] == "2026-12-03T15:00:00+00:00"
    assert status["cluster_health"] == ("2 of 3 nodes need attention: node2 unhealthy, node3 unreachable")
    nodes = {n["name"]: (n["release"], n["health"], n["health_detail"]) for n in status["nodes"]}
    assert nodes == {
        "node1": ("0.2.0", "healthy", ""),
        "node2": ("0.1.0", "unhealthy", "Check Ceph is healthy: HEALTH_WARN (OSD_DOWN: 1 osds down)"),
        "node3": (
            None,
            "unreachable",
            "UNREACHABLE! ssh: connect to host 10.99.0.13 port 22: No route to host",
        ),
    }
    client = site.client()
    login(client, "vera")
    page = client.get("/").get_data(as_text=True)
    assert "2 of 3 nodes need attention" in page
    assert "2026-12-03 15:00:00 UTC" in page
    assert "OSD_DOWN: 1 osds down" in page
    cluster_view.save(config, Observation(releases=dict.fromkeys(("node1", "node2", "node3"), "0.2.0")))
    healthy = site.client().get("/api/v1/status", headers=bearer(site.viewer_token)).get_json()
    assert healthy["cluster_health"].startswith("healthy: all 3 nodes answer")
    assert {n["release"] for n in healthy["nodes"]} == {"0.2.0"}


def test_an_unreadable_observation_is_reported_and_the_nodes_shown_unknown(site: Site) -> None:
    (site.home / cluster_view.OBSERVATION_FILE).write_text("{not json")
    status = site.client().get("/api/v1/status", headers=bearer(site.viewer_token)).get_json()
    assert any(p.startswith("cluster observation: ") and "cannot be read" in p for p in status["problems"])
    assert status["cluster_health"] == "not observed yet"
    assert {n["health"] for n in status["nodes"]} == {"unknown"}


def test_overview_reports_an_unreadable_inventory_instead_of_inventing_nodes(tmp_path: Path) -> None:
    site = make_site(tmp_path, inventory_path=str(tmp_path / "missing.json"))
    status = site.client().get("/api/v1/status", headers=bearer(site.viewer_token)).get_json()
    assert status["nodes"] == []
    assert status["problems"] == [f"inventory: inventory {tmp_path / 'missing.json'} does not exist"]


def test_history_shows_each_rollout_with_per_node_durations_and_its_log(site: Site) -> None:
    _rollout_history(site)
    client = site.client()
    login(client, "vera")
    history = client.get("/history").get_data(as_text=True)
    assert "r-20261121-1" in history
    assert "node2 97 s" in history
    detail = client.get("/history/r-20261121-1").get_data(as_text=True)
    assert "97.0 s" in detail
    assert "drain 12.0 s, reboot 40.0 s" in detail
    assert "TASK [corral.cloud.rolling_node : drain]" in detail
    assert client.get("/history/r-nope").status_code == 404
    api = client.get("/api/v1/rollouts/r-20261121-1", headers=bearer(site.viewer_token)).get_json()
    assert [(s["node"], s["duration_seconds"]) for s in api["steps"]] == [("node2", 97.0), ("node1", 97.0)]
    log = client.get(
        "/api/v1/rollouts/r-20261121-1/log?after=-1", headers=bearer(site.viewer_token)
    ).get_json()
    assert log["lines"][0]["text"].startswith("TASK")


def test_the_audit_page_lists_who_did_what_from_where(site: Site) -> None:
    client = site.client()
    login(client, "olga")
    page = client.get("/audit").get_data(as_text=True)
    assert "192.0.2.10" in page
    assert "login" in page


# --- secrets stay out of logs and answers ------------------------------------------------------------------


def test_an_unexpected_error_answers_500_without_details_and_logs_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_password = "pg-password-" + secrets.token_hex(8)
    redis_password = "redis-password-" + secrets.token_hex(8)
    config = ServiceConfig(
        home=tmp_path,
        secret_key=secrets.token_bytes(32),
        database_url=f"postgresql+psycopg://corral:{db_password}@db.invalid/corral",
        redis_url=f"redis://:{redis_password}@127.0.0.1:6379/0",
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'updater.db'}")
    migrate(engine)
    app = create_app(config, engine=engine)  # puts its redaction filter on the root logger's handlers
    assert app.extensions["corral"].redactor in caplog.handler.filters

    def broken() -> str:
        raise RuntimeError(f"cannot reach postgresql://corral:{db_password}@db and redis :{redis_password}")

    app.add_url_rule("/api/v1/broken", "broken", public(broken))
    app.add_url_rule("/broken", "broken_page", public(broken))
    client = app.test_client()
    caplog.set_level("ERROR")
    answer = client.get("/api/v1/broken")
    page = client.get("/broken")
    assert answer.status_code == 500
    assert answer.get_json()["error"]["message"] == "internal error; the service log has the details"
    assert page.status_code == 500
    for text in [answer.get_data(as_text=True), page.get_data(as_text=True), caplog.text]:
        assert db_password not in text
        assert redis_password not in text
    assert "cannot reach postgresql://corral:[REDACTED]@db" in caplog.text
    engine.dispose()


def test_overview_reads_an_ansible_inventory_file_through_ansible_inventory(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n    nodes:\n      hosts:\n"
        "        n1: {corral_address: 10.99.1.1, corral_site: east}\n"
        "        n2: {corral_address: 10.99.1.2, corral_site: west}\n"
        "        n3: {corral_address: 10.99.1.3, corral_site: west}\n"
    )
    site = make_site(tmp_path, inventory_path=str(inventory))
    status = site.client().get("/api/v1/status", headers=bearer(site.viewer_token)).get_json()
    assert status["problems"] == []
    assert [(n["name"], n["site"], n["address"], n["state"]) for n in status["nodes"]] == [
        ("n1", "east", "10.99.1.1", "unknown"),
        ("n2", "west", "10.99.1.2", "unknown"),
        ("n3", "west", "10.99.1.3", "unknown"),
    ]
    inventory.write_text("all: [this is not an inventory\n")
    broken = site.client().get("/api/v1/status", headers=bearer(site.viewer_token)).get_json()
    assert broken["nodes"] == []
    assert broken["problems"][0].startswith("inventory: ansible-inventory could not read the inventory")


def test_an_id_beyond_what_the_database_holds_is_a_bad_request_not_a_crash(site: Site) -> None:
    """Found by the API fuzzing: a 20-digit `before` overflowed SQLite's integer and answered 500."""
    client = site.client()
    huge = str(2**64)
    for url in (
        f"/api/v1/audit?before={huge}",
        f"/api/v1/rollouts/x/log?after={huge}",
        "/api/v1/audit?limit=x",
    ):
        response = client.get(url, headers=bearer(site.operator_token))
        assert response.status_code == 400, (url, response.get_data(as_text=True))
        assert "must be a whole number" in response.get_data(as_text=True)


def test_a_405_names_the_methods_allowed_in_its_allow_header(site: Site) -> None:
    client = site.client()
    api = client.delete("/api/v1/users", headers=bearer(site.operator_token))
    assert api.status_code == 405
    assert set(api.headers["Allow"].split(", ")) >= {"GET", "POST"}
    page = client.put("/login")
    assert page.status_code == 405
    assert set(page.headers["Allow"].split(", ")) >= {"GET", "POST"}


def test_a_throttled_login_says_when_to_retry_in_its_retry_after_header(site: Site) -> None:
    client = site.client()
    for _ in range(3):
        login(client, "olga", "not the password")
    throttled = login(client, "olga")
    assert throttled.status_code == 429
    lockout = site.app.extensions["corral"].config.login_lockout_seconds
    assert 1 <= int(throttled.headers["Retry-After"]) <= lockout
