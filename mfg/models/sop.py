from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from .base import UTC, Audited, Base, Hash64, IntPK, Signable, utcnow

if TYPE_CHECKING:
    from .signature import Signature
    from .user import User


class SopVersion(Audited, Signable, Base):
    """One version of a controlled definition file (master batch record), stored once, immutable.

    ``content`` is the file's text exactly as loaded and ``sha256`` its hash; a trigger refuses any
    change to either. Only ``status`` and the approval columns move, through services.sops.
    """

    __tablename__ = "sop_version"
    __audit_omit__ = frozenset({"content"})  # the sha256 is recorded; the text is in this row, immutable

    id: so.Mapped[IntPK]
    code: so.Mapped[str] = so.mapped_column(sa.String(40))
    version: so.Mapped[int]
    kind: so.Mapped[str] = so.mapped_column(sa.String(40))
    title: so.Mapped[str] = so.mapped_column(sa.String(200))
    source_name: so.Mapped[str] = so.mapped_column(sa.String(255))
    content: so.Mapped[str] = so.mapped_column(sa.Text)
    sha256: so.Mapped[Hash64]
    status: so.Mapped[str] = so.mapped_column(sa.String(20), default="draft")
    loaded_at: so.Mapped[UTC] = so.mapped_column(default=utcnow)
    loaded_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    approved_at: so.Mapped[datetime | None]
    approved_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    approval_signature_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("signature.id"))
    superseded_at: so.Mapped[datetime | None]

    loaded_by: so.Mapped["User"] = so.relationship(foreign_keys=[loaded_by_id])
    approved_by: so.Mapped["User | None"] = so.relationship(foreign_keys=[approved_by_id])
    approval_signature: so.Mapped["Signature | None"] = so.relationship()

    __table_args__ = (
        sa.UniqueConstraint("code", "version"),
        sa.Index("ix_sop_version_code_status", "code", "status"),
    )

    def signed_content(self) -> dict[str, Any]:
        return {"record": "sop_version", "code": self.code, "version": self.version, "kind": self.kind,
                "title": self.title, "sha256": self.sha256}
