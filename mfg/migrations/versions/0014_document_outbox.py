"""document outbox

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

QA's decision no longer renders its documents in its own transaction: it writes a ``document_job``
(the transactional outbox), which a documents worker claims and completes after the decision committed
(``mfg/services/document_jobs.py``). A job changes state, so the table is not append-only; its rows are
never deleted, every change is audited, and what a job was asked to make is immutable.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base
from mfg.migrate import immutable_columns, never_deleted

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

IMMUTABLE = ("batch_id", "decision_id", "kinds", "reason", "created_at", "created_by_id")


def upgrade() -> None:
    op.create_table('document_job',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('decision_id', sa.Integer(), nullable=False),
    sa.Column('kinds', sa.String(length=120), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('claim_token', sa.String(length=36), nullable=True),
    sa.Column('claimed_by', sa.String(length=200), nullable=True),
    sa.Column('claimed_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=False),
    sa.Column('done_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_document_job_batch_id_batch')),
    sa.ForeignKeyConstraint(['decision_id'], ['batch_decision.id'],
                            name=op.f('fk_document_job_decision_id_batch_decision')),
    sa.ForeignKeyConstraint(['created_by_id'], ['user_account.id'],
                            name=op.f('fk_document_job_created_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_document_job'))
    )
    op.create_index(op.f('ix_document_job_batch_id'), 'document_job', ['batch_id'], unique=False)
    op.create_index(op.f('ix_document_job_status'), 'document_job', ['status'], unique=False)
    never_deleted(op, "document_job")
    immutable_columns(op, "document_job", IMMUTABLE)


def downgrade() -> None:
    op.drop_index(op.f('ix_document_job_status'), table_name='document_job')
    op.drop_index(op.f('ix_document_job_batch_id'), table_name='document_job')
    op.drop_table('document_job')
