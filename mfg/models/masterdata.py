from __future__ import annotations

from datetime import date

import sqlalchemy as sa
import sqlalchemy.orm as so

from .base import UTC, Audited, Base, IntPK, utcnow


class Equipment(Audited, Base):
    """A piece of equipment a step may use: it must be in service and within calibration."""

    __tablename__ = "equipment"

    id: so.Mapped[IntPK]
    identifier: so.Mapped[str] = so.mapped_column(sa.String(60), unique=True)
    equipment_type: so.Mapped[str] = so.mapped_column(sa.String(100))
    description: so.Mapped[str] = so.mapped_column(sa.String(200), default="")
    status: so.Mapped[str] = so.mapped_column(sa.String(20), default="in_service")
    calibration_due: so.Mapped[date | None] = so.mapped_column(sa.Date)
    created_at: so.Mapped[UTC] = so.mapped_column(default=utcnow)


class MaterialLot(Audited, Base):
    """A received lot of a material (reagent, cytokine, bag...): expiry and QC status decide its use."""

    __tablename__ = "material_lot"

    id: so.Mapped[IntPK]
    material: so.Mapped[str] = so.mapped_column(sa.String(100))
    lot_number: so.Mapped[str] = so.mapped_column(sa.String(60))
    expiry: so.Mapped[date] = so.mapped_column(sa.Date)
    qc_status: so.Mapped[str] = so.mapped_column(sa.String(20), default="quarantine")
    received_at: so.Mapped[UTC] = so.mapped_column(default=utcnow)

    __table_args__ = (sa.UniqueConstraint("material", "lot_number"),)


class Counter(Base):
    """Named sequences (lot numbers, deviation numbers, DINs) that are never reused.

    ``services.sequences.next_value`` increments with one UPDATE ... RETURNING, which serialises
    concurrent callers on SQLite and PostgreSQL alike.
    """

    __tablename__ = "counter"

    name: so.Mapped[str] = so.mapped_column(sa.String(60), primary_key=True)
    value: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
