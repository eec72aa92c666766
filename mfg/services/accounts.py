"""User accounts, sign-in, lockout and passwords (21 CFR 11.300).

Every change to an account is a model change and so is audited by the flush listener; sign-in events
are recorded with ``audit.record_event``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from functools import cache

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from ..domain import accounts as rules
from ..domain import guards, inputs
from ..domain.errors import AuthenticationFailed, ConflictError, NotFound, ValidationFailed
from ..models import PasswordHistory, RoleGrant, User, utcnow
from . import audit, rows, sessions

# argon2id with the library's (RFC 9106 "low memory") defaults.
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Policy:
    min_length: int = 12
    max_age_days: int = 180
    lockout_threshold: int = 5
    history: int = 5  # a new password differs from the current one and the ones before it, this many in all
    # the two-person rule for signing roles (ROLE_GRANT_TWO_PERSON): a grant counts once a second person confirms it
    two_person_grants: bool = True

    @classmethod
    def from_config(cls, config: dict) -> Policy:
        return cls(int(config["PASSWORD_MIN_LENGTH"]), int(config["PASSWORD_MAX_AGE_DAYS"]),
                   int(config["LOCKOUT_THRESHOLD"]), int(config["PASSWORD_HISTORY"]),
                   bool(config.get("ROLE_GRANT_TWO_PERSON", True)))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _hash_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_matches(user: User, password: str) -> bool:
    return _hash_matches(user.password_hash, password)


@cache
def _dummy_hash() -> str:
    """A hash of a random password no one knows, made once per process."""
    return _hasher.hash(secrets.token_urlsafe(24))


def _same_work_as_a_password_check(password: str) -> None:
    """An unknown, locked or deactivated account costs a sign-in the same argon2 work as a wrong password, so
    the time of the answer tells nothing about the account (issue [3.6] item 3)."""
    _hash_matches(_dummy_hash(), password)


def get_by_username(session: Session, username: str) -> User | None:
    return session.scalar(sa.select(User).where(User.username == username.strip()))


def get(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id}")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(sa.select(User).order_by(User.username)))


def _earlier_hashes(session: Session, user: User, policy: Policy) -> list[str]:
    """The account's passwords before its current one, newest first, as many as the history rule looks at."""
    if policy.history <= 1:
        return []
    return list(session.scalars(sa.select(PasswordHistory.password_hash).where(PasswordHistory.user_id == user.id)
                                .order_by(PasswordHistory.id.desc()).limit(policy.history - 1)))


def _check_new_password(user_or_name: User | str, password: str, policy: Policy,
                        session: Session | None = None) -> None:
    """Refuse a new password that breaks a rule (``domain.accounts.password_problems``); for the account's own
    choice (``session`` given), also its current password and the earlier ones the history rule covers."""
    username = user_or_name if isinstance(user_or_name, str) else user_or_name.username
    same = not isinstance(user_or_name, str) and password_matches(user_or_name, password)
    reused = (not same and session is not None and not isinstance(user_or_name, str)
              and any(_hash_matches(earlier, password) for earlier in _earlier_hashes(session, user_or_name, policy)))
    problems = rules.password_problems(password, min_length=policy.min_length, username=username,
                                       current_ok=same, reused=reused, history=policy.history)
    if problems:
        raise ValidationFailed(*problems)


def _replace_password(session: Session, user: User, new: str) -> None:
    """Keep the current hash in the history, set the new one; every session of the account ends (the caller
    starts a new one for the person who changed their own password)."""
    now = utcnow()
    session.add(PasswordHistory(user_id=user.id, password_hash=user.password_hash, replaced_at=now))
    user.password_hash = hash_password(new)
    user.password_changed_at = now


def _profile(full_name: str, roles: str | list[str], problems: list[str]) -> list[str]:
    """Check the printed name and roles, adding to ``problems``; returns the parsed roles."""
    problems.extend(inputs.problems({"full_name": full_name}))
    if not full_name.strip():
        problems.append("Full (printed) name is required: it appears in every signature.")
    try:
        return rules.parse_roles(roles)
    except ValidationFailed as exc:
        problems.extend(exc.problems)
        return []


