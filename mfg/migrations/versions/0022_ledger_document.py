"""ledger document: the cohort ledger's signed revisions

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07

Issue [3.7]. The trial's cohort ledger is issued as a signed PDF/A-3b (``services.ledger_documents``); each
issued revision is stored once with its sha256 and the sha256 of the ledger data it embeds, so that
``verify-pdf`` can check a filed copy (``ledger_document``, append-only). The ledger belongs to the trial, not
to a batch, so it has a table of its own (``document_revision`` names a batch).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base
from mfg.migrate import append_only

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ledger_document',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('trial_config_version_id', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=120), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('snapshot_sha256', sa.String(length=64), nullable=False),
    sa.Column('pages', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['trial_config_version_id'], ['sop_version.id'],
                            name=op.f('fk_ledger_document_trial_config_version_id_sop_version')),
    sa.ForeignKeyConstraint(['created_by_id'], ['user_account.id'],
                            name=op.f('fk_ledger_document_created_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_document')),
    sa.UniqueConstraint('revision', name=op.f('uq_ledger_document_revision'))
    )
    op.create_index(op.f('ix_ledger_document_sha256'), 'ledger_document', ['sha256'], unique=False)
    append_only(op, 'ledger_document')


def downgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        op.execute("DROP TRIGGER IF EXISTS ledger_document_refuse_change ON ledger_document")
        op.execute("DROP TRIGGER IF EXISTS ledger_document_refuse_truncate ON ledger_document")
    op.drop_index(op.f('ix_ledger_document_sha256'), table_name='ledger_document')
    op.drop_table('ledger_document')
