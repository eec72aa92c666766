"""Separation of administration and signing (issue 19 item 1), on a real database: an administrator cannot change
its own roles, no account combines admin with a signing role, a password an administrator set signs nothing and
every signature records whether the password was the signer's own, and a signing role an administrator grants
counts only once a second person confirms it."""

from __future__ import annotations

import shutil

import pytest
import sqlalchemy as sa

from mfg.domain.errors import AlreadyDone, PermissionDenied, ValidationFailed
from mfg.models import AuditEntry, RoleGrant, Signature, SopVersion, User, utcnow
from mfg.services import accounts, audit, signatures, sops
from tests.support import DEMO_SOP, PASSWORD, assert_audit_intact

POLICY = accounts.Policy()
NEW_PASSWORD = "my-very-own-secret-7"


@pytest.fixture
def draft(session, make_user, sops_dir) -> SopVersion:
    """DEMO-PROC v1 loaded (a draft) by a QA user, for someone else to approve with an e-signature."""
    shutil.copy(DEMO_SOP, sops_dir / DEMO_SOP.name)
    loader = session.get(User, make_user("loader", "qa").id)
    version = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    session.commit()
    return version


def _approve(session, version: SopVersion, signer: User, password: str = PASSWORD) -> Signature:
    """Approve ``version`` as ``signer``; the signature made."""
    sops.approve(session, version, site_timezone="UTC", signer=signer, password=password,
                 username=signer.username, require_username=True)
    return signatures.for_record(session, version)[-1]


def _as(session, user: User) -> User:
    audit.set_actor(session, user)
    return user


def test_an_administrator_cannot_change_its_own_roles_or_name(session, make_user):
    adam = _as(session, session.get(User, make_user("adam", "admin").id))
    with pytest.raises(PermissionDenied, match="your own name or roles"):
        accounts.set_roles(session, adam, roles="admin,qa,operator", full_name=adam.full_name, reason="more work")
    session.rollback()
    with pytest.raises(PermissionDenied, match="your own name or roles"):  # a combination the other rule allows
        accounts.set_roles(session, adam, roles="admin", full_name="Adam Renamed", reason="typo")
    session.rollback()
    assert (session.get(User, adam.id).roles, session.get(User, adam.id).full_name) == ("admin", "Adam Person")


@pytest.mark.parametrize("signing_role", ["operator", "qa", "clinical"])
def test_admin_and_a_signing_role_are_never_combined(session, make_user, signing_role):
    with pytest.raises(ValidationFailed, match="admin role cannot be combined"):
        accounts.create_user(session, username="both", full_name="Both Hats", roles=f"admin,{signing_role}",
                             password="temporary-secret-1", policy=POLICY)
    session.rollback()
    other = make_user("olivia", signing_role)
    alice = _as(session, session.get(User, make_user("alice", "admin").id))
    with pytest.raises(ValidationFailed, match="admin role cannot be combined"):
        accounts.set_roles(session, session.get(User, other.id), roles=f"{signing_role},admin",
                           full_name="Olivia Person", reason="helps out",
                           policy=accounts.Policy(two_person_grants=False))
    session.rollback()
    assert session.get(User, other.id).roles == signing_role
    assert alice.roles == "admin"


def test_an_account_that_already_combines_admin_with_a_signing_role_signs_nothing(session, draft):
    """A row from before the rule (or written outside the application): the signing guard refuses any account
    holding the admin role, whatever else it holds."""
    both = User(username="legacy", full_name="Legacy Both", roles="admin,qa", password_hash=accounts.hash_password(
        PASSWORD), password_changed_at=utcnow(), password_set_by_self=True, must_change_password=False)
    session.add(both)
    session.commit()
    with pytest.raises(PermissionDenied, match="An administrator signs nothing"):
        _approve(session, draft, both)
    session.rollback()
    assert session.get(SopVersion, draft.id).status == "draft"