def create_user(session: Session, *, username: str, full_name: str, roles: str | list[str], password: str,
                policy: Policy, temporary: bool = True) -> User:
    """Create an account. An administrator's password is temporary: it must be changed at first sign-in
    (``temporary=False``: not forced, the command line's ``--permanent``), and it signs nothing until its owner has
    replaced it. Signing roles are pending until a second person confirms them (``policy.two_person_grants``)."""
    return _new_user(session, username=username, full_name=full_name, roles=roles, password=password,
                     policy=policy, temporary=temporary, own_password=False, reason="account created")


def create_user_at_setup(session: Session, *, username: str, full_name: str, roles: str | list[str], password: str,
                         policy: Policy) -> User:
    """Set-up only (the demo seed, test fixtures; never a screen or a command): an account whose password counts
    as its owner's (the demo instance's documented shared password, a test's) and whose signing roles count at
    once, as if confirmed. Recorded as such in the trail (the reason says so)."""
    return _new_user(session, username=username, full_name=full_name, roles=roles, password=password,
                     policy=replace(policy, two_person_grants=False), temporary=False, own_password=True,
                     reason="account created at set-up (demo or test): own password, roles effective at once")


def _new_user(session: Session, *, username: str, full_name: str, roles: str | list[str], password: str,
              policy: Policy, temporary: bool, own_password: bool, reason: str) -> User:
    problems = inputs.problems({"username": username})
    username = username.strip()
    if not username:
        problems.append("User name is required.")
    role_list = _profile(full_name, roles, problems)
    problems.extend(rules.combination_problems(role_list))
    problems.extend(rules.password_problems(password, min_length=policy.min_length, username=username))
    if problems:
        raise ValidationFailed(*problems)
    if get_by_username(session, username) is not None:
        raise ConflictError(f"user name '{username}' is taken (user names are never reused)")
    now = utcnow()
    user = User(username=username, full_name=inputs.text("full_name", full_name), roles="",
                password_hash=hash_password(password), password_changed_at=now, password_set_by_self=own_password,
                must_change_password=temporary, failed_logins=0, active=True, created_at=now)
    session.add(user)
    with audit.reason_for(session, reason):
        _grant(session, user, role_list, policy)
    audit.flush(session, reason=reason)
    return user


def _grant(session: Session, user: User, role_list: list[str], policy: Policy) -> None:
    """Make ``user``'s roles ``role_list``: a role taken off goes at once (and a pending grant of it is
    withdrawn), a role added counts at once unless it is a signing role under the two-person rule, which is then
    requested (``RoleGrant``) and counts once confirmed (``confirm_grant``)."""
    actor = audit.actor_of(session)
    pending = {g.role: g for g in pending_grants(session, user)} if user.id is not None else {}
    now = utcnow()
    for role, grant in pending.items():
        if role not in role_list:
            grant.withdrawn_at, grant.withdrawn_by_id = now, actor.user_id
    effective = [r for r in user.role_list if r in role_list]
    for role in role_list:
        if role in effective or role in pending:
            continue
        if policy.two_person_grants and rules.is_signing_role(role):
            session.add(RoleGrant(user=user, role=role, requested_by_id=actor.user_id, requested_by=actor.name[:64],
                                  requested_at=now))
        else:
            effective.append(role)
    user.roles = ",".join(sorted(effective))


def pending_grants(session: Session, user: User | None = None) -> list[RoleGrant]:
    """The role grants waiting for a second person (of ``user``, or everyone's), oldest first."""
    query = sa.select(RoleGrant).where(RoleGrant.confirmed_at.is_(None), RoleGrant.withdrawn_at.is_(None))
    if user is not None:
        query = query.where(RoleGrant.user_id == user.id)
    return list(session.scalars(query.order_by(RoleGrant.requested_at, RoleGrant.id)))


