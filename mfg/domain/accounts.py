"""Roles, password rules and sign-in rules (21 CFR 11.300), with no I/O."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from .errors import ValidationFailed

ROLES: tuple[str, ...] = ("operator", "qa", "clinical", "admin")
ROLE_LABELS = {
    "operator": "Operator",
    "qa": "Quality assurance",
    "clinical": "Clinical coordinator",
    "admin": "Administrator",
}


# The roles that sign GMP records (domain.signing.ROLE_FOR_MEANING). An administrator signs nothing, and no
# account combines administration with one of these (issue 19 item 1).
SIGNING_ROLES: tuple[str, ...] = ("operator", "qa", "clinical")
ADMIN_ROLE = "admin"


def is_signing_role(role: str) -> bool:
    return role in SIGNING_ROLES


def combination_problems(roles: Collection[str]) -> list[str]:
    """Every reason ``roles`` (an account's roles, granted or pending) may not be held together."""
    signing = sorted(r for r in roles if is_signing_role(r))
    if ADMIN_ROLE in roles and signing:
        return [f"An administrator signs nothing: the admin role cannot be combined with {', '.join(signing)} "
                "(use a separate account for administration)."]
    return []


def parse_roles(roles: str | list[str] | tuple[str, ...]) -> list[str]:
    """Return the sorted, de-duplicated role list, or refuse unknown roles."""
    items = roles.split(",") if isinstance(roles, str) else list(roles)
    cleaned = sorted({r.strip().lower() for r in items if r.strip()})
    unknown = [r for r in cleaned if r not in ROLES]
    if unknown:
        raise ValidationFailed(f"unknown role(s): {', '.join(unknown)}; known roles: {', '.join(ROLES)}")
    if not cleaned:
        raise ValidationFailed("a user needs at least one role")
    return cleaned


def password_problems(password: str, *, min_length: int, username: str = "",
                      current_ok: bool = False) -> list[str]:
    """Every reason ``password`` is not acceptable as a new password (empty list: acceptable)."""
    problems = []
    if len(password) < min_length:
        problems.append(f"Password must be at least {min_length} characters long.")
    if username and username.lower() in password.lower():
        problems.append("Password must not contain the user name.")
    if password != password.strip():
        problems.append("Password must not start or end with a space.")
    if current_ok:
        problems.append("The new password must differ from the current one.")
    return problems


def password_expired(changed_at: datetime, now: datetime, max_age_days: int) -> bool:
    return max_age_days > 0 and now - changed_at > timedelta(days=max_age_days)


def should_lock(consecutive_failures: int, threshold: int) -> bool:
    return threshold > 0 and consecutive_failures >= threshold


def is_idle(last_seen: datetime | None, now: datetime, timeout_minutes: float) -> bool:
    return last_seen is not None and now - last_seen > timedelta(minutes=timeout_minutes)
