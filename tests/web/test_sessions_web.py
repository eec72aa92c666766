"""Issue [3.6] items 2 and 3 through the web: server-side sessions (sign-out ends every copy of the cookie, an
absolute lifetime, the id rotates at sign-in, an administrator's action ends the account's sessions at once,
HSTS) and sign-in throttling per account and per address."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from mfg.extensions import db
from mfg.models import AuditEntry, UserSession
from tests.support import PASSWORD

COOKIE = "mfg_session"


def _copy(client, app):
    """A second browser holding a copy of ``client``'s session cookie (as someone who copied it would)."""
    thief = app.test_client()
    thief.set_cookie(COOKIE, client.get_cookie(COOKIE).value)
    return thief


def _rows(app):
    with app.app_context():
        return [(r.user_id, r.end_reason) for r in db.session.scalars(sa.select(UserSession).order_by(UserSession.id))]


def _actions(app):
    with app.app_context():
        return list(db.session.scalars(sa.select(AuditEntry.action).order_by(AuditEntry.seq)))


def test_a_copied_cookie_stops_working_at_sign_out(app, client, make_user, login):
    make_user("olivia")
    login("olivia")
    thief = _copy(client, app)
    assert thief.get("/").status_code == 200  # the copy works while the session lasts
    client.post("/auth/logout")
    response = thief.get("/")
    assert response.status_code == 302 and "/auth/login" in response.location
    assert _rows(app)[-1][1] == "logout"


def test_a_session_ends_at_its_absolute_lifetime_however_active(app_factory, make_user):
    app = app_factory(SESSION_LIFETIME_HOURS=12)
    client = app.test_client()
    make_user("olivia")
    client.post("/auth/login", data={"username": "olivia", "password": PASSWORD})
    with app.app_context():
        for row in db.session.scalars(sa.select(UserSession)):
            row.started_at -= timedelta(hours=12, minutes=1)
        db.session.commit()
    response = client.get("/")  # active a moment ago: only the lifetime ends it
    assert response.status_code == 302 and "/auth/login" in response.location
    assert _actions(app)[-1] == "session.lifetime" and _rows(app)[-1][1] == "lifetime"
    client.post("/auth/login", data={"username": "olivia", "password": PASSWORD})
    assert client.get("/").status_code == 200


def test_the_session_id_rotates_at_sign_in(app, client, make_user, login):
    make_user("olivia")
    with client.session_transaction() as s:  # a token planted before sign-in (session fixation)
        s["session_token"] = "planted-by-someone-else"
    login("olivia")
    with client.session_transaction() as s:
        first = s["session_token"]
    assert first != "planted-by-someone-else"
    client.post("/auth/logout")
    login("olivia")
    with client.session_transaction() as s:
        assert s["session_token"] != first
    assert [reason for _, reason in _rows(app)] == ["logout", None]


def test_an_administrators_reset_or_deactivation_ends_the_users_sessions_at_once(app, make_user):
    make_user("adam", "admin")
    olivia = make_user("olivia")
    user_browser, admin_browser = app.test_client(), app.test_client()
    user_browser.post("/auth/login", data={"username": "olivia", "password": PASSWORD})
    admin_browser.post("/auth/login", data={"username": "adam", "password": PASSWORD})
    assert user_browser.get("/").status_code == 200
    admin_browser.post(f"/admin/users/{olivia.id}/reset", data={
        "reset-password": "temporary-secret-7", "reset-reason": "forgotten, identity checked in person"})
    assert user_browser.get("/").status_code == 302
    assert (olivia.id, "password_reset") in _rows(app)
    user_browser.post("/auth/login", data={"username": "olivia", "password": "temporary-secret-7"})
    admin_browser.post(f"/admin/users/{olivia.id}/deactivate", data={"deactivate-reason": "left the company"})
    assert user_browser.get("/auth/password").status_code == 302
    assert (olivia.id, "deactivated") in _rows(app)


def test_hsts_only_when_the_cookie_is_secure(app_factory):
    assert "Strict-Transport-Security" not in app_factory().test_client().get("/auth/login").headers
    secure = app_factory(SESSION_COOKIE_SECURE=True).test_client().get("/auth/login")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_failed_sign_ins_are_throttled_per_account_known_or_not(app, client, make_user, login):
    make_user("olivia")
    for username in ("olivia", "nobody"):
        for _ in range(5):
            assert login(username, "wrong-password!").status_code == 401
        refused = login(username, PASSWORD)  # the right password of a known account: refused all the same
        assert refused.status_code == 429 and "Too many failed sign-ins" in refused.get_data(as_text=True)
    assert _actions(app).count("login.throttled") == 2
    make_user("paula")
    assert login("paula").status_code == 302  # another account from the same address is not held back


def test_failed_sign_ins_are_throttled_per_address(app_factory, make_user):
    app = app_factory(SIGNIN_LIMIT_PER_ADDRESS="6 per 15 minutes")
    make_user("olivia")
    here = app.test_client()
    for i in range(6):  # six names, one try each: no account reaches its own limit
        assert here.post("/auth/login", data={"username": f"guess{i}", "password": "x" * 12}).status_code == 401
    refused = here.post("/auth/login", data={"username": "olivia", "password": PASSWORD})
    assert refused.status_code == 429
    elsewhere = app.test_client()
    ok = elsewhere.post("/auth/login", data={"username": "olivia", "password": PASSWORD},
                        environ_base={"REMOTE_ADDR": "10.0.0.7"})
    assert ok.status_code == 302


def test_behind_a_proxy_each_client_is_throttled_by_its_own_address(app_factory, make_user):
    app = app_factory(SIGNIN_LIMIT_PER_ADDRESS="2 per 15 minutes", TRUSTED_PROXIES=1)
    make_user("olivia")
    proxy = app.test_client()  # every request comes from the proxy's own address, 127.0.0.1

    def sign_in(client_address, username, password):
        return proxy.post("/auth/login", data={"username": username, "password": password},
                          headers={"X-Forwarded-For": client_address}).status_code

    assert [sign_in("10.0.0.5", f"guess{i}", "x" * 12) for i in range(2)] == [401, 401]
    assert sign_in("10.0.0.5", "olivia", PASSWORD) == 429
    assert sign_in("10.0.0.6", "olivia", PASSWORD) == 302
