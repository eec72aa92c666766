"""User accounts, sign-in, lockout and passwords (21 CFR 11.300).

Every change to an account is a model change and so is audited by the flush listener; sign-in events
are recorded with ``audit.record_event``.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from ..domain import accounts as rules
from ..domain import inputs
from ..domain.errors import AuthenticationFailed, ConflictError, NotFound, ValidationFailed
from ..models import User, utcnow
from . import audit

# argon2id with the library's (RFC 9106 "low memory") defaults.
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Policy:
    min_length: int = 12
    max_age_days: int = 180
    lockout_threshold: int = 5

    @classmethod
    def from_config(cls, config: dict) -> Policy:
        return cls(int(config["PASSWORD_MIN_LENGTH"]), int(config["PASSWORD_MAX_AGE_DAYS"]),
                   int(config["LOCKOUT_THRESHOLD"]))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(user: User, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def get_by_username(session: Session, username: str) -> User | None:
    return session.scalar(sa.select(User).where(User.username == username.strip()))


def get(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id}")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(sa.select(User).order_by(User.username)))


def _check_new_password(user_or_name: User | str, password: str, policy: Policy) -> None:
    username = user_or_name if isinstance(user_or_name, str) else user_or_name.username
    same = not isinstance(user_or_name, str) and password_matches(user_or_name, password)
    problems = rules.password_problems(password, min_length=policy.min_length, username=username,
                                       current_ok=same)
    if problems:
        raise ValidationFailed(*problems)


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
    """Create an account. An administrator's password is temporary: it must be changed at first sign-in."""
    problems = inputs.problems({"username": username})
    username = username.strip()
    if not username:
        problems.append("User name is required.")
    role_list = _profile(full_name, roles, problems)
    problems.extend(rules.password_problems(password, min_length=policy.min_length, username=username))
    if problems:
        raise ValidationFailed(*problems)
    if get_by_username(session, username) is not None:
        raise ConflictError(f"user name '{username}' is taken (user names are never reused)")
    now = utcnow()
    user = User(username=username, full_name=inputs.text("full_name", full_name), roles=",".join(role_list),
                password_hash=hash_password(password), password_changed_at=now,
                must_change_password=temporary, failed_logins=0, active=True, created_at=now)
    session.add(user)
    audit.flush(session, reason="account created")
    return user


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
    if user is None or not user.active or user.locked or not password_matches(user, password):
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
    if rules.should_lock(user.failed_logins, policy.lockout_threshold):
        user.locked_at = utcnow()
        audit.record_event(session, "account.locked", user=user, entity_type="user_account", entity_id=user.id,
                           reason=f"{user.failed_logins} consecutive failed password entries")
    return user


def record_sign_out(session: Session, user: User, *, timeout: bool = False) -> None:
    audit.record_event(session, "session.timeout" if timeout else "logout", user=user,
                       entity_type="user_account", entity_id=user.id)


def change_password(session: Session, user: User, *, current: str, new: str, policy: Policy) -> None:
    """The user changes their own password; the current one is re-entered."""
    if not password_matches(user, current):
        raise AuthenticationFailed(user.username, context="password_change",
                                   message="The current password is not correct.")
    _check_new_password(user, new, policy)
    user.password_hash = hash_password(new)
    user.password_changed_at = utcnow()
    user.must_change_password = False
    audit.flush(session, reason="password changed by its owner")


# --- administrator actions: each needs a reason, recorded in the trail ----------------------------

def _reason(reason: str) -> str:
    return inputs.required("reason", reason, "A reason is required for every change to an account.")


def reset_password(session: Session, user: User, *, temporary_password: str, policy: Policy, reason: str) -> None:
    """An administrator sets a temporary password; the user must change it at next sign-in."""
    reason = _reason(reason)
    _check_new_password(user.username, temporary_password, policy)
    user.password_hash = hash_password(temporary_password)
    user.password_changed_at = utcnow()
    user.must_change_password = True
    audit.flush(session, reason=reason)


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


def reactivate(session: Session, user: User, *, reason: str) -> None:
    reason = _reason(reason)
    if user.active:
        raise ValidationFailed(f"{user.username} is already active")
    user.active = True
    audit.flush(session, reason=reason)


def set_roles(session: Session, user: User, *, roles: str | list[str], full_name: str, reason: str) -> None:
    reason = _reason(reason)
    problems: list[str] = []
    role_list = _profile(full_name, roles, problems)
    if problems:
        raise ValidationFailed(*problems)
    user.roles = ",".join(role_list)
    user.full_name = inputs.text("full_name", full_name)
    audit.flush(session, reason=reason)
