"""Sessions the server can end (issue 17 item 3): a copy of the session cookie signs nobody in once its
session was ended by sign-out, a password reset or disabling the user. Flask's test client on a real SQLite
store; the integration tier does the same against the served service (test_web_sessions_tokens.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.unit.test_web import Site, csrf_from, login, make_site
from tests.unit.test_web_cli import login_works, password_from, run
from updater.services.accounts import users
from updater.store import queries as q
from updater.store.db import transaction
from updater.store.models import WebSession

COOKIE = "corral_session"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = make_site(tmp_path)
    yield made
    made.app.extensions["corral"].engine.dispose()


def _copy_of(site: Site, client: FlaskClient) -> FlaskClient:
    """Another browser holding a copy of ``client``'s session cookie (what a thief would have)."""
    cookie = client.get_cookie(COOKIE, domain="localhost")
    assert cookie is not None
    thief = site.client()
    thief.set_cookie(COOKIE, cookie.value, domain="localhost")
    return thief


def _signed_in(client: FlaskClient) -> bool:
    response = client.get("/history")
    assert response.status_code in (200, 302)
    return response.status_code == 200


def _live_sessions(site: Site) -> int:
    with transaction(site.sessions) as db:
        return len(db.query(WebSession).all())


def test_a_copy_of_the_session_cookie_taken_before_sign_out_no_longer_works(site: Site) -> None:
    browser = site.client()
    login(browser, "vera")
    thief = _copy_of(site, browser)
    assert _signed_in(thief)
    assert browser.post("/logout", data={"csrf_token": csrf_from(browser, "/")}).status_code == 302
    assert not _signed_in(thief)
    assert thief.get("/history").headers["Location"] == "/login?next=/history"
    assert _live_sessions(site) == 0


def test_signing_out_ends_only_that_session(site: Site) -> None:
    laptop, desk = site.client(), site.client()
    login(laptop, "vera")
    login(desk, "vera")
    assert laptop.post("/logout", data={"csrf_token": csrf_from(laptop, "/")}).status_code == 302
    assert not _signed_in(laptop)
    assert _signed_in(desk)


def test_disabling_a_user_ends_their_sessions_for_good(site: Site) -> None:
    """Enabling the user again does not bring a copied cookie back: the sessions ended when disabled."""
    browser = site.client()
    login(browser, "vera")
    thief = _copy_of(site, browser)
    with transaction(site.sessions) as db:
        users.set_disabled(db, users.Actor("olga"), "vera", disabled=True)
    with transaction(site.sessions) as db:
        users.set_disabled(db, users.Actor("olga"), "vera", disabled=False)
    assert not _signed_in(thief)
    assert not _signed_in(browser)
    login(browser, "vera")
    assert _signed_in(browser)


def test_disabling_a_user_through_the_ui_ends_their_sessions(site: Site) -> None:
    vera, olga = site.client(), site.client()
    login(vera, "vera")
    login(olga, "olga")
    response = olga.post("/users/vera/disable", data={"csrf_token": csrf_from(olga, "/users")})
    assert response.status_code == 302
    with transaction(site.sessions) as db:
        assert q.get_user(db, "vera").disabled
    olga.post("/users/vera/enable", data={"csrf_token": csrf_from(olga, "/users")})
    assert not _signed_in(vera)
    assert _signed_in(olga)


def test_a_password_reset_ends_the_users_sessions(site: Site) -> None:
    browser, other = site.client(), site.client()
    login(browser, "olga")
    login(other, "vera")
    with transaction(site.sessions) as db:
        password = users.set_up_admin(db, users.Actor("cli:root"), "olga", reset=True)
    assert not _signed_in(browser)
    assert _signed_in(other)
    login(browser, "olga", password)
    assert _signed_in(browser)


def test_a_signed_cookie_without_a_server_side_session_signs_nobody_in(site: Site) -> None:
    """A cookie signed with the service's key but naming no live session (one made before sessions were
    kept on the server, or a forged session id) is treated as no sign-in at all."""
    browser = site.client()
    login(browser, "olga")
    with browser.session_transaction() as cookie:
        cookie["sid"] = "not-a-session-of-this-service"
    assert not _signed_in(browser)
    login(browser, "olga")
    with browser.session_transaction() as cookie:
        del cookie["sid"]
    assert not _signed_in(browser)


def test_a_session_names_its_user_and_no_other(site: Site) -> None:
    """The cookie's user id must be its session's user: vera's session id under olga's id is no sign-in."""
    browser = site.client()
    login(browser, "vera")
    with transaction(site.sessions) as db:
        olga_id = q.get_user(db, "olga").id
    with browser.session_transaction() as cookie:
        cookie["uid"] = olga_id
    assert not _signed_in(browser)


def test_sessions_past_their_lifetime_are_removed_at_the_next_sign_in(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    first = site.client()
    login(first, "vera")
    assert _live_sessions(site) == 1
    with transaction(site.sessions) as db:
        for record in db.query(WebSession).all():
            record.expires_at = record.created_at  # ended by the clock
    login(site.client(), "olga")
    assert _live_sessions(site) == 1
    site.app.extensions["corral"].engine.dispose()


def test_resetting_a_users_password_ends_their_sessions_and_the_old_password(site: Site) -> None:
    vera, olga = site.client(), site.client()
    login(vera, "vera")
    login(olga, "olga")
    with transaction(site.sessions) as db:
        password = users.reset_password(db, users.Actor("cli:root"), "vera")
    assert not _signed_in(vera)
    assert _signed_in(olga)
    assert login(vera, "vera").status_code == 401  # the old password
    login(vera, "vera", password)
    assert _signed_in(vera)
    assert [(e.actor, e.action, e.target) for e in site.audit() if e.action == "user.password_reset"] == [
        ("cli:root", "user.password_reset", "vera")
    ]


def test_corral_updater_user_reset_password_prints_a_new_password_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    code, out, _ = run(home, "init", "--bind", "127.0.0.1:18443", capsys=capsys)
    assert code == 0
    old = password_from(out)
    code, out, _ = run(home, "user", "reset-password", "admin", capsys=capsys)
    assert code == 0
    new = out.split("new password ")[1].split()[0]
    assert login_works(home, "admin", new)
    assert not login_works(home, "admin", old)
    assert run(home, "user", "reset-password", "nobody", capsys=capsys)[0] == 2
