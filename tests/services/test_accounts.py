"""Accounts: argon2id hashes, password rules, lockout, admin actions with reasons."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from mfg.domain.audit_state import redact
from mfg.domain.errors import AuthenticationFailed, ConflictError, ValidationFailed
from mfg.models import AuditEntry, User
from mfg.services import accounts
from tests.support import PASSWORD

POLICY = accounts.Policy(min_length=12, max_age_days=180, lockout_threshold=5)


def _fail(session, username, password="wrong-password-123"):
    """What the web edge does on a failed sign-in: roll back, count and audit in a new transaction."""
    with pytest.raises(AuthenticationFailed) as info:
        accounts.authenticate(session, username, password, POLICY)
    session.rollback()
    accounts.record_authentication_failure(session, info.value, POLICY)
    session.commit()


def test_passwords_are_argon2id_hashes(session, make_user):
    user = session.get(User, make_user("olivia").id)
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


def test_create_user_collects_every_problem(session):
    with pytest.raises(ValidationFailed) as info:
        accounts.create_user(session, username="bad name!", full_name=" ", roles="operator,wizard",
                             password="short", policy=POLICY)
    text = " ".join(info.value.problems)
    for expected in ("User name", "printed", "wizard", "at least 12"):
        assert expected in text
    assert session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


def test_user_names_are_unique(session, make_user):
    make_user("olivia")
    with pytest.raises(ConflictError):
        accounts.create_user(session, username="olivia", full_name="Other", roles="qa", password=PASSWORD,
                             policy=POLICY)


def test_password_must_not_contain_the_user_name(session):
    with pytest.raises(ValidationFailed, match="user name"):
        accounts.create_user(session, username="olivia", full_name="O", roles="qa",
                             password="xx-olivia-password", policy=POLICY)


def test_lockout_after_five_consecutive_failures(session, make_user):
    make_user("olivia")
    for _ in range(4):
        _fail(session, "olivia")
    user = accounts.get_by_username(session, "olivia")
    assert user.failed_logins == 4 and not user.locked
    _fail(session, "olivia")
    assert user.locked
    # Locked: even the right password is refused, with the same exception (one generic message).
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate(session, "olivia", PASSWORD, POLICY)
    session.rollback()
    actions = list(session.scalars(sa.select(AuditEntry.action).order_by(AuditEntry.seq)))
    assert actions.count("login.failure") == 5 and "account.locked" in actions
    accounts.unlock(session, user, reason="identity confirmed by phone")
    session.commit()
    assert accounts.authenticate(session, "olivia", PASSWORD, POLICY).user.id == user.id
    session.commit()
    unlock = session.scalar(sa.select(AuditEntry).where(AuditEntry.reason == "identity confirmed by phone"))
    assert unlock.action == "user_account.update" and '"locked_at":null' in unlock.after


def test_a_success_resets_the_failure_count(session, make_user):
    make_user("olivia")
    for _ in range(4):
        _fail(session, "olivia")
    accounts.authenticate(session, "olivia", PASSWORD, POLICY)
    session.commit()
    for _ in range(4):
        _fail(session, "olivia")
    assert not accounts.get_by_username(session, "olivia").locked


def test_lockout_threshold_is_configurable(session, make_user):
    make_user("olivia")
    policy = accounts.Policy(lockout_threshold=2)
    for _ in range(2):
        with pytest.raises(AuthenticationFailed) as info:
            accounts.authenticate(session, "olivia", "nope-nope-nope", policy)
        session.rollback()
        accounts.record_authentication_failure(session, info.value, policy)
        session.commit()
    assert accounts.get_by_username(session, "olivia").locked


def test_unknown_user_failure_is_audited_without_an_account(session):
    _fail(session, "mallory")
    entry = session.scalar(sa.select(AuditEntry).order_by(AuditEntry.seq.desc()))
    assert entry.action == "login.failure" and entry.user_id is None and '"mallory"' in entry.after


def test_deactivated_users_cannot_sign_in_and_are_kept(session, make_user):
    make_user("olivia")
    user = accounts.get_by_username(session, "olivia")
    with pytest.raises(ValidationFailed, match="reason"):
        accounts.deactivate(session, user, reason=" ")
    accounts.deactivate(session, user, reason="left the company")
    session.commit()
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate(session, "olivia", PASSWORD, POLICY)
    session.rollback()
    assert session.scalar(sa.select(User).where(User.username == "olivia")) is not None


def test_temporary_password_must_be_changed_and_expiry(session, make_user):
    make_user("olivia", temporary=True)
    result = accounts.authenticate(session, "olivia", PASSWORD, POLICY)
    assert result.must_change_password and not result.password_expired
    user = result.user
    with pytest.raises(ValidationFailed, match="differ"):
        accounts.change_password(session, user, current=PASSWORD, new=PASSWORD, policy=POLICY)
    accounts.change_password(session, user, current=PASSWORD, new="a-brand-new-secret", policy=POLICY)
    session.commit()
    assert not user.must_change_password
    user.password_changed_at -= timedelta(days=181)
    session.commit()
    assert accounts.authenticate(session, "olivia", "a-brand-new-secret", POLICY).password_expired


def test_reset_password_sets_a_temporary_password_with_reason(session, make_user):
    make_user("olivia")
    user = accounts.get_by_username(session, "olivia")
    accounts.reset_password(session, user, temporary_password="temporary-secret-1", policy=POLICY,
                            reason="forgotten password")
    session.commit()
    assert user.must_change_password and accounts.password_matches(user, "temporary-secret-1")
    entry = session.scalar(sa.select(AuditEntry).order_by(AuditEntry.seq.desc()))
    digest = json.loads(entry.after)["password_hash"]
    assert entry.reason == "forgotten password" and digest == redact(user.password_hash)
    assert digest.startswith("sha256:") and user.password_hash not in entry.after
