from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from .base import UTC, Audited, Base, Hash64, IntPK


class QualificationRecord(Audited, Base):
    """One run of ``flask --app mfg qualify`` (installation qualification): the signed PDF/A report it
    wrote, stored once with its sha256 so that ``verify-pdf`` can check a filed copy. Append-only.

    ``run_by`` is the account of the operating system that ran the command (no user of the product signs
    in to qualify an installation); ``failed`` names the checks that failed, empty when all passed."""

    __tablename__ = "qualification_record"
    __audit_omit__ = frozenset({"content"})  # the file is audited by its sha256

    id: so.Mapped[IntPK]
    run_at: so.Mapped[UTC]
    run_by: so.Mapped[str] = so.mapped_column(sa.String(200))
    host: so.Mapped[str] = so.mapped_column(sa.String(255))
    passed: so.Mapped[bool]
    failed: so.Mapped[str] = so.mapped_column(sa.Text)
    lock_sha256: so.Mapped[Hash64]
    filename: so.Mapped[str] = so.mapped_column(sa.String(200))
    sha256: so.Mapped[str] = so.mapped_column(sa.String(64), index=True)
    snapshot_sha256: so.Mapped[Hash64]
    pages: so.Mapped[int]
    content: so.Mapped[bytes] = so.mapped_column(sa.LargeBinary, deferred=True)
