"""Ending sessions and revoking API tokens on the served service (issue 17 items 2 and 3): ``corral-updater
web`` (gunicorn over HTTPS) from a home made by ``corral-updater init``, driven with plain HTTP clients and
the CLI as an operator would. A copy of a session cookie stops working once its session is ended (sign-out,
user disabled), and a revoked token is refused at its next request, whichever process revoked it."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.redis_server import RedisServer
from tests.support.service_stack import CLI, ROOT, Service, init_service, service_env

COOKIE = "corral_session"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _inventory(path: Path) -> Path:
    hostvars = {f"node{i}": {"corral_address": f"10.99.0.{10 + i}"} for i in (1, 2)}
    path.write_text(
        json.dumps(
            {
                "_meta": {"hostvars": hostvars},
                "all": {"children": ["nodes"]},
                "nodes": {"hosts": list(hostvars)},
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def service(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("sessions-tokens")
    made = init_service(root, redis_url=redis.url, inventory=_inventory(root / "inventory.json"))
    try:
        made.start_web()
        yield made
    finally:
        made.close()


def _cli(service: Service, *args: str) -> str:
    result = subprocess.run(
        [CLI, "--home", str(service.home), *args],
        capture_output=True, text=True, check=False, env=service_env(), cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


class Browser:
    """A signed-in browser: a cookie jar, and the session cookie a thief could copy from it."""

    def __init__(self, service: Service, username: str, password: str) -> None:
        self.service = service
        self.http = requests.Session()
        self.ca = str(
            service.config.cert_path
        )  # per request: a CA bundle in the environment beats Session.verify
        page = self.get("/login")
        signed_in = self.http.post(
            f"{service.base}/login",
            data={"username": username, "password": password, "csrf_token": _csrf(page.text)},
            allow_redirects=False,
            timeout=30,
            verify=self.ca,
        )
        assert signed_in.status_code == 302, signed_in.text
        cookie = self.http.cookies.get(COOKIE)
        assert cookie is not None
        self.cookie: str = cookie

    def get(self, path: str) -> requests.Response:
        return self.http.get(f"{self.service.base}{path}", allow_redirects=False, timeout=30, verify=self.ca)

    def sign_out(self) -> None:
        token = _csrf(self.get("/").text)
        response = self.http.post(
            f"{self.service.base}/logout",
            data={"csrf_token": token},
            allow_redirects=False,
            timeout=30,
            verify=self.ca,
        )
        assert response.status_code == 302


def _csrf(page: str) -> str:
    match = CSRF.search(page)
    assert match, page[:500]
    return match.group(1)


def _with_cookie(service: Service, cookie: str, path: str = "/history") -> int:
    """The status of ``path`` for whoever sends ``cookie`` (another client: a copy of the cookie)."""
    return requests.get(
        f"{service.base}{path}",
        headers={"Cookie": f"{COOKIE}={cookie}"},
        allow_redirects=False,
        timeout=30,
        verify=str(service.config.cert_path),
    ).status_code


def _whoami(service: Service, token: str) -> int:
    return requests.get(
        f"{service.base}/api/v1/whoami",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        verify=str(service.config.cert_path),
    ).status_code


def test_a_session_cookie_copied_before_sign_out_is_refused_after_it(service: Service) -> None:
    browser = Browser(service, "admin", service.password)
    assert _with_cookie(service, browser.cookie) == 200
    browser.sign_out()
    assert _with_cookie(service, browser.cookie) == 302
    assert browser.get("/history").status_code == 302


def test_disabling_a_user_ends_their_sessions_even_once_enabled_again(service: Service) -> None:
    added = _cli(service, "user", "add", "vera", "--role", "viewer")
    password = re.search(r"password: (\S+)", added)
    assert password is not None
    vera = Browser(service, "vera", password.group(1))
    assert _with_cookie(service, vera.cookie) == 200
    token = service.create_token("sessions")
    for action in ("disable", "enable"):
        response = requests.post(
            f"{service.base}/api/v1/users/vera/{action}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            verify=str(service.config.cert_path),
        )
        assert response.status_code == 200, response.text
    assert _with_cookie(service, vera.cookie) == 302


def test_a_token_revoked_from_the_cli_is_refused_by_the_running_service_at_once(service: Service) -> None:
    token = service.create_token("ci")
    assert _whoami(service, token) == 200
    token_id = token.split("_")[1]
    assert token_id in _cli(service, "token", "list", "admin")
    _cli(service, "token", "revoke", "admin", token_id)
    assert _whoami(service, token) == 401


def test_a_token_revoked_through_the_api_is_refused_at_once_and_the_revoke_is_audited(
    service: Service,
) -> None:
    operator, leaked = service.create_token("operator"), service.create_token("leaked")
    assert _whoami(service, leaked) == 200
    token_id = leaked.split("_")[1]
    response = requests.post(
        f"{service.base}/api/v1/users/admin/tokens/{token_id}/revoke",
        headers={"Authorization": f"Bearer {operator}"},
        timeout=30,
        verify=str(service.config.cert_path),
    )
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "revoked"
    assert _whoami(service, leaked) == 401
    assert _whoami(service, operator) == 200
    assert ("admin", "token.revoke", "admin", "ok") in service.audit()
