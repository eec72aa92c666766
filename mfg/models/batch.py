from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from .base import UTC, Audited, Base, Hash64, IntPK, Signable, number_text, signed_form, utcnow

if TYPE_CHECKING:
    from .clinical import Subject
    from .sop import SopVersion
    from .user import User


class Batch(Audited, Base):
    """An executed batch record (a lot), made under the master record versions it pins."""

    __tablename__ = "batch"

    id: so.Mapped[IntPK]
    lot: so.Mapped[str] = so.mapped_column(sa.String(40), unique=True)
    status: so.Mapped[str] = so.mapped_column(sa.String(30), default="created", index=True)
    created_at: so.Mapped[UTC] = so.mapped_column(default=utcnow)
    created_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    # NK batches: the subject the product is made for and the collection's DIN (ISBT 128), which the
    # batch inherits with the subject's chain-of-identity id. Generic demo batches have neither.
    subject_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("subject.id"))
    din: so.Mapped[str | None] = so.mapped_column(sa.String(13), unique=True)
    # NK batches: the dose the product is made for, pinned from the subject when the batch starts
    # (starting.start_product_batch) and never changed: the signed dose level (code, NK cells per kg, the
    # trial configuration's wording), the weight it is given per kg of with the date it was measured, the
    # signature that assigned the level, and the trial configuration version it was assigned under (the
    # ``trial.*`` numbers). Every calculation, label and record of the batch reads these, never the subject's
    # current values: a later reassignment applies to later batches only. None for generic demo batches.
    dose_level: so.Mapped[str | None] = so.mapped_column(sa.String(10))
    dose_cells_per_kg: so.Mapped[int | None] = so.mapped_column(sa.BigInteger)
    dose_label: so.Mapped[str | None] = so.mapped_column(sa.Text)
    weight_kg: so.Mapped[Decimal | None] = so.mapped_column(sa.Numeric(6, 2))
    weight_measured_on: so.Mapped[date | None] = so.mapped_column(sa.Date)
    dose_signature_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("signature.id"))
    trial_config_version_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("sop_version.id"))
    # The signed escalation decision that opened the dose level (issue [3.7]), pinned with the dose; None
    # under a trial configuration without an escalation design.
    escalation_decision_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("escalation_decision.id"))
    row_version: so.Mapped[int] = so.mapped_column(default=1)

    created_by: so.Mapped["User"] = so.relationship()
    subject: so.Mapped["Subject | None"] = so.relationship()
    master_records: so.Mapped[list["BatchMasterRecord"]] = so.relationship(
        back_populates="batch", order_by="BatchMasterRecord.position")
    executions: so.Mapped[list["StepExecution"]] = so.relationship(back_populates="batch")

    __mapper_args__ = {"version_id_col": row_version}


class BatchMasterRecord(Audited, Base):
    """The master record versions a batch was started under, in the order they run. Never changed."""

    __tablename__ = "batch_master_record"

    batch_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("batch.id"), primary_key=True)
    position: so.Mapped[int] = so.mapped_column(primary_key=True)
    sop_version_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("sop_version.id"))

    batch: so.Mapped[Batch] = so.relationship(back_populates="master_records")
    sop_version: so.Mapped["SopVersion"] = so.relationship()


class StepExecution(Audited, Signable, Base):
    """One executed step (one instance of a repeatable step) of a batch.

    The unique key (batch, master record, step, instance) means two operators completing the same step
    at once cannot both succeed; ``row_version`` catches lost updates on later changes.
    """

    __tablename__ = "step_execution"

    id: so.Mapped[IntPK]
    batch_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("batch.id"))
    sop_version_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("sop_version.id"))
    stage_id: so.Mapped[str] = so.mapped_column(sa.String(40))
    step_id: so.Mapped[str] = so.mapped_column(sa.String(40))
    instance: so.Mapped[int] = so.mapped_column(default=1)
    # sha256 of the step definition's canonical JSON: what the values were entered against.
    definition_sha256: so.Mapped[Hash64]
    status: so.Mapped[str] = so.mapped_column(sa.String(30))
    comment: so.Mapped[str | None] = so.mapped_column(sa.Text)
    performed_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    performed_at: so.Mapped[UTC]
    performed_signature_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("signature.id"))
    verified_signature_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("signature.id"))
    row_version: so.Mapped[int] = so.mapped_column(default=1)

    batch: so.Mapped[Batch] = so.relationship(back_populates="executions")
    performed_by: so.Mapped["User"] = so.relationship()
    values: so.Mapped[list["RecordedValue"]] = so.relationship(back_populates="execution",
                                                               order_by="RecordedValue.id")

    __table_args__ = (sa.UniqueConstraint("batch_id", "sop_version_id", "step_id", "instance"),
                      sa.Index("ix_step_execution_batch", "batch_id", "id"))
    __mapper_args__ = {"version_id_col": row_version}

    def current_values(self) -> dict[str, "RecordedValue"]:
        """The latest value of each field: a correction supersedes, never overwrites."""
        superseded = {v.supersedes_id for v in self.values if v.supersedes_id}
        return {v.field_id: v for v in self.values if v.id not in superseded}

    def signed_content(self, form: int = 2) -> dict[str, Any]:
        """What a signature of this step binds. Form 2 (issue [3.5]) adds everything that decides each value's
        meaning: its type, what was typed, the number and instant it stands for, and the limits judgement
        (``in_limits``, ``limit_message``), so none of them can change under a signature unseen. Form 1 is
        kept for the signatures made with it (``signed_content_as``)."""
        values = {}
        for k, v in sorted(self.current_values().items()):
            value: dict[str, Any] = {"text": v.text, "unit": v.unit, "comment": v.comment, "value_id": v.id}
            if form >= 2:
                value.update(field_type=v.field_type, raw=v.raw, number=number_text(v.number), moment=v.moment,
                             in_limits=v.in_limits, limit_message=v.limit_message)
            values[k] = value
        content = {"record": "step_execution", "batch_id": self.batch_id, "sop_version_id": self.sop_version_id,
                   "step_id": self.step_id, "instance": self.instance, "definition_sha256": self.definition_sha256,
                   "comment": self.comment, "values": values}
        if form >= 2:
            content["form"] = 2
        return content

    def signed_content_as(self, stored: str) -> dict[str, Any]:
        return self.signed_content(signed_form(stored))


