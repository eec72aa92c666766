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
    # False when an administrator set the password (create, reset): it signs nothing until its owner replaces
    # it (``change_password``). Accounts that existed before migration 0019 start False.
    password_set_by_self: so.Mapped[bool] = so.mapped_column(default=False)
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


class RoleGrant(Audited, Base):
    """A signing role an administrator granted, pending until a second person confirms it (the two-person rule,
    ``ROLE_GRANT_TWO_PERSON``; ``domain.guards.confirm_role_grant``). The role is in ``User.roles``, and so counts
    for anything, only once confirmed. Never deleted; who asked and what cannot change (database triggers)."""

    __tablename__ = "role_grant"

    id: so.Mapped[IntPK]
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    role: so.Mapped[str] = so.mapped_column(sa.String(20))
    # the requesting administrator; None when the command line asked (``requested_by`` names it)
    requested_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    requested_by: so.Mapped[str] = so.mapped_column(sa.String(64))
    requested_at: so.Mapped[UTC]
    confirmed_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    confirmed_at: so.Mapped[datetime | None]
    # withdrawn: the role was taken off the account before anyone confirmed it
    withdrawn_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    withdrawn_at: so.Mapped[datetime | None]

    user: so.Mapped[User] = so.relationship(foreign_keys=[user_id])

    @property
    def pending(self) -> bool:
        return self.confirmed_at is None and self.withdrawn_at is None
