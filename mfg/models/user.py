from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from .base import UTC, Audited, Base, IntPK, utcnow


class User(Audited, Base):
    """A person's unique account. Deactivated, never deleted (21 CFR 11.100, 11.300)."""

    __tablename__ = "user_account"
    __audit_redact__ = frozenset({"password_hash"})

    id: so.Mapped[IntPK]
    username: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    full_name: so.Mapped[str] = so.mapped_column(sa.String(200))
    # Sorted, comma-separated role names (domain.accounts.ROLES).
    roles: so.Mapped[str] = so.mapped_column(sa.String(200))
    password_hash: so.Mapped[str] = so.mapped_column(sa.String(255))
    password_changed_at: so.Mapped[UTC]
    must_change_password: so.Mapped[bool] = so.mapped_column(default=True)
    failed_logins: so.Mapped[int] = so.mapped_column(default=0)
    locked_at: so.Mapped[datetime | None]
    active: so.Mapped[bool] = so.mapped_column(default=True)
    created_at: so.Mapped[UTC] = so.mapped_column(default=utcnow)
    last_login_at: so.Mapped[datetime | None]

    @property
    def role_list(self) -> list[str]:
        return [r for r in self.roles.split(",") if r]

    def has_role(self, *roles: str) -> bool:
        return any(r in self.role_list for r in roles)

    @property
    def locked(self) -> bool:
        return self.locked_at is not None

    # Flask-Login protocol
    @property
    def is_active(self) -> bool:
        return self.active and not self.locked

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        """Flask-Login's id; whether the browser is still signed in is the server-side session's to say
        (``services.sessions``)."""
        return str(self.id)
