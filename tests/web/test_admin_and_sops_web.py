"""Admin user screens and master record screens through the Flask test client."""

from __future__ import annotations

import shutil

import sqlalchemy as sa

from mfg.extensions import db
from mfg.models import AuditEntry, Signature, SopVersion, User, UserSession
from mfg.services import accounts
from tests.support import DEMO_SOP, PASSWORD


def _user(app, username):
    with app.app_context():
        return db.session.scalar(sa.select(User).where(User.username == username))


def test_admin_creates_user_with_temporary_password(app, client, make_user, login):
    make_user("adam", "admin")
    login("adam")
    response = client.post("/admin/users/new", data={"username": "nina", "full_name": "Nina New",
                                                     "roles": ["operator", "clinical"],
                                                     "password": "temporary-secret-1"})
    assert response.status_code == 302
    nina = _user(app, "nina")
    # signing roles wait for a second person (the two-person rule), the password is not yet nina's own
    assert nina.roles == "" and nina.must_change_password and not nina.password_set_by_self
    with app.app_context():
        assert sorted(g.role for g in accounts.pending_grants(db.session)) == ["clinical", "operator"]
    bad = client.post("/admin/users/new", data={"username": "x", "full_name": "X", "roles": [],
                                                "password": "short"})
    assert bad.status_code == 200 and "Pick at least one role." in bad.get_data(as_text=True)


def test_admin_unlocks_resets_and_deactivates_with_reasons(app, client, make_user, login):
    make_user("adam", "admin")
    make_user("olivia")
    for _ in range(5):
        app.test_client().post("/auth/login", data={"username": "olivia", "password": "wrong-password"})
    olivia = _user(app, "olivia")
    assert olivia.locked
    login("adam")
    no_reason = client.post(f"/admin/users/{olivia.id}/unlock", data={"unlock-reason": ""})
    assert no_reason.status_code == 400 and _user(app, "olivia").locked
    assert client.post(f"/admin/users/{olivia.id}/unlock",
                       data={"unlock-reason": "called the help desk"}).status_code == 302
    assert not _user(app, "olivia").locked
    client.post(f"/admin/users/{olivia.id}/reset", data={"reset-password": "temporary-secret-2",
                                                         "reset-reason": "forgotten"})
    assert _user(app, "olivia").must_change_password
    client.post(f"/admin/users/{olivia.id}/deactivate", data={"deactivate-reason": "left the site"})
    assert not _user(app, "olivia").active
    with app.app_context():
        reasons = set(db.session.scalars(sa.select(AuditEntry.reason).where(AuditEntry.username == "adam")))
    assert {"called the help desk", "forgotten", "left the site"} <= reasons
    page = client.get("/admin/users").get_data(as_text=True)
    assert "inactive" in page


def test_admin_cannot_deactivate_themselves(app, client, make_user, login):
    adam = make_user("adam", "admin")
    login("adam")
    response = client.post(f"/admin/users/{adam.id}/deactivate", data={"deactivate-reason": "oops"})
    assert response.status_code == 400 and "your own account" in response.get_data(as_text=True)


def test_load_and_approve_through_the_screens(app, client, make_user, login):
    make_user("loader", "qa")
    make_user("approver", "qa", full_name="Ann Approver")
    shutil.copy(DEMO_SOP, app.config["SOPS_DIR"])
    login("loader")
    client.post("/sops/load")
    with app.app_context():
        version = db.session.scalar(sa.select(SopVersion))
    page = client.get(f"/sops/{version.id}").get_data(as_text=True)
    assert "draft" in page and "Sign: Approved by" not in page  # the loader is not offered the dialog
    assert client.post(f"/sops/{version.id}/approve", data={"username": "loader", "password": PASSWORD}
                       ).status_code == 400  # and the service refuses it anyway
    client.post("/auth/logout")

    login("approver")
    page = client.get(f"/sops/{version.id}").get_data(as_text=True)
    assert "Sign: Approved by" in page and 'name="username"' in page  # first signature: user name asked
    wrong = client.post(f"/sops/{version.id}/approve", data={"username": "approver", "password": "nope"})
    assert wrong.status_code == 400 and "not correct" in wrong.get_data(as_text=True)
    ok = client.post(f"/sops/{version.id}/approve", data={"username": "approver", "password": PASSWORD,
                                                          "comment": "fit for use"})
    assert ok.status_code == 302
    page = client.get(f"/sops/{version.id}").get_data(as_text=True)
    assert "effective" in page and "Approved by" in page and "Ann Approver" in page
    with app.app_context():
        actions = list(db.session.scalars(sa.select(AuditEntry.action)))
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Signature)) == 1
    assert "signature.failure" in actions and "signature.create" in actions


def test_signing_dialog_asks_only_the_password_after_the_first_signature(app, client, make_user, login):
    make_user("loader", "qa")
    make_user("approver", "qa")
    shutil.copy(DEMO_SOP, app.config["SOPS_DIR"])
    login("loader")
    client.post("/sops/load")
    client.post("/auth/logout")
    login("approver")
    with app.app_context():  # this session has signed before (21 CFR 11.200: the password alone from now on)
        db.session.execute(sa.update(UserSession).where(UserSession.ended_at.is_(None)).values(has_signed=True))
        db.session.commit()
    with app.app_context():
        version = db.session.scalar(sa.select(SopVersion))
    assert 'name="username"' not in client.get(f"/sops/{version.id}").get_data(as_text=True)
    assert client.post(f"/sops/{version.id}/approve", data={"password": PASSWORD}).status_code == 302


def test_audit_screen_filters_and_pages(app, client, make_user, login):
    make_user("quinn", "qa")
    for i in range(60):
        make_user(f"user{i:02d}")
    login("quinn")
    first = client.get("/audit/?action=user_account.create").get_data(as_text=True)
    assert "Older entries" in first and first.count('<td class="what">User account recorded</td>') == 50
    older = client.get("/audit/?action=user_account.create&before=12").get_data(as_text=True)
    assert "Older entries" not in older
    only = client.get("/audit/?username=quinn&action=login").get_data(as_text=True)
    assert '<td class="what">Login success</td>' in only and '<td class="what">User account recorded' not in only
    bad_date = client.get("/audit/?since=not-a-date")
    assert bad_date.status_code == 200 and "Not a valid date" in bad_date.get_data(as_text=True)
