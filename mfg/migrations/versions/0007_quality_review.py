"""deviation handling, review marks and batch decisions

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26

Deviations get QA's classification, investigation, root cause, impact, CAPA and signed closure; review
marks and batch decisions are append-only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base
from mfg.migrate import append_only, never_deleted

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deviation', schema=None) as batch_op:
        batch_op.add_column(sa.Column('classification', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('investigation', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('root_cause', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('impact', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('capa_reference', sa.String(length=60), nullable=True))
        batch_op.add_column(sa.Column('closed_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('closed_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('row_version', sa.Integer(), nullable=False, server_default='1'))
        batch_op.create_foreign_key(batch_op.f('fk_deviation_closed_by_id_user_account'), 'user_account',
                                    ['closed_by_id'], ['id'])
    with op.batch_alter_table('deviation', schema=None) as batch_op:
        batch_op.alter_column('row_version', server_default=None)
    if op.get_context().dialect.name == "sqlite":
        never_deleted(op, "deviation")

    op.create_table('review_mark',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('item_key', sa.String(length=80), nullable=False),
    sa.Column('reviewed_by_id', sa.Integer(), nullable=False),
    sa.Column('reviewed_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_review_mark_batch_id_batch')),
    sa.ForeignKeyConstraint(['reviewed_by_id'], ['user_account.id'], name=op.f('fk_review_mark_reviewed_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_mark')),
    sa.UniqueConstraint('batch_id', 'item_key', name=op.f('uq_review_mark_batch_id_item_key'))
    )
    append_only(op, "review_mark")

    op.create_table('batch_decision',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('decision', sa.String(length=30), nullable=False),
    sa.Column('pending', sa.Text(), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('decided_by_id', sa.Integer(), nullable=False),
    sa.Column('decided_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_batch_decision_batch_id_batch')),
    sa.ForeignKeyConstraint(['decided_by_id'], ['user_account.id'], name=op.f('fk_batch_decision_decided_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch_decision'))
    )
    with op.batch_alter_table('batch_decision', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_batch_decision_batch_id'), ['batch_id'], unique=False)
    append_only(op, "batch_decision")


def downgrade() -> None:
    op.drop_table('batch_decision')
    op.drop_table('review_mark')
    with op.batch_alter_table('deviation', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_deviation_closed_by_id_user_account'), type_='foreignkey')
        for column in ('row_version', 'closed_by_id', 'closed_at', 'capa_reference', 'impact', 'root_cause',
                       'investigation', 'classification'):
            batch_op.drop_column(column)