def test_a_password_set_by_an_administrator_signs_nothing_until_its_owner_replaces_it(session, make_user, draft):
    adam = _as(session, session.get(User, make_user("adam", "admin").id))
    quinn = accounts.create_user(session, username="quinn", full_name="Quinn Quality", roles="qa",
                                 password=PASSWORD, policy=accounts.Policy(two_person_grants=False), temporary=False)
    session.commit()
    assert quinn.roles == "qa" and not quinn.password_set_by_self
    with pytest.raises(PermissionDenied, match="set by an administrator"):
        _approve(session, draft, quinn)
    session.rollback()
    assert session.get(SopVersion, draft.id).status == "draft"

    _as(session, quinn)
    accounts.change_password(session, quinn, current=PASSWORD, new=NEW_PASSWORD, policy=POLICY)
    session.commit()
    assert quinn.password_set_by_self
    signature = _approve(session, draft, quinn, NEW_PASSWORD)
    session.commit()
    assert signature.own_password is True and signature.password_set_at == quinn.password_changed_at
    created = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "signature.create")).one()
    assert '"own_password":true' in created.after.replace(" ", "")

    _as(session, adam)
    accounts.reset_password(session, quinn, temporary_password="temporary-secret-3", policy=POLICY,
                            reason="forgotten")
    session.commit()
    assert not quinn.password_set_by_self and quinn.must_change_password


def test_a_signing_role_counts_only_once_a_second_person_confirms_it(session, make_user, draft):
    alice = session.get(User, make_user("alice", "admin").id)
    qa1 = session.get(User, make_user("qa1", "qa").id)
    adam = _as(session, session.get(User, make_user("adam", "admin").id))
    nina = accounts.create_user(session, username="nina", full_name="Nina New", roles="qa",
                                password="temporary-secret-1", policy=POLICY)
    session.commit()
    (grant,) = accounts.pending_grants(session, nina)
    assert (nina.roles, grant.role, grant.requested_by_id) == ("", "qa", adam.id)
    _as(session, nina)
    accounts.change_password(session, nina, current="temporary-secret-1", new=NEW_PASSWORD, policy=POLICY)
    session.commit()
    with pytest.raises(PermissionDenied, match="needs the QA role"):  # pending: not a role yet
        _approve(session, draft, nina, NEW_PASSWORD)
    session.rollback()

    _as(session, adam)
    with pytest.raises(PermissionDenied, match="You asked for this role"):
        accounts.confirm_grant(session, grant, by=adam)
    session.rollback()
    assert session.get(RoleGrant, grant.id).pending and session.get(User, nina.id).roles == ""

    _as(session, qa1)
    accounts.confirm_grant(session, grant, by=qa1)
    session.commit()
    assert (nina.roles, grant.confirmed_by_id, grant.pending) == ("qa", qa1.id, False)
    actions = set(session.scalars(sa.select(AuditEntry.action).where(AuditEntry.entity_type == "role_grant")))
    assert actions == {"role_grant.create", "role_grant.update"}
    _as(session, alice)
    with pytest.raises(AlreadyDone, match="role qa of nina was already confirmed by Qa1 Person at"):
        accounts.confirm_grant(session, grant, by=alice)
    session.rollback()
    _as(session, nina)
    assert _approve(session, draft, nina, NEW_PASSWORD).own_password is True
    session.commit()
    assert_audit_intact(session)  # role_grant is audited like every GMP table, and holds what the trail says


def test_a_grant_is_never_confirmed_by_the_account_it_is_for(session, make_user):
    adam = _as(session, session.get(User, make_user("adam", "admin").id))
    quinn = session.get(User, make_user("quinn", "qa").id)
    accounts.set_roles(session, quinn, roles="qa,operator", full_name=quinn.full_name, reason="trained", policy=POLICY)
    session.commit()
    (grant,) = accounts.pending_grants(session, quinn)
    assert (quinn.roles, grant.role, grant.requested_by_id) == ("qa", "operator", adam.id)
    _as(session, quinn)
    with pytest.raises(PermissionDenied, match="your own account"):
        accounts.confirm_grant(session, grant, by=quinn)
    session.rollback()
    # taking the role off again before anyone confirmed it withdraws the request
    _as(session, adam)
    accounts.set_roles(session, quinn, roles="qa", full_name=quinn.full_name, reason="not trained after all",
                       policy=POLICY)
    session.commit()
    assert accounts.pending_grants(session, quinn) == [] and session.get(RoleGrant, grant.id).withdrawn_by_id == adam.id


def test_the_two_person_rule_can_be_turned_off(session, make_user):
    _as(session, session.get(User, make_user("adam", "admin").id))
    nina = accounts.create_user(session, username="nina", full_name="Nina New", roles="operator,clinical",
                                password="temporary-secret-1", policy=accounts.Policy(two_person_grants=False))
    session.commit()
    assert nina.roles == "clinical,operator" and accounts.pending_grants(session) == []
