"""document revisions

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26

Signed PDFs (batch record, certificate of analysis, labels), stored once with their sha256; append-only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base
from mfg.migrate import append_only

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('document_revision',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=30), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=120), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('snapshot_sha256', sa.String(length=64), nullable=False),
    sa.Column('pages', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_document_revision_batch_id_batch')),
    sa.ForeignKeyConstraint(['created_by_id'], ['user_account.id'], name=op.f('fk_document_revision_created_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_document_revision')),
    sa.UniqueConstraint('batch_id', 'kind', 'revision', name=op.f('uq_document_revision_batch_id_kind_revision'))
    )
    append_only(op, "document_revision")


def downgrade() -> None:
    op.drop_table('document_revision')
