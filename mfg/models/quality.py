from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from .base import UTC, Audited, Base, IntPK, Signable, signed_form


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


class PendingResult(Audited, Signable, Base):
    """A result the specification allowed to be pending at release (e.g. the 14-day sterility culture),
    made a record of its own at the conditional release, with its due time (sample time + the method's
    duration). Its result is entered later as its own signed action ("result entry") and verified by a second
    person; the pending value stays in the step's record. Never deleted; what it names never changes
    (database guard); the entry columns are written once, by the entry.

    ``status``: ``pending`` -> ``awaiting_verification`` (entered) -> ``complete`` (verified).
    """

    __tablename__ = "pending_result"

    id: so.Mapped[IntPK]
    batch_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("batch.id"), index=True)
    execution_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("step_execution.id"))
    field_id: so.Mapped[str] = so.mapped_column(sa.String(40))
    pending_value_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("recorded_value.id"), unique=True)
    label: so.Mapped[str] = so.mapped_column(sa.String(200))
    method: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    sampled_at: so.Mapped[UTC | None]
    due_at: so.Mapped[UTC | None]
    decision_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("batch_decision.id"))
    created_at: so.Mapped[UTC]
    status: so.Mapped[str] = so.mapped_column(sa.String(30), default="pending", index=True)
    result_text: so.Mapped[str | None] = so.mapped_column(sa.Text)
    in_limits: so.Mapped[bool | None]
    limit_message: so.Mapped[str | None] = so.mapped_column(sa.Text)
    comment: so.Mapped[str | None] = so.mapped_column(sa.Text)
    entered_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    entered_at: so.Mapped[UTC | None]
    verified_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    verified_at: so.Mapped[UTC | None]
    row_version: so.Mapped[int] = so.mapped_column(default=1)

    __mapper_args__ = {"version_id_col": row_version}

    def signed_content(self, form: int = 2) -> dict[str, Any]:
        """Form 2 (issue [3.5]) adds the result's limits judgement; form 1 stays for the signatures made with it."""
        content = {"record": "pending_result", "batch_id": self.batch_id, "execution_id": self.execution_id,
                   "field_id": self.field_id, "pending_value_id": self.pending_value_id, "result": self.result_text,
                   "comment": self.comment, "entered_at": self.entered_at}
        if form >= 2:
            content.update(form=2, in_limits=self.in_limits, limit_message=self.limit_message)
        return content

    def signed_content_as(self, stored: str) -> dict[str, Any]:
        return self.signed_content(signed_form(stored))


class BagBlock(Audited, Base):
    """A bag blocked from infusion: every bag not yet infused when the batch went under investigation.
    Append-only; a blocked bag at a hand-off or the bedside is a hard stop."""

    __tablename__ = "bag_block"

    id: so.Mapped[IntPK]
    bag_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("product_bag.id"), index=True)
    batch_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("batch.id"), index=True)
    deviation_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("deviation.id"))
    reason: so.Mapped[str] = so.mapped_column(sa.Text)
    blocked_at: so.Mapped[UTC]
    blocked_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))


class ClinicalAlert(Audited, Signable, Base):
    """The clinic must know: a result failed after a conditional release. Every clinical user sees it on
    every page until one of them acknowledges it with a signature. ``finding`` names the subject, the DIN,
    the bags and when each was infused, frozen when raised. Never deleted; only the acknowledgement is
    written later."""

    __tablename__ = "clinical_alert"

    id: so.Mapped[IntPK]
    batch_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("batch.id"), index=True)
    deviation_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("deviation.id"))
    finding: so.Mapped[str] = so.mapped_column(sa.Text)
    raised_at: so.Mapped[UTC]
    acknowledged_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    acknowledged_at: so.Mapped[UTC | None] = so.mapped_column(index=True)
    row_version: so.Mapped[int] = so.mapped_column(default=1)

    __mapper_args__ = {"version_id_col": row_version}

    def signed_content(self) -> dict[str, Any]:
        return {"record": "clinical_alert", "batch_id": self.batch_id, "deviation_id": self.deviation_id,
                "finding": self.finding, "raised_at": self.raised_at}
