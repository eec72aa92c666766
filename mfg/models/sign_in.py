"""Server-side sign-in sessions and each account's earlier passwords (issue [3.6] items 2 and 3).

Request bookkeeping and credentials, not GMP data: neither table is audited row by row. What happens to them is:
every sign-in, sign-out, timeout and password change writes its own audit event (``services.accounts``).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from .base import UTC, Base, IntPK


class UserSession(Base):
    """One sign-in, from sign-in to its end. The browser's cookie carries a random token; this row, found by the
    token's sha256, is what makes the browser signed in. Ending the row (sign-out, timeout, the absolute
    lifetime, a password change or reset, deactivation, lockout) ends the session at once, whatever copy of
    the cookie exists. Rows are ended, never deleted: they say who was signed in when."""

    __tablename__ = "user_session"

    id: so.Mapped[IntPK]
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    started_at: so.Mapped[UTC]
    last_seen_at: so.Mapped[UTC]
    # 21 CFR 11.200: the first signature of a continuous session takes user name and password, later ones the
    # password alone.
    has_signed: so.Mapped[bool] = so.mapped_column(default=False)
    ended_at: so.Mapped[datetime | None]
    end_reason: so.Mapped[str | None] = so.mapped_column(sa.String(40))


class PasswordHistory(Base):
    """A password an account had before its current one (its argon2 hash), so that a new password is not one of
    the last ``PASSWORD_HISTORY`` (NIST SP 800-63B: the site's choice, here a validated setting)."""

    __tablename__ = "password_history"

    id: so.Mapped[IntPK]
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    password_hash: so.Mapped[str] = so.mapped_column(sa.String(255))
    replaced_at: so.Mapped[UTC]
