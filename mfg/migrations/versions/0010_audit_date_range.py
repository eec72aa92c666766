"""audit trail date range served by an index

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

The audit trail screen's date filter read the trail newest first until its page was full: a day a year
ago was a walk through a year of entries (374 ms at 1,000,000 entries, bench/pages.py). An index on
(occurred_at, seq) finds the first and last entry of the range, and the page is then read through the
primary key between them. That is exact only where the entries' times follow their sequence numbers, so
the audit head now records the latest entry time (``max_at``) and the latest time of an entry written
earlier than one before it (``unordered_at``: the server clock was set back), both filled here from the
existing trail.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_audit_entry_occurred_at_seq', 'audit_entry', ['occurred_at', 'seq'], unique=False)
    op.add_column('audit_head', sa.Column('max_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True))
    op.add_column('audit_head', sa.Column('unordered_at', mfg.models.base.UTCDateTime(timezone=True),
                                          nullable=True))
    op.execute(sa.text(
        "UPDATE audit_head SET max_at = (SELECT max(occurred_at) FROM audit_entry), "
        "unordered_at = (SELECT max(occurred_at) FROM ("
        "  SELECT occurred_at, max(occurred_at) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING "
        "  AND 1 PRECEDING) AS earlier_max FROM audit_entry) AS walk WHERE occurred_at < earlier_max) "
        "WHERE id = 1"))


def downgrade() -> None:
    # plain ALTER TABLE (SQLite 3.35+), not batch mode, which would rebuild the table without its trigger
    op.execute("ALTER TABLE audit_head DROP COLUMN unordered_at")
    op.execute("ALTER TABLE audit_head DROP COLUMN max_at")
    op.drop_index('ix_audit_entry_occurred_at_seq', table_name='audit_entry')
