"""Separation of administration and signing (issue 19 item 1) through the screens."""

from __future__ import annotations

import shutil

import sqlalchemy as sa

from mfg.extensions import db
from mfg.models import RoleGrant, Signature, SopVersion, User
from mfg.services import accounts, audit
from tests.support import DEMO_SOP, PASSWORD


def _user(app, username):
    with app.app_context():
        return db.session.scalar(sa.select(User).where(User.username == username))


def test_an_administrator_is_not_offered_and_cannot_change_its_own_roles(app, client, make_user, login):
    adam = make_user("adam", "admin")
    olivia = make_user("olivia")
    login("adam")
    own = client.get(f"/admin/users/{adam.id}").get_data(as_text=True)
    assert 'name="edit-roles"' not in own and "You cannot change your own name or roles" in own
    assert 'name="edit-roles"' in client.get(f"/admin/users/{olivia.id}").get_data(as_text=True)
    response = client.post(f"/admin/users/{adam.id}/edit", data={
        "edit-full_name": "Adam Administrator", "edit-roles": ["admin", "qa", "operator"], "edit-reason": "more work"})
    assert response.status_code == 400 and "your own name or roles" in response.get_data(as_text=True)
    assert _user(app, "adam").roles == "admin"
    combined = client.post(f"/admin/users/{olivia.id}/edit", data={
        "edit-full_name": "Olivia Person", "edit-roles": ["admin", "operator"], "edit-reason": "helps out"})
    assert combined.status_code == 400 and "cannot be combined" in combined.get_data(as_text=True)
    assert _user(app, "olivia").roles == "operator"


def _draft(app, client, login) -> int:
    shutil.copy(DEMO_SOP, app.config["SOPS_DIR"])
    login("loader")
    client.post("/sops/load")
    client.post("/auth/logout")
    with app.app_context():
        return db.session.scalar(sa.select(SopVersion.id))


def test_a_password_set_by_an_administrator_signs_nothing_through_the_screens(app, client, make_user, login):
    make_user("loader", "qa")
    with app.app_context():  # `users create --permanent` with the two-person rule off: qa counts, no forced change
        audit.set_actor(db.session, name="cli")
        accounts.create_user(db.session, username="quinn", full_name="Quinn Quality", roles="qa", password=PASSWORD,
                             policy=accounts.Policy(two_person_grants=False), temporary=False)
        db.session.commit()
    sop_id = _draft(app, client, login)
    login("quinn")
    refused = client.post(f"/sops/{sop_id}/approve", data={"username": "quinn", "password": PASSWORD})
    assert refused.status_code == 400 and "set by an administrator" in refused.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Signature)) == 0
    assert client.post("/auth/password", data={"current": PASSWORD, "new": "a-secret-of-my-own",
                                               "confirm": "a-secret-of-my-own"}).status_code == 302
    ok = client.post(f"/sops/{sop_id}/approve", data={"username": "quinn", "password": "a-secret-of-my-own"})
    assert ok.status_code == 302
    with app.app_context():
        signature = db.session.scalars(sa.select(Signature)).one()
        assert signature.own_password is True and signature.password_set_at is not None


def test_a_signing_role_granted_on_screen_waits_for_a_second_person(app, client, make_user, login):
    make_user("adam", "admin")
    make_user("qa1", "qa")
    login("adam")
    assert client.post("/admin/users/new", data={"username": "nina", "full_name": "Nina New", "roles": ["operator"],
                                                 "password": "temporary-secret-1"}).status_code == 302
    assert _user(app, "nina").roles == ""
    with app.app_context():
        grant_id = db.session.scalar(sa.select(RoleGrant.id))
    page = client.get("/admin/grants").get_data(as_text=True)
    assert "nina" in page and "You asked for this role" in page and f"/admin/grants/{grant_id}/confirm" not in page
    assert client.post(f"/admin/grants/{grant_id}/confirm").status_code == 400
    assert _user(app, "nina").roles == ""
    client.post("/auth/logout")

    login("qa1")
    assert f"/admin/grants/{grant_id}/confirm" in client.get("/admin/grants").get_data(as_text=True)
    assert client.post(f"/admin/grants/{grant_id}/confirm").status_code == 302
    assert _user(app, "nina").roles == "operator"
    with app.app_context():
        grant = db.session.get(RoleGrant, grant_id)
        assert grant.confirmed_by_id == _user(app, "qa1").id and not grant.pending
