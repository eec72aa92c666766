"""qualification record

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

``flask --app mfg qualify`` (installation qualification) stores each run's signed PDF/A report, once, with
its sha256, so that ``verify-pdf`` can check a copy a validation engineer filed. Append-only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base
from mfg.migrate import append_only

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('qualification_record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('run_by', sa.String(length=200), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('failed', sa.Text(), nullable=False),
    sa.Column('lock_sha256', sa.String(length=64), nullable=False),
    sa.Column('filename', sa.String(length=200), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('snapshot_sha256', sa.String(length=64), nullable=False),
    sa.Column('pages', sa.Integer(), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_qualification_record'))
    )
    op.create_index(op.f('ix_qualification_record_sha256'), 'qualification_record', ['sha256'], unique=False)
    append_only(op, "qualification_record")


def downgrade() -> None:
    op.drop_index(op.f('ix_qualification_record_sha256'), table_name='qualification_record')
    op.drop_table('qualification_record')
