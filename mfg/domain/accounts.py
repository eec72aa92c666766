"""Roles, password rules and sign-in rules (21 CFR 11.300), with no I/O (the common-password list is data
shipped inside the package, read once).

Password rules as NIST SP 800-63B section 3.1.1.2 puts them: a minimum length (the site's validated choice,
``PASSWORD_MIN_LENGTH``), long passphrases allowed (up to ``PASSWORD_MAX_LENGTH``), every character allowed, no
composition rules, and a new password checked against values known to be guessed first: a list of common
passwords (``mfg/data/common-passwords.txt.gz``: the 20,000 most common passwords of breach corpora, compiled by
Royce Williams, lower-cased and de-duplicated as the Django project ships it, BSD licence), repetitive or
sequential characters ("aaaaaaaaaaaa", "abcabcabcabc", "123456789012"), the user name, and the account's own
recent passwords (``PASSWORD_HISTORY``). No periodic change is forced by these rules; the site's maximum age
(``PASSWORD_MAX_AGE_DAYS``) is a separate, validated choice.
"""

from __future__ import annotations

import gzip
from collections.abc import Collection
from datetime import datetime, timedelta
from functools import cache
from importlib.resources import files

from .errors import ValidationFailed

PASSWORD_MAX_LENGTH = 256  # NIST: at least 64 must be allowed; a bound keeps the hashing of a sign-in cheap
MIN_DISTINCT_CHARACTERS = 5

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


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, lower-cased (module docstring)."""
    data = files("mfg").joinpath("data/common-passwords.txt.gz").read_bytes()
    return frozenset(line.strip() for line in gzip.decompress(data).decode().splitlines() if line.strip())


def _guessable(password: str) -> bool:
    """Repetitive or sequential: fewer than ``MIN_DISTINCT_CHARACTERS`` distinct characters ("aaaaaaaaaaaa",
    "111122223333"), one block repeated ("abcabcabcabc"), or a single run of consecutive characters up or down
    ("abcdefghijkl", "987654321098" is not one: it wraps)."""
    lowered = password.lower()
    if len(set(lowered)) < MIN_DISTINCT_CHARACTERS:
        return True
    if lowered in (lowered + lowered)[1:-1]:  # a block repeated
        return True
    steps = {ord(b) - ord(a) for a, b in zip(lowered, lowered[1:], strict=False)}
    return steps in ({1}, {-1})


def password_problems(password: str, *, min_length: int, username: str = "",
                      current_ok: bool = False, reused: bool = False, history: int = 0) -> list[str]:
    """Every reason ``password`` is not acceptable as a new password (empty list: acceptable).

    ``current_ok``: it is the account's current password; ``reused``: it is one of the ``history`` before it."""
    problems = []
    if len(password) < min_length:
        problems.append(f"Password must be at least {min_length} characters long.")
    if len(password) > PASSWORD_MAX_LENGTH:
        problems.append(f"Password must be at most {PASSWORD_MAX_LENGTH} characters long.")
    if username and username.lower() in password.lower():
        problems.append("Password must not contain the user name.")
    if password != password.strip():
        problems.append("Password must not start or end with a space.")
    if password.lower() in common_passwords():
        problems.append("This password is on the list of commonly used passwords; choose another.")
    elif _guessable(password):
        problems.append("Password must not be repetitive or sequential characters (such as 'aaaa…' or 'abcd…').")
    if current_ok:
        problems.append("The new password must differ from the current one.")
    elif reused:
        problems.append(f"The new password must differ from the last {history} passwords of this account.")
    return problems


def password_expired(changed_at: datetime, now: datetime, max_age_days: int) -> bool:
    return max_age_days > 0 and now - changed_at > timedelta(days=max_age_days)


def should_lock(consecutive_failures: int, threshold: int, *, last_administrator: bool = False) -> bool:
    """Whether this many consecutive failed password entries lock the account (an administrator unlocks it).

    Never the last active administrator: only the command line could unlock it, so a few anonymous requests
    would take administration away. Its failures are throttled like everyone's (``SIGNIN_LIMIT_PER_ACCOUNT``)
    and recorded, and the withheld lock is audited (``services.accounts``)."""
    return threshold > 0 and consecutive_failures >= threshold and not last_administrator


def is_idle(last_seen: datetime | None, now: datetime, timeout_minutes: float) -> bool:
    return last_seen is not None and now - last_seen > timedelta(minutes=timeout_minutes)


def past_lifetime(started: datetime, now: datetime, lifetime_hours: float) -> bool:
    """A session ends this long after its sign-in however active it is (0: no limit)."""
    return lifetime_hours > 0 and now - started > timedelta(hours=lifetime_hours)


def session_end(started: datetime, last_seen: datetime, now: datetime, *, idle_minutes: float,
                lifetime_hours: float) -> str | None:
    """Why a session has ended by time (``"timeout"``: idle too long; ``"lifetime"``: its absolute lifetime has
    passed), or None while it is current."""
    if past_lifetime(started, now, lifetime_hours):
        return "lifetime"
    if is_idle(last_seen, now, idle_minutes):
        return "timeout"
    return None