class RecordedValue(Audited, Base):
    """An observed or calculated value, as entered. Append-only: a correction is a new row that
    supersedes the old one with a reason; database triggers refuse UPDATE and DELETE."""

    __tablename__ = "recorded_value"

    id: so.Mapped[IntPK]
    execution_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("step_execution.id"))
    field_id: so.Mapped[str] = so.mapped_column(sa.String(40))
    field_type: so.Mapped[str] = so.mapped_column(sa.String(20))
    raw: so.Mapped[str] = so.mapped_column(sa.Text)
    text: so.Mapped[str] = so.mapped_column(sa.Text)
    number: so.Mapped[Decimal | None] = so.mapped_column(sa.Numeric(38, 10))
    moment: so.Mapped[datetime | None]
    unit: so.Mapped[str | None] = so.mapped_column(sa.String(40))
    in_limits: so.Mapped[bool] = so.mapped_column(default=True)
    limit_message: so.Mapped[str | None] = so.mapped_column(sa.Text)
    comment: so.Mapped[str | None] = so.mapped_column(sa.Text)
    entered_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    entered_at: so.Mapped[UTC]
    supersedes_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("recorded_value.id"))
    correction_reason: so.Mapped[str | None] = so.mapped_column(sa.Text)

    execution: so.Mapped[StepExecution] = so.relationship(back_populates="values")
    entered_by: so.Mapped["User"] = so.relationship()

    __table_args__ = (sa.Index("ix_recorded_value_execution", "execution_id"),)


class Deviation(Audited, Signable, Base):
    """A departure from the master record or its limits: opened automatically or by hand.

    QA classifies it (minor, major, critical), records the investigation, root cause, impact on this
    and other batches and a CAPA reference, and closes it with an e-signature bound to all of that.
    """

    __tablename__ = "deviation"

    id: so.Mapped[IntPK]
    number: so.Mapped[str] = so.mapped_column(sa.String(30), unique=True)
    batch_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("batch.id"))
    execution_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("step_execution.id"))
    step_id: so.Mapped[str | None] = so.mapped_column(sa.String(40))
    origin: so.Mapped[str] = so.mapped_column(sa.String(30))
    description: so.Mapped[str] = so.mapped_column(sa.Text)
    status: so.Mapped[str] = so.mapped_column(sa.String(20), default="open")
    opened_at: so.Mapped[UTC] = so.mapped_column(default=utcnow)
    opened_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    classification: so.Mapped[str | None] = so.mapped_column(sa.String(20))
    investigation: so.Mapped[str | None] = so.mapped_column(sa.Text)
    root_cause: so.Mapped[str | None] = so.mapped_column(sa.Text)
    impact: so.Mapped[str | None] = so.mapped_column(sa.Text)
    capa_reference: so.Mapped[str | None] = so.mapped_column(sa.String(60))
    closed_at: so.Mapped[UTC | None]
    closed_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    row_version: so.Mapped[int] = so.mapped_column(default=1)

    __table_args__ = (sa.Index("ix_deviation_batch", "batch_id", "status"),)
    __mapper_args__ = {"version_id_col": row_version}

    def signed_content(self) -> dict[str, Any]:
        return {"record": "deviation", "number": self.number, "batch_id": self.batch_id, "origin": self.origin,
                "description": self.description, "classification": self.classification,
                "investigation": self.investigation, "root_cause": self.root_cause, "impact": self.impact,
                "capa_reference": self.capa_reference, "status": self.status}


class SignatureInvalidation(Audited, Base):
    """A signature that no longer stands because the signed data was corrected. Append-only."""

    __tablename__ = "signature_invalidation"

    signature_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("signature.id"), primary_key=True)
    invalidated_at: so.Mapped[UTC]
    invalidated_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    reason: so.Mapped[str] = so.mapped_column(sa.Text)
