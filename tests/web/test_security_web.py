"""CSRF, role checks on every admin and QA route, security headers, cookies, error pages."""

from __future__ import annotations

import re

import pytest

from tests.support import PASSWORD

ADMIN_ROUTES = [("get", "/admin/users"), ("get", "/admin/users/new"), ("post", "/admin/users/new"),
                ("get", "/admin/users/1"), ("post", "/admin/users/1/unlock"), ("post", "/admin/users/1/reset"),
                ("post", "/admin/users/1/deactivate"), ("post", "/admin/users/1/edit")]
QA_ROUTES = [("get", "/audit/"), ("post", "/sops/load"), ("post", "/sops/1/approve")]


@pytest.fixture
def users(make_user):
    return {role: make_user(f"{role}user", role) for role in ("operator", "qa", "clinical", "admin")}


@pytest.mark.parametrize("method,path", ADMIN_ROUTES)
@pytest.mark.parametrize("role", ["operator", "qa", "clinical"])
def test_admin_routes_refuse_other_roles(client, users, login, method, path, role):
    login(f"{role}user")
    response = getattr(client, method)(path)
    assert response.status_code == 403
    assert "Not permitted" in response.get_data(as_text=True)


@pytest.mark.parametrize("method,path", QA_ROUTES)
@pytest.mark.parametrize("role", ["operator", "clinical"])
def test_qa_routes_refuse_other_roles(client, users, login, method, path, role):
    login(f"{role}user")
    assert getattr(client, method)(path).status_code == 403


@pytest.mark.parametrize("method,path", [("post", "/sops/load"), ("post", "/sops/1/approve")])
def test_admin_cannot_act_as_qa(client, users, login, method, path):
    login("adminuser")
    assert getattr(client, method)(path).status_code == 403


@pytest.mark.parametrize("path", ["/", "/sops/", "/audit/", "/admin/users"])
def test_anonymous_users_are_sent_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302 and "/auth/login" in response.location


def test_allowed_roles_reach_their_screens(client, users, login):
    login("adminuser")
    assert client.get("/admin/users").status_code == 200
    assert client.get("/audit/").status_code == 200
    client.post("/auth/logout")
    login("qauser")
    assert client.get("/audit/").status_code == 200


def test_csrf_is_required_on_every_form(app_factory, make_user):
    app = app_factory(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    make_user("olivia")
    response = client.post("/auth/login", data={"username": "olivia", "password": PASSWORD})
    assert response.status_code == 400 and "security token" in response.get_data(as_text=True)
    page = client.get("/auth/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    ok = client.post("/auth/login", data={"username": "olivia", "password": PASSWORD, "csrf_token": token})
    assert ok.status_code == 302
    assert client.post("/auth/logout").status_code == 400  # sign-out is a form too


def test_security_headers_and_cookie_flags(client, make_user, login):
    make_user("olivia")
    response = login("olivia")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    page = client.get("/")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'self'" in csp
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    html = page.get_data(as_text=True)
    scripts = re.findall(r"<script[^>]*>", html)  # no inline script: only the site's own files
    assert '<script src="/static/app.js" defer>' in scripts
    # every script deferred but once.js, which must listen for a form's submission before any form exists
    assert all(re.fullmatch(r'<script src="/static/[\w-]+\.js" defer>', tag) for tag in scripts
               if tag != '<script src="/static/once.js">'), scripts
    assert '<script src="/static/once.js">' in scripts
    assert "</script>" in html and "style=" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # no off-site assets
    css = client.get("/static/app.css")
    assert css.status_code == 200 and b"demo-banner" in css.data
    css.close()


def test_secure_cookie_is_configurable(app_factory, make_user):
    app = app_factory(SESSION_COOKIE_SECURE=True)
    make_user("olivia")
    response = app.test_client().post("/auth/login", data={"username": "olivia", "password": PASSWORD})
    assert "Secure" in response.headers["Set-Cookie"]


def test_demo_banner_on_every_page(app_factory):
    app = app_factory(DEMO=True)
    assert "DEMO INSTANCE" in app.test_client().get("/auth/login").get_data(as_text=True)
    plain = app_factory(DEMO=False)
    assert "DEMO INSTANCE" not in plain.test_client().get("/auth/login").get_data(as_text=True)


def test_not_found_page(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404 and "Not found" in response.get_data(as_text=True)


def test_the_audit_csv_defuses_formulas_and_its_export_is_audited(app, client, users, login):
    """A reason typed as a spreadsheet formula is written as text (a leading apostrophe); numbers are left as
    they are; the export itself is an audit entry naming who took it and how many entries it held."""
    import csv
    import io

    import sqlalchemy as sa

    from mfg.extensions import db
    from mfg.models import AuditEntry
    from mfg.services import audit

    with app.app_context():
        audit.set_actor(db.session, name="test-setup")
        audit.record_event(db.session, "test.event", reason='=HYPERLINK("http://evil","click")')
        audit.record_event(db.session, "test.event", reason="-12.5")
        db.session.commit()
    login("qauser")
    response = client.get("/audit/export.csv")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    reasons = [row["reason"] for row in rows if row["action"] == "test.event"]
    assert reasons == ["-12.5", '\'=HYPERLINK("http://evil","click")']
    assert not any(row["action"] == "audit_trail.export" for row in rows)  # not in its own file
    with app.app_context():
        exported = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "audit_trail.export")).all()
        assert [e.username for e in exported] == ["qauser"]
        assert f'"entries":{len(rows)}' in exported[0].after
        assert audit.verify(db.session).ok
