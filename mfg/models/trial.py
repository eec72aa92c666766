"""The trial's own records (issue [3.7]): the eligibility screening a subject is enrolled on, the DLT events the
clinic records, and the safety review's signed escalation decisions that open each dose level."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from .base import UTC, Audited, Base, IntPK, Signable, number_text, utcnow


class SubjectScreening(Audited, Signable, Base):
    """The eligibility screening a subject was enrolled on (one per subject), signed "Approved by" by the
    clinical coordinator who enrolled them: age, ECOG, the planned first treatment date, and every finding (lab
    value with its unit, ULN and date; exclusion answer), checked against the trial configuration version named."""

    __tablename__ = "subject_screening"

    id: so.Mapped[IntPK]
    subject_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("subject.id"), unique=True)
    trial_config_version_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("sop_version.id"))
    age_years: so.Mapped[int]
    ecog: so.Mapped[int]
    first_treatment_on: so.Mapped[date] = so.mapped_column(sa.Date)
    recorded_at: so.Mapped[UTC] = so.mapped_column(default=utcnow)
    recorded_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))

    findings: so.Mapped[list["ScreeningFinding"]] = so.relationship(back_populates="screening",
                                                                    order_by="ScreeningFinding.id")

    def signed_content(self) -> dict[str, Any]:
        return {"record": "subject_screening", "subject_id": self.subject_id,
                "trial_config_version_id": self.trial_config_version_id, "age_years": self.age_years,
                "ecog": self.ecog, "first_treatment_on": self.first_treatment_on.isoformat(),
                "findings": [f.content() for f in self.findings]}


class ScreeningFinding(Audited, Base):
    """One finding of a screening: a lab value (``value`` with ``unit``, the laboratory's ``uln`` for a limit
    relative to it, ``measured_on``) or an exclusion question's ``answer``."""

    __tablename__ = "screening_finding"

    id: so.Mapped[IntPK]
    screening_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("subject_screening.id"), index=True)
    code: so.Mapped[str] = so.mapped_column(sa.String(40))
    label: so.Mapped[str] = so.mapped_column(sa.String(200))
    value: so.Mapped[Decimal | None] = so.mapped_column(sa.Numeric(18, 6))
    uln: so.Mapped[Decimal | None] = so.mapped_column(sa.Numeric(18, 6))
    unit: so.Mapped[str | None] = so.mapped_column(sa.String(40))
    measured_on: so.Mapped[date | None] = so.mapped_column(sa.Date)
    answer: so.Mapped[bool | None]

    screening: so.Mapped[SubjectScreening] = so.relationship(back_populates="findings")

    def content(self) -> dict[str, Any]:
        return {"code": self.code, "value": number_text(self.value), "uln": number_text(self.uln),
                "unit": self.unit, "measured_on": self.measured_on.isoformat() if self.measured_on else None,
                "answer": self.answer}


class DltEvent(Audited, Signable, Base):
    """An adverse event a clinical user records for a subject during follow-up (NCI-CTCAE v5.0 term and grade,
    attribution to the product, onset date) and whether the clinic judges it dose-limiting; signed
    "Performed by". Append-only: a later judgement is a new event."""

    __tablename__ = "dlt_event"

    id: so.Mapped[IntPK]
    subject_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("subject.id"), index=True)
    term: so.Mapped[str] = so.mapped_column(sa.String(200))
    grade: so.Mapped[int]
    attribution: so.Mapped[str] = so.mapped_column(sa.String(20))
    onset_on: so.Mapped[date] = so.mapped_column(sa.Date)
    is_dlt: so.Mapped[bool]
    comment: so.Mapped[str | None] = so.mapped_column(sa.Text)
    recorded_at: so.Mapped[UTC] = so.mapped_column(default=utcnow)
    recorded_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))

    def signed_content(self) -> dict[str, Any]:
        return {"record": "dlt_event", "subject_id": self.subject_id, "term": self.term, "grade": self.grade,
                "attribution": self.attribution, "onset_on": self.onset_on.isoformat(), "is_dlt": self.is_dlt,
                "comment": self.comment}


class EscalationDecision(Audited, Signable, Base):
    """The safety review's decision on the dose level open to new subjects, signed "Approved by". Only a signed
    decision opens a level; the newest signed one is in force. ``recommendation`` is what the rule computed from
    the ledger (``ledger``: the counts it saw, in words); a decision that differs from it carries a ``reason``.
    ``level`` None: no level is open (the trial stops enrolling)."""

    __tablename__ = "escalation_decision"

    id: so.Mapped[IntPK]
    trial_config_version_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("sop_version.id"))
    from_level: so.Mapped[str | None] = so.mapped_column(sa.String(10))
    recommendation: so.Mapped[str] = so.mapped_column(sa.String(40))
    recommended_level: so.Mapped[str | None] = so.mapped_column(sa.String(10))
    action: so.Mapped[str] = so.mapped_column(sa.String(40))
    level: so.Mapped[str | None] = so.mapped_column(sa.String(10))
    reason: so.Mapped[str | None] = so.mapped_column(sa.Text)
    ledger: so.Mapped[str] = so.mapped_column(sa.Text)
    decided_at: so.Mapped[UTC] = so.mapped_column(default=utcnow)
    decided_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))

    def signed_content(self) -> dict[str, Any]:
        return {"record": "escalation_decision", "trial_config_version_id": self.trial_config_version_id,
                "from_level": self.from_level, "recommendation": self.recommendation,
                "recommended_level": self.recommended_level, "action": self.action, "level": self.level,
                "reason": self.reason, "ledger": self.ledger}


class LedgerDocument(Audited, Base):
    """One issued revision of the cohort ledger as a signed PDF/A-3b (``services.ledger_documents``), stored once
    with its sha256 and the sha256 of the ledger data it embeds, so that ``verify-pdf`` can check a filed copy.
    Revisions are numbered from 1 in issue order; every revision stays available. Append-only."""

    __tablename__ = "ledger_document"
    __audit_omit__ = frozenset({"content"})  # the file is audited by its sha256

    id: so.Mapped[IntPK]
    revision: so.Mapped[int] = so.mapped_column(unique=True)
    trial_config_version_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("sop_version.id"))
    filename: so.Mapped[str] = so.mapped_column(sa.String(120))
    sha256: so.Mapped[str] = so.mapped_column(sa.String(64), index=True)
    snapshot_sha256: so.Mapped[str] = so.mapped_column(sa.String(64))
    pages: so.Mapped[int]
    reason: so.Mapped[str] = so.mapped_column(sa.Text)
    content: so.Mapped[bytes] = so.mapped_column(sa.LargeBinary, deferred=True)
    created_at: so.Mapped[UTC]
    created_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
