"""indexes for pages at scale

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26

With years of batches and a long audit trail (bench/pages.py: 10,000 batches, 1,000,000 entries) the
audit trail screen filtered by user name or by action reads its page newest first through an index,
(username, seq) and (action, seq), instead of scanning or sorting the trail; the work queue finds the
active batches through an index on the batch status. Indexes only, with plain CREATE/DROP INDEX (no
batch mode), so SQLite keeps the tables and their append-only triggers.
"""

from __future__ import annotations

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_audit_entry_username_seq', 'audit_entry', ['username', 'seq'], unique=False)
    op.create_index('ix_audit_entry_action_seq', 'audit_entry', ['action', 'seq'], unique=False)
    op.drop_index('ix_audit_entry_action', table_name='audit_entry')  # a prefix of the new one
    op.create_index(op.f('ix_batch_status'), 'batch', ['status'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_batch_status'), table_name='batch')
    op.create_index('ix_audit_entry_action', 'audit_entry', ['action'], unique=False)
    op.drop_index('ix_audit_entry_action_seq', table_name='audit_entry')
    op.drop_index('ix_audit_entry_username_seq', table_name='audit_entry')
