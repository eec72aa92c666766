"""Sign-in, generic failures, lockout, idle timeout, forced password change, safe redirects."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from mfg.extensions import db
from mfg.models import AuditEntry, UserSession, utcnow
from mfg.web.security import safe_next
from tests.support import PASSWORD


def _age_sessions(app, *, idle=timedelta(0), started=timedelta(0)):
    """Move every current session's last activity (and start) back in time, as if that long had passed."""
    with app.app_context():
        for row in db.session.scalars(sa.select(UserSession).where(UserSession.ended_at.is_(None))):
            row.last_seen_at -= idle
            row.started_at -= started
        db.session.commit()


def _last_seen(app):
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.max(UserSession.last_seen_at)))


def _actions(app):
    with app.app_context():
        return list(db.session.scalars(sa.select(AuditEntry.action).order_by(AuditEntry.seq)))


def test_login_and_logout_are_audited(app, client, make_user, login):
    make_user("olivia")
    assert login("olivia").status_code == 302
    assert client.get("/").status_code == 200
    assert client.post("/auth/logout").status_code == 302
    assert client.get("/").status_code == 302
    assert _actions(app)[-3:] == ["user_account.update", "login.success", "logout"]
    with app.app_context():
        users = list(db.session.scalars(sa.select(AuditEntry.username).order_by(AuditEntry.seq)))
    assert users[-3:] == ["olivia", "olivia", "olivia"]  # the sign-in's own update is attributed too


@pytest.mark.parametrize("username,password", [("olivia", "wrong-password!"), ("nobody", PASSWORD)])
def test_every_login_failure_gets_the_same_message(client, make_user, login, username, password):
    make_user("olivia")
    response = login(username, password)
    assert response.status_code == 401
    assert "Invalid user name or password." in response.get_data(as_text=True)


def test_lockout_through_the_login_screen(app_factory, make_user):
    app = app_factory(SIGNIN_LIMIT_PER_ACCOUNT="50 per minute")  # the lock, not the throttle, refuses here
    client = app.test_client()

    def login(username, password=PASSWORD):
        return client.post("/auth/login", data={"username": username, "password": password})

    make_user("olivia")
    for _ in range(5):
        assert login("olivia", "wrong-password!").status_code == 401
    response = login("olivia")  # right password, locked account: same generic message
    assert response.status_code == 401 and "Invalid user name or password." in response.get_data(as_text=True)
    assert _actions(app).count("login.failure") == 6 and "account.locked" in _actions(app)


def test_idle_timeout_ends_the_session_and_is_audited(app, client, make_user, login):
    make_user("olivia")
    login("olivia")
    assert client.get("/").status_code == 200
    _age_sessions(app, idle=timedelta(minutes=16))
    response = client.get("/sops/")
    assert response.status_code == 302 and "/auth/login" in response.location
    assert _actions(app)[-1] == "session.timeout"
    assert client.get("/").status_code == 302


def test_idle_timeout_is_configurable(app_factory, make_user):
    app = app_factory(IDLE_TIMEOUT_MINUTES=1)
    client = app.test_client()
    make_user("olivia")
    client.post("/auth/login", data={"username": "olivia", "password": PASSWORD})
    _age_sessions(app, idle=timedelta(seconds=90))
    assert client.get("/").status_code == 302


def test_active_use_keeps_the_session(app, client, make_user, login):
    make_user("olivia")
    login("olivia")
    _age_sessions(app, idle=timedelta(minutes=14))
    assert client.get("/").status_code == 200


def test_keep_alive_refreshes_the_session_and_records_nothing(app, client, make_user, login):
    """"Stay signed in" (mfg/static/session.js): a POST that refreshes the session's last activity."""
    make_user("olivia")
    login("olivia")
    _age_sessions(app, idle=timedelta(minutes=14))
    before = _actions(app)
    response = client.post("/auth/keep-alive")
    assert response.status_code == 200 and response.get_json()["signed_in"] is True
    assert utcnow() - _last_seen(app) < timedelta(seconds=60)
    assert _actions(app) == before
    _age_sessions(app, idle=timedelta(minutes=16))
    ended = client.post("/auth/keep-alive")  # too late: the session ended, the sign-in page instead
    assert ended.status_code == 302 and "/auth/login" in ended.location
    assert _actions(app)[-1] == "session.timeout"


def test_a_form_sent_after_the_idle_timeout_returns_to_its_page_after_sign_in(app, client, make_user, login):
    make_user("olivia")
    login("olivia")
    _age_sessions(app, idle=timedelta(minutes=16))
    response = client.post("/batches/start", headers={"Referer": "http://localhost/batches/7/step/0/identify_bag/1"})
    assert response.status_code == 302
    assert response.location.endswith("/auth/login?next=/batches/7/step/0/identify_bag/1")
    login("olivia")
    _age_sessions(app, idle=timedelta(minutes=16))
    elsewhere = client.post("/batches/start", headers={"Referer": "http://evil.example/batches/7"})
    assert elsewhere.status_code == 302 and elsewhere.location.endswith("/auth/login")  # another site: no next


def test_temporary_password_forces_a_change_before_anything_else(client, make_user, login):
    make_user("tess", "qa", temporary=True)
    response = login("tess")
    assert response.location.endswith("/auth/password")
    assert client.get("/sops/").location.endswith("/auth/password")
    bad = client.post("/auth/password", data={"current": PASSWORD, "new": "short", "confirm": "short"})
    assert "at least 12" in bad.get_data(as_text=True)
    ok = client.post("/auth/password", data={"current": PASSWORD, "new": "my-own-new-secret",
                                             "confirm": "my-own-new-secret"})
    assert ok.status_code == 302
    assert client.get("/sops/").status_code == 200


def test_a_password_change_ends_other_sessions(app, make_user):
    make_user("olivia")
    first, second = app.test_client(), app.test_client()
    for c in (first, second):
        c.post("/auth/login", data={"username": "olivia", "password": PASSWORD})
    first.post("/auth/password", data={"current": PASSWORD, "new": "another-secret-9",
                                       "confirm": "another-secret-9"})
    assert first.get("/").status_code == 200
    assert second.get("/").status_code == 302


@pytest.mark.parametrize("target,expected", [
    ("/sops/", "/sops/"),
    ("/audit/?action=login", "/audit/?action=login"),
    ("https://evil.example/", None),
    ("//evil.example/x", None),
    ("/\\evil.example", None),
    ("javascript:alert(1)", None),
    ("evil.example", None),
    ("", None),
])
def test_safe_next(target, expected):
    assert safe_next(target) == expected


def test_login_next_never_leaves_the_site(client, make_user):
    make_user("olivia")
    response = client.post("/auth/login?next=https://evil.example/",
                           data={"username": "olivia", "password": PASSWORD})
    assert response.location == "/"
    client.post("/auth/logout")
    response = client.post("/auth/login?next=/sops/", data={"username": "olivia", "password": PASSWORD})
    assert response.location == "/sops/"
