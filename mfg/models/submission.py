from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from .base import UTC, Base, IntPK


class FormSubmission(Base):
    """One submission of a form that changes something: its one-time token (``mfg/static/once.js`` puts a
    fresh one in every POST form a page shows), claimed in the same transaction as what the submission
    does (``web.security.transaction``), and where it led.

    A second submission carrying the same token (a double tap, a reload that posts again, the back button
    and a resubmission) finds the token taken (the unique key; a concurrent twin waits for the first one's
    commit) and gets the first one's result, never a second record. This is request bookkeeping, not GMP
    data: what a submission created is audited with it; this row is not (``location`` is filled in after
    the commit, when the response is known)."""

    __tablename__ = "form_submission"

    id: so.Mapped[IntPK]
    token: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    user_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    endpoint: so.Mapped[str] = so.mapped_column(sa.String(120))
    created_at: so.Mapped[UTC]
    location: so.Mapped[str | None] = so.mapped_column(sa.String(500))
