from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
import sqlalchemy.orm as so

from .base import UTC, Audited, Base, Hash64, IntPK

if TYPE_CHECKING:
    from .user import User


class Signature(Audited, Base):
    """An executed e-signature (21 CFR 11.50/11.70). Append-only: triggers refuse UPDATE and DELETE.

    ``content`` is the canonical JSON of exactly what was signed; ``content_sha256`` its hash. The
    signature check recomputes the record's content and reports any record that no longer matches.
    """

    __tablename__ = "signature"
    __audit_omit__ = frozenset({"content"})  # content_sha256 is recorded; the content is in this row

    id: so.Mapped[IntPK]
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    username: so.Mapped[str] = so.mapped_column(sa.String(64))
    printed_name: so.Mapped[str] = so.mapped_column(sa.String(200))
    meaning: so.Mapped[str] = so.mapped_column(sa.String(20))
    signed_at: so.Mapped[UTC]
    comment: so.Mapped[str | None] = so.mapped_column(sa.Text)
    record_type: so.Mapped[str] = so.mapped_column(sa.String(60))
    record_id: so.Mapped[str] = so.mapped_column(sa.String(60))
    content: so.Mapped[str] = so.mapped_column(sa.Text)
    content_sha256: so.Mapped[Hash64]
    # Whether the signer's password was last set by the signer (not by an administrator), and when it was set
    # (migration 0019; NULL on signatures made before). The signing guard refuses a password an administrator set,
    # so every signature made since says True.
    own_password: so.Mapped[bool | None]
    password_set_at: so.Mapped[datetime | None]

    user: so.Mapped["User"] = so.relationship()

    __table_args__ = (sa.Index("ix_signature_record", "record_type", "record_id"),)


class SignatureSeal(Base):
    """The seal of one signature's manifest with the instance's audit key (``domain.audit_chain.seal_signature``),
    written in the same transaction as the signature. Append-only. Not itself audited: the seal is the evidence,
    and the signature's own audit entry already records the signing.

    Someone who can write the database but not the key cannot make a signature (or rewrite what one signed) whose
    seal matches; ``services.signatures.check_all`` reports a signature without a matching seal.
    """

    __tablename__ = "signature_seal"

    signature_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("signature.id"), primary_key=True,
                                                    autoincrement=False)
    key_id: so.Mapped[str] = so.mapped_column(sa.String(40))
    seal: so.Mapped[str] = so.mapped_column(sa.String(64))
