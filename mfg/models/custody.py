from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from typing import Any

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
    from_location: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    to_location: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    condition: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    performed_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    verified_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    occurred_at: so.Mapped[UTC]

    def signed_content(self) -> dict[str, Any]:
        return {"record": "custody_event", "batch_id": self.batch_id, "kind": self.kind,
                "scanned_din": self.scanned_din, "scanned_coi": self.scanned_coi,
                "from": self.from_location, "to": self.to_location, "condition": self.condition,
                "occurred_at": self.occurred_at}
