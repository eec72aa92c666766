"""Issue [3.6] item 3 (service level): sign-in does the same work whatever the account's state; the last active
administrator is throttled, never locked, by failures; NIST SP 800-63B password rules (common passwords,
repetitive or sequential characters, no reuse of the last N); a lockout ends the account's sessions."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from mfg.domain.errors import AuthenticationFailed, ValidationFailed
from mfg.models import AuditEntry, User, UserSession
from mfg.services import accounts, sessions
from tests.support import PASSWORD

from .test_accounts import _fail  # what the web edge does on a failed sign-in

POLICY = accounts.Policy(min_length=12, max_age_days=180, lockout_threshold=5, history=3)


class CountingHasher(PasswordHasher):
    """The real argon2id hasher, counting the verifications it does (each one is the full argon2 work)."""

    verified = 0

    def verify(self, hash, password):  # noqa: A002 (argon2's own parameter name)
        type(self).verified += 1
        return super().verify(hash, password)


def _events(session, action):
    return session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)).all()


def test_every_failed_sign_in_does_one_argon2_verification(session, make_user, monkeypatch):
    """Unknown, locked, deactivated and wrong-password sign-ins cost the same argon2 work: the time of the answer
    says nothing about the account."""
    monkeypatch.setattr(accounts, "_hasher", CountingHasher())
    make_user("olivia")
    locked = session.get(User, make_user("larry").id)
    for _ in range(5):
        _fail(session, "larry")
    assert session.get(User, locked.id).locked
    gone = session.get(User, make_user("dora").id)
    accounts.deactivate(session, gone, reason="left the company")
    session.commit()
    accounts._dummy_hash()  # made once per process (a hash, not a verification)
    for username, password in (("olivia", "wrong-password-123"), ("nobody", PASSWORD), ("larry", PASSWORD),
                               ("dora", PASSWORD)):
        CountingHasher.verified = 0
        with pytest.raises(AuthenticationFailed):
            accounts.authenticate(session, username, password, POLICY)
        session.rollback()
        assert CountingHasher.verified == 1, username


def test_the_last_administrator_is_not_locked_by_failures(session, make_user):
    admin = make_user("root1", "admin")
    for _ in range(7):
        _fail(session, "root1")
    assert not session.get(User, admin.id).locked
    assert len(_events(session, "account.lock_withheld")) == 3  # at the 5th, 6th and 7th failure
    assert accounts.authenticate(session, "root1", PASSWORD, POLICY).user.id == admin.id
    session.commit()


def test_an_administrator_with_another_active_one_is_locked(session, make_user):
    admin = make_user("root1", "admin")
    make_user("root2", "admin")
    for _ in range(5):
        _fail(session, "root1")
    assert session.get(User, admin.id).locked
    assert not _events(session, "account.lock_withheld")


def test_a_lockout_ends_every_session_of_the_account(session, make_user):
    user = session.get(User, make_user("olivia").id)
    sessions.start(session, user)
    sessions.start(session, user)
    session.commit()
    for _ in range(5):
        _fail(session, "olivia")
    rows = session.scalars(sa.select(UserSession).where(UserSession.user_id == user.id)).all()
    assert [r.end_reason for r in rows] == ["locked", "locked"] and all(r.ended_at for r in rows)


@pytest.mark.parametrize("password,problem", [
    ("aaaaaaaaaaaa", "repetitive or sequential"),
    ("abcabcabcabc", "repetitive or sequential"),
    ("abcdefghijklmn", "repetitive or sequential"),
    ("111122223333", "repetitive or sequential"),
    ("baseball1234", None),
    ("1q2w3e4r5t6y", "commonly used"),
    ("PasswordPassword", "repetitive or sequential"),
    ("qwertyuiop123", "commonly used"),
])
def test_common_repetitive_and_sequential_passwords_are_refused(session, password, problem):
    if problem is None:
        user = accounts.create_user(session, username="newbie", full_name="New Bie", roles="operator",
                                    password=password, policy=POLICY)
        assert user.id
        return
    with pytest.raises(ValidationFailed) as info:
        accounts.create_user(session, username="newbie", full_name="New Bie", roles="operator",
                             password=password, policy=POLICY)
    assert problem in " ".join(info.value.problems)


def test_a_new_password_is_not_one_of_the_last_n(session, make_user):
    """history=3: the current password and the two before it are refused; the one before those is allowed."""
    user = session.get(User, make_user("olivia").id)
    chain = [PASSWORD, "second-secret-42", "third-secret-42", "fourth-secret-42"]
    for old, new in zip(chain, chain[1:], strict=False):
        accounts.change_password(session, user, current=old, new=new, policy=POLICY)
        session.commit()
    for earlier in chain[1:]:  # current (fourth) and the two before it
        with pytest.raises(ValidationFailed) as info:
            accounts.change_password(session, user, current=chain[-1], new=earlier, policy=POLICY)
        expected = "differ from the current" if earlier == chain[-1] else "last 3 passwords"
        assert expected in " ".join(info.value.problems)
        session.rollback()
    accounts.change_password(session, user, current=chain[-1], new=PASSWORD, policy=POLICY)  # 4 back: allowed
    session.commit()


def test_password_change_reset_and_deactivation_end_sessions(session, make_user):
    user = session.get(User, make_user("olivia").id)
    admin_reason = "forgotten password, identity checked in person"
    for act, reason in (
            (lambda: accounts.change_password(session, user, current=PASSWORD, new="second-secret-42",
                                              policy=POLICY), "password_changed"),
            (lambda: accounts.reset_password(session, user, temporary_password="temporary-secret-7",
                                             policy=POLICY, reason=admin_reason), "password_reset"),
            (lambda: accounts.deactivate(session, user, reason="left the company"), "deactivated")):
        sessions.start(session, user)
        session.commit()
        act()
        session.commit()
        last = session.scalars(sa.select(UserSession).order_by(UserSession.id.desc())).first()
        assert last.ended_at is not None and last.end_reason == reason
