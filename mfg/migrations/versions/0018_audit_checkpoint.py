"""audit checkpoint

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06

Checkpoints of the audit trail (issue [3.5] items 4 and 7): a position of the trail (a head as it was: sequence
number, entry hash, the trail's times) sealed as an anchor with the instance's audit key
(``mfg/domain/audit_chain.py``, ``seal_anchor``). A full ``audit verify`` that passes records one (kind
``verified``), from which ``audit verify --since-last`` checks only the entries written since; ``audit seal
--out`` records the one it exports to keep off-site (kind ``exported``). Append-only: a checkpoint is evidence.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base
from mfg.migrate import append_only

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_checkpoint',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.Column('max_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('unordered_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('key_id', sa.String(length=40), nullable=False),
    sa.Column('seal', sa.String(length=64), nullable=False),
    sa.Column('created_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_checkpoint'))
    )
    # the latest checkpoint of a kind (verify --since-last) is one index look-up
    op.create_index('ix_audit_checkpoint_kind_id', 'audit_checkpoint', ['kind', 'id'], unique=False)
    append_only(op, 'audit_checkpoint')


def downgrade() -> None:
    op.drop_index('ix_audit_checkpoint_kind_id', table_name='audit_checkpoint')
    op.drop_table('audit_checkpoint')
