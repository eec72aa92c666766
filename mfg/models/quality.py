from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from .base import UTC, Audited, Base, IntPK, Signable


class ReviewMark(Audited, Base):
    """QA marked one exception of a batch's review (a value out of limit, a correction...) as reviewed.
    Append-only: ``item_key`` names the exception (``value:<id>``, ``deviation:<id>``, ...)."""

    __tablename__ = "review_mark"

    id: so.Mapped[IntPK]
    batch_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("batch.id"))
    item_key: so.Mapped[str] = so.mapped_column(sa.String(80))
    reviewed_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    reviewed_at: so.Mapped[UTC]
    comment: so.Mapped[str | None] = so.mapped_column(sa.Text)

    __table_args__ = (sa.UniqueConstraint("batch_id", "item_key"),)


class BatchDecision(Audited, Signable, Base):
    """QA's disposition of a batch, signed: released, conditionally released (naming the results still
    pending) or rejected. Append-only; a conditional release is followed by a final decision."""

    __tablename__ = "batch_decision"

    id: so.Mapped[IntPK]
    batch_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("batch.id"), index=True)
    decision: so.Mapped[str] = so.mapped_column(sa.String(30))
    pending: so.Mapped[str | None] = so.mapped_column(sa.Text)
    comment: so.Mapped[str | None] = so.mapped_column(sa.Text)
    decided_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    decided_at: so.Mapped[UTC]

    def signed_content(self) -> dict[str, Any]:
        return {"record": "batch_decision", "batch_id": self.batch_id, "decision": self.decision,
                "pending": self.pending, "comment": self.comment, "decided_at": self.decided_at}


class DocumentRevision(Audited, Signable, Base):
    """A signed document the product wrote (batch record, certificate of analysis, labels), stored once
    with its sha256; a change is a new revision, every revision stays available. Append-only."""

    __tablename__ = "document_revision"

    id: so.Mapped[IntPK]
    batch_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("batch.id"))
    kind: so.Mapped[str] = so.mapped_column(sa.String(30))
    revision: so.Mapped[int]
    filename: so.Mapped[str] = so.mapped_column(sa.String(120))
    sha256: so.Mapped[str] = so.mapped_column(sa.String(64))
    snapshot_sha256: so.Mapped[str] = so.mapped_column(sa.String(64))
    pages: so.Mapped[int]
    reason: so.Mapped[str] = so.mapped_column(sa.Text)
    content: so.Mapped[bytes] = so.mapped_column(sa.LargeBinary, deferred=True)
    created_at: so.Mapped[UTC]
    created_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))

    __audit_omit__ = frozenset({"content"})  # the file is audited by its sha256
    __table_args__ = (sa.UniqueConstraint("batch_id", "kind", "revision"),)

    def signed_content(self) -> dict[str, Any]:
        return {"record": "document_revision", "batch_id": self.batch_id, "kind": self.kind,
                "revision": self.revision, "sha256": self.sha256, "reason": self.reason}