def get_grant(session: Session, grant_id: int) -> RoleGrant:
    grant = session.get(RoleGrant, grant_id)
    if grant is None:
        raise NotFound(f"no role grant with id {grant_id}")
    return grant


def guard_confirm_grant(actor: User, grant: RoleGrant) -> list[guards.Refusal]:
    return guards.confirm_role_grant(guards.person(actor), target_id=grant.user_id,
                                     requested_by_id=grant.requested_by_id, pending=grant.pending,
                                     roles_after=[*grant.user.role_list, grant.role])


def confirm_grant(session: Session, grant: RoleGrant, *, by: User) -> None:
    """The second person confirms a pending signing role: from now on it counts. Two confirmations at once run
    one after the other (the grant's row lock); the second is told who confirmed it first."""
    rows.lock(session, grant)
    if grant.confirmed_at is not None:
        raise rows.already_done(session, f"role {grant.role} of {grant.user.username} was already confirmed",
                                user_id=grant.confirmed_by_id, at=grant.confirmed_at)
    guards.enforce(guard_confirm_grant(by, grant))
    grant.confirmed_by_id, grant.confirmed_at = by.id, utcnow()
    grant.user.roles = ",".join(sorted({*grant.user.role_list, grant.role}))
    audit.flush(session, reason=f"role {grant.role} confirmed (two-person rule)")


@dataclass(frozen=True)
class SignIn:
    user: User
    must_change_password: bool
    password_expired: bool


def authenticate(session: Session, username: str, password: str, policy: Policy) -> SignIn:
    """Check credentials. Raises ``AuthenticationFailed`` (one generic message) for any failure.

    The caller rolls back and calls ``record_authentication_failure`` so that the failure is counted
    and audited whatever else the transaction held.
    """
    user = get_by_username(session, username)
    if user is None or not user.active or user.locked:
        _same_work_as_a_password_check(password)
        raise AuthenticationFailed(username, context="login")
    if not password_matches(user, password):
        raise AuthenticationFailed(username, context="login")
    audit.set_actor(session, user)  # from here on the request acts as this user
    now = utcnow()
    user.failed_logins = 0
    user.last_login_at = now
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    audit.record_event(session, "login.success", user=user, entity_type="user_account", entity_id=user.id)
    return SignIn(user, user.must_change_password,
                  rules.password_expired(user.password_changed_at, now, policy.max_age_days))


def record_authentication_failure(session: Session, failure: AuthenticationFailed, policy: Policy) -> User | None:
    """Count a failed password (login or signature) toward lockout and audit it. Returns the user if known."""
    user = get_by_username(session, failure.username)
    details = {"username": failure.username[:64]}
    if user is None:
        audit.record_event(session, f"{failure.context}.failure", details=details)
        return None
    if not user.active or user.locked:
        details["account"] = "inactive" if not user.active else "locked"
        audit.record_event(session, f"{failure.context}.failure", user=user, entity_type="user_account",
                           entity_id=user.id, details=details)
        return user
    user.failed_logins += 1
    audit.record_event(session, f"{failure.context}.failure", user=user, entity_type="user_account",
                       entity_id=user.id, details=details)
    last_administrator = is_last_administrator(session, user)
    if rules.should_lock(user.failed_logins, policy.lockout_threshold, last_administrator=last_administrator):
        user.locked_at = utcnow()
        audit.record_event(session, "account.locked", user=user, entity_type="user_account", entity_id=user.id,
                           reason=f"{user.failed_logins} consecutive failed password entries")
        sessions.end_all(session, user, "locked")
    elif last_administrator and rules.should_lock(user.failed_logins, policy.lockout_threshold):
        audit.record_event(session, "account.lock_withheld", user=user, entity_type="user_account",
                           entity_id=user.id, reason=f"{user.failed_logins} consecutive failed password entries; "
                           "the last active administrator is throttled, not locked")
    return user


