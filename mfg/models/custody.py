from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from ..domain import isbt128
from .base import UTC, Audited, Base, IntPK, Signable


class CustodyEvent(Audited, Signable, Base):
    """A hand-off of a product (chain of custody) or the two-person bedside check. Append-only.

    ``kind`` is ``handoff`` (who, when, from, to, condition, the scanned bag) or ``bedside`` (the bag and
    the subject's identifier scanned by one person and again by a second, different person).
    """

    __tablename__ = "custody_event"

    id: so.Mapped[IntPK]
    batch_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("batch.id"), index=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(20))
    scanned_din: so.Mapped[str] = so.mapped_column(sa.String(20))
    scanned_coi: so.Mapped[str | None] = so.mapped_column(sa.String(20))
    # The bag infused (bedside) or handed on: scanned by its product code with division. None on events
    # recorded before bags were scanned (migration 0012) and on hand-offs of the starting material.
    bag_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("product_bag.id"))
    from_location: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    to_location: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    condition: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    performed_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    verified_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    occurred_at: so.Mapped[UTC]

    def signed_content(self) -> dict[str, Any]:
        return {"record": "custody_event", "batch_id": self.batch_id, "kind": self.kind,
                "scanned_din": self.scanned_din, "scanned_coi": self.scanned_coi, "bag_id": self.bag_id,
                "from": self.from_location, "to": self.to_location, "condition": self.condition,
                "occurred_at": self.occurred_at}


class ProductBag(Audited, Base):
    """One bag of a divided product: an ISBT 128 division (``A0``, ``B0``, ...) of the batch's DIN.

    Made when the master record's dividing step is performed, from the dose plan recorded before it
    (``domain.dose.divide``): its volume, cells and expiry never change afterwards (database guard).
    """

    __tablename__ = "product_bag"

    id: so.Mapped[IntPK]
    batch_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("batch.id"))
    execution_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("step_execution.id"))
    position: so.Mapped[int]
    division: so.Mapped[str] = so.mapped_column(sa.String(2))
    product_code: so.Mapped[str] = so.mapped_column(sa.String(8))
    volume_ml: so.Mapped[Decimal] = so.mapped_column(sa.Numeric(12, 1))
    viable_cells: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    nk_cells: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    # CD3+ cells in the bag, when the dividing step's master record calculates them (issue [3.7] item 5);
    # None for bags of earlier versions.
    cd3_cells: so.Mapped[int | None] = so.mapped_column(sa.BigInteger)
    expires_at: so.Mapped[UTC]

    __table_args__ = (sa.UniqueConstraint("batch_id", "division"),)

    @property
    def product_code_barcode(self) -> str:
        """The product code as its ISBT 128 barcode data (data structure 003): ``=<`` + 8 characters."""
        return isbt128.PRODUCT_CODE_PREFIX + self.product_code
