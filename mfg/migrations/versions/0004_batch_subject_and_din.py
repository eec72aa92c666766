"""batch subject and din

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

An NK batch belongs to a subject and carries the collection's DIN. SQLite rebuilds the table in batch
mode, which drops its guard trigger: it is created again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mfg.migrate import never_deleted

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subject_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('din', sa.String(length=13), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_batch_din'), ['din'])
        batch_op.create_foreign_key(batch_op.f('fk_batch_subject_id_subject'), 'subject', ['subject_id'], ['id'])
    if op.get_context().dialect.name == "sqlite":
        never_deleted(op, "batch")


def downgrade() -> None:
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_batch_subject_id_subject'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('uq_batch_din'), type_='unique')
        batch_op.drop_column('din')
        batch_op.drop_column('subject_id')

