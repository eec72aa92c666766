"""Server-side sign-in sessions (issue [3.6] item 2; the rules: ``domain.accounts.session_end``).

A sign-in starts a row (``models.UserSession``) and gives the browser a random token, which the cookie carries;
the row, found by the token's sha256 (the database never holds the token itself), is what makes the browser
signed in. A new sign-in is a new row and a new token (the id rotates). The row ends, at once and for every copy
of the cookie, on sign-out, on the idle timeout, at the absolute lifetime, and for every session of the account
on a password change (the changing session goes on under a new token), a reset by an administrator,
deactivation and lockout.

Activity is written to the row at most once per ``touch_seconds`` (a page view must not become a write every
time): the idle rule counts from the last activity written, so a session can end up to that much early, never
late. Services flush; the caller's transaction commits.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..models import User, UserSession, utcnow

TOKEN_BYTES = 32


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(session: Session, user: User) -> str:
    """A new session for ``user``; returns its token (for the cookie only: never stored)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    session.add(UserSession(token_hash=_digest(token), user_id=user.id, started_at=now, last_seen_at=now,
                            has_signed=False))
    session.flush()
    return token


def find(session: Session, token: str | None, user_id: int) -> tuple[UserSession, User] | None:
    """The current (not ended) session of ``token`` and its user, if it belongs to ``user_id`` (one query: a
    request's sign-in costs no more statements than before sessions were kept)."""
    if not token:
        return None
    found = session.execute(sa.select(UserSession, User).join(User, User.id == UserSession.user_id)
                            .where(UserSession.token_hash == _digest(token))).first()
    if found is None:
        return None
    row, user = found
    if row.ended_at is not None or row.user_id != user_id:
        return None
    return row, user


def touch(row: UserSession, now: datetime, touch_seconds: float) -> bool:
    """Record activity; returns whether the row changed (written at most once per ``touch_seconds``)."""
    if now - row.last_seen_at < timedelta(seconds=touch_seconds):
        return False
    row.last_seen_at = now
    return True


def end(row: UserSession, reason: str) -> None:
    if row.ended_at is None:
        row.ended_at = utcnow()
        row.end_reason = reason


def end_all(session: Session, user: User, reason: str) -> int:
    """End every current session of ``user`` (a password change or reset, deactivation, lockout); returns how
    many ended."""
    rows = list(session.scalars(sa.select(UserSession).where(UserSession.user_id == user.id,
                                                             UserSession.ended_at.is_(None))))
    for row in rows:
        end(row, reason)
    session.flush()
    return len(rows)
