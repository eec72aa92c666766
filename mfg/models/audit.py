from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from ..domain.audit_chain import Anchor, ChainEntry
from .base import UTC, Base, Hash64


class AuditEntry(Base):
    """One append-only, hash-chained audit trail entry. Database triggers refuse UPDATE and DELETE."""

    __tablename__ = "audit_entry"

    seq: so.Mapped[int] = so.mapped_column(primary_key=True, autoincrement=False)
    occurred_at: so.Mapped[UTC]
    user_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    username: so.Mapped[str] = so.mapped_column(sa.String(200))
    action: so.Mapped[str] = so.mapped_column(sa.String(60))
    entity_type: so.Mapped[str | None] = so.mapped_column(sa.String(60))
    entity_id: so.Mapped[str | None] = so.mapped_column(sa.String(60))
    before: so.Mapped[str | None] = so.mapped_column(sa.Text)
    after: so.Mapped[str | None] = so.mapped_column(sa.Text)
    reason: so.Mapped[str | None] = so.mapped_column(sa.Text)
    prev_hash: so.Mapped[Hash64]
    entry_hash: so.Mapped[Hash64]

    __table_args__ = (
        sa.Index("ix_audit_entry_entity", "entity_type", "entity_id", "seq"),
        sa.Index("ix_audit_entry_user_seq", "user_id", "seq"),
        # the audit trail screen's filters, each read newest first (services.audit.search)
        sa.Index("ix_audit_entry_username_seq", "username", "seq"),
        sa.Index("ix_audit_entry_action_seq", "action", "seq"),
        # a date range resolved to the range of sequence numbers it covers (services.audit.search)
        sa.Index("ix_audit_entry_occurred_at_seq", "occurred_at", "seq"),
    )

    def chain_entry(self) -> ChainEntry:
        return ChainEntry(self.seq, self.occurred_at, self.user_id, self.username, self.action,
                          self.entity_type, self.entity_id, self.before, self.after, self.reason,
                          self.prev_hash)


class AuditHead(Base):
    """The last sequence number and hash the application appended (one row, id 1).

    Appenders lock this row first (an UPDATE), which serialises appends on SQLite and PostgreSQL
    alike, so the chain never forks; ``audit verify`` compares it with the trail's real end.

    It also keeps what the trail's times are known to be: ``max_at``, the latest time of any entry, and
    ``unordered_at``, the latest time of an entry written earlier than an entry before it (the server's
    clock was set back), or NULL if the times never went back. Entries at or after ``unordered_at`` are in
    time order, so a date range among them is a range of sequence numbers. ``audit verify`` recomputes
    both from the trail.

    ``seal_key_id`` and ``seal`` are the keyed seal over all of the above (``domain.audit_chain.seal_head``),
    written by the same UPDATE that moves the head: no one without the instance's audit key can seal a head.
    """

    __tablename__ = "audit_head"

    id: so.Mapped[int] = so.mapped_column(primary_key=True, autoincrement=False)
    seq: so.Mapped[int]
    entry_hash: so.Mapped[Hash64]
    max_at: so.Mapped[UTC | None]
    unordered_at: so.Mapped[UTC | None]
    seal_key_id: so.Mapped[str | None] = so.mapped_column(sa.String(40))
    seal: so.Mapped[str | None] = so.mapped_column(sa.String(64))


class AuditCheckpoint(Base):
    """A position of the audit trail (a head as it was) sealed as an anchor with the instance's audit key
    (``domain.audit_chain.seal_anchor``). Append-only; not itself audited (its seal is the evidence, and the
    event that records it, ``audit.verified`` or ``audit.checkpoint_exported``, names its sequence number).

    ``kind`` says why it was taken: ``verified``, after a verify that passed (``audit verify --since-last``
    starts from the latest one); ``exported``, written to a file to keep off-site (``audit seal --out``).
    The seal covers the position and the key id, not ``kind``, ``created_at`` nor ``created_by``.
    """

    __tablename__ = "audit_checkpoint"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    seq: so.Mapped[int]
    entry_hash: so.Mapped[Hash64]
    max_at: so.Mapped[UTC | None]
    unordered_at: so.Mapped[UTC | None]
    key_id: so.Mapped[str] = so.mapped_column(sa.String(40))
    seal: so.Mapped[str] = so.mapped_column(sa.String(64))
    created_at: so.Mapped[UTC]
    kind: so.Mapped[str] = so.mapped_column(sa.String(20))
    created_by: so.Mapped[str] = so.mapped_column(sa.String(200))

    __table_args__ = (sa.Index("ix_audit_checkpoint_kind_id", "kind", "id"),)

    def anchor(self) -> Anchor:
        return Anchor(self.seq, self.entry_hash, self.max_at, self.unordered_at, self.key_id, self.seal)