def record_throttled(session: Session, username: str, scope: str) -> None:
    """A sign-in refused by throttling (``web.throttle``), before its password was checked: audited, counted
    toward nothing."""
    audit.record_event(session, "login.throttled", details={"username": username[:64], "limit": scope})


def is_last_administrator(session: Session, user: User) -> bool:
    """``user`` is an administrator and no other active, unlocked account is one."""
    if not user.has_role("admin"):
        return False
    others = session.scalars(sa.select(User).where(User.id != user.id, User.active.is_(True),
                                                   User.locked_at.is_(None)))
    return not any(other.has_role("admin") for other in others)


SIGN_OUT_EVENTS = {"logout": "logout", "timeout": "session.timeout", "lifetime": "session.lifetime"}


def record_sign_out(session: Session, user: User, *, reason: str = "logout") -> None:
    """A session's end, audited: ``reason`` ``"logout"`` (the person signed out), ``"timeout"`` (idle) or
    ``"lifetime"`` (the absolute lifetime passed)."""
    audit.record_event(session, SIGN_OUT_EVENTS[reason], user=user, entity_type="user_account", entity_id=user.id)


def change_password(session: Session, user: User, *, current: str, new: str, policy: Policy) -> None:
    """The user changes their own password; the current one is re-entered."""
    if not password_matches(user, current):
        raise AuthenticationFailed(user.username, context="password_change",
                                   message="The current password is not correct.")
    _check_new_password(user, new, policy, session)
    _replace_password(session, user, new)
    user.password_set_by_self = True
    user.must_change_password = False
    audit.flush(session, reason="password changed by its owner")
    sessions.end_all(session, user, "password_changed")


# --- administrator actions: each needs a reason, recorded in the trail ----------------------------

def _reason(reason: str) -> str:
    return inputs.required("reason", reason, "A reason is required for every change to an account.")


def reset_password(session: Session, user: User, *, temporary_password: str, policy: Policy, reason: str) -> None:
    """An administrator sets a temporary password; the user must change it at next sign-in."""
    reason = _reason(reason)
    _check_new_password(user.username, temporary_password, policy)
    _replace_password(session, user, temporary_password)
    user.password_set_by_self = False  # signs nothing until its owner replaces it
    user.must_change_password = True
    audit.flush(session, reason=reason)
    sessions.end_all(session, user, "password_reset")


def unlock(session: Session, user: User, *, reason: str) -> None:
    reason = _reason(reason)
    if not user.locked:
        raise ValidationFailed(f"{user.username} is not locked")
    user.locked_at = None
    user.failed_logins = 0
    audit.flush(session, reason=reason)


def deactivate(session: Session, user: User, *, reason: str, acting_user_id: int | None = None) -> None:
    reason = _reason(reason)
    if user.id == acting_user_id:
        raise ValidationFailed("You cannot deactivate your own account.")
    if not user.active:
        raise ValidationFailed(f"{user.username} is already inactive")
    user.active = False
    audit.flush(session, reason=reason)
    sessions.end_all(session, user, "deactivated")


def reactivate(session: Session, user: User, *, reason: str) -> None:
    reason = _reason(reason)
    if user.active:
        raise ValidationFailed(f"{user.username} is already active")
    user.active = True
    audit.flush(session, reason=reason)


def set_roles(session: Session, user: User, *, roles: str | list[str], full_name: str, reason: str,
              policy: Policy | None = None) -> None:
    """Change another account's printed name and roles (never one's own: ``guards.own_account``). A signing role
    added is pending until confirmed under the two-person rule (``policy.two_person_grants``, default on)."""
    guards.enforce(guards.own_account(audit.actor_of(session).user_id, user.id))
    reason = _reason(reason)
    problems: list[str] = []
    role_list = _profile(full_name, roles, problems)
    problems.extend(rules.combination_problems(role_list))
    if problems:
        raise ValidationFailed(*problems)
    with audit.reason_for(session, reason):
        _grant(session, user, role_list, policy or Policy())
    user.full_name = inputs.text("full_name", full_name)
    audit.flush(session, reason=reason)
