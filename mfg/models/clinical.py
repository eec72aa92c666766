from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from .base import UTC, Audited, Base, IntPK, Signable, utcnow


class Donor(Audited, Base):
    """The donor of the cells (usually the original transplant donor), with the eligibility
    determination (21 CFR 1271 subpart C) that intake checks."""

    __tablename__ = "donor"

    id: so.Mapped[IntPK]
    code: so.Mapped[str] = so.mapped_column(sa.String(40), unique=True)
    abo_rh: so.Mapped[str | None] = so.mapped_column(sa.String(10))
    # The donor's relationship to the subject (a code of the trial configuration's donor_eligibility
    # relationships); None for donors registered before it was recorded (migration 0021).
    relationship: so.Mapped[str | None] = so.mapped_column(sa.String(40))
    eligibility: so.Mapped[str] = so.mapped_column(sa.String(20), default="pending")
    eligibility_summary: so.Mapped[str | None] = so.mapped_column(sa.Text)
    determined_at: so.Mapped[datetime | None]
    determined_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    created_at: so.Mapped[UTC] = so.mapped_column(default=utcnow)

    tests: so.Mapped[list["DonorTest"]] = so.relationship(back_populates="donor", order_by="DonorTest.id")


class DonorTest(Audited, Base):
    """An infectious-disease test result of a donor, with the date the specimen was drawn."""

    __tablename__ = "donor_test"

    id: so.Mapped[IntPK]
    donor_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("donor.id"))
    test: so.Mapped[str] = so.mapped_column(sa.String(60))
    result: so.Mapped[str] = so.mapped_column(sa.String(20))
    specimen_date: so.Mapped[date] = so.mapped_column(sa.Date)
    recorded_at: so.Mapped[UTC] = so.mapped_column(default=utcnow)
    recorded_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))

    donor: so.Mapped[Donor] = so.relationship(back_populates="tests")


class Subject(Audited, Signable, Base):
    """A trial subject: code, weight with its date, donor, dose level, and the chain-of-identity
    identifier (ISBT 128 data structure 040) that follows every product made for them."""

    __tablename__ = "subject"

    id: so.Mapped[IntPK]
    code: so.Mapped[str] = so.mapped_column(sa.String(40), unique=True)
    coi: so.Mapped[str] = so.mapped_column(sa.String(20), unique=True)
    donor_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("donor.id"))
    weight_kg: so.Mapped[Decimal] = so.mapped_column(sa.Numeric(6, 2))
    weight_measured_on: so.Mapped[date] = so.mapped_column(sa.Date)
    dose_level: so.Mapped[str | None] = so.mapped_column(sa.String(10))
    dose_cells_per_kg: so.Mapped[int | None] = so.mapped_column(sa.BigInteger)
    trial_config_version_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("sop_version.id"))
    dose_signature_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("signature.id"))
    # The cohort the subject is assigned to with the dose level, and the signed escalation decision that had
    # opened that level (issue [3.7]); None under a trial configuration without an escalation design.
    cohort: so.Mapped[int | None]
    escalation_decision_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("escalation_decision.id"))
    enrolled_at: so.Mapped[UTC] = so.mapped_column(default=utcnow)
    enrolled_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))

    donor: so.Mapped[Donor] = so.relationship()

    def signed_content(self) -> dict[str, Any]:
        """What the clinical coordinator attests when assigning the dose level."""
        return {"record": "subject", "code": self.code, "coi": self.coi, "donor_id": self.donor_id,
                # Fixed at the column's two decimals: PostgreSQL and SQLite return 62.40 and 62.4.
                "weight_kg": f"{Decimal(self.weight_kg):.2f}",
                "weight_measured_on": self.weight_measured_on.isoformat(),
                "dose_level": self.dose_level, "dose_cells_per_kg": self.dose_cells_per_kg,
                "trial_config_version_id": self.trial_config_version_id,
                # issue [3.7]: present only once a cohort is assigned, so signatures made before keep their content
                **({"cohort": self.cohort, "escalation_decision_id": self.escalation_decision_id}
                   if self.cohort is not None else {})}
