from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from .base import UTC, Audited, Base, IntPK


class DocumentJob(Audited, Base):
    """The transactional outbox of QA's decisions: "the documents of this decision are to be made",
    written in the decision's own transaction, then claimed and completed by a documents worker
    (``services.document_jobs``, ``mfg.document_worker``).

    A job changes state (pending -> claimed -> done, or back to pending after a failed attempt, or failed
    after too many), so the table is not append-only; every change is audited like any GMP record, no row
    is ever deleted, and what the job was asked to do (batch, decision, documents, who decided, when) is
    immutable in the database (``mfg.migrate.GUARDS``)."""

    __tablename__ = "document_job"

    id: so.Mapped[IntPK]
    batch_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("batch.id"), index=True)
    decision_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("batch_decision.id"))
    kinds: so.Mapped[str] = so.mapped_column(sa.String(120))  # comma-separated document kinds, in order
    reason: so.Mapped[str] = so.mapped_column(sa.Text)
    status: so.Mapped[str] = so.mapped_column(sa.String(20), index=True)
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    claim_token: so.Mapped[str | None] = so.mapped_column(sa.String(36))
    claimed_by: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    claimed_at: so.Mapped[datetime | None]
    last_error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    created_at: so.Mapped[UTC]
    created_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    done_at: so.Mapped[datetime | None]

    @property
    def kind_list(self) -> list[str]:
        return [k for k in self.kinds.split(",") if k]
