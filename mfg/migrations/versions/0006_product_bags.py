"""product bags

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

The bags (ISBT 128 divisions) a product is divided into: append-only, like the values they come from.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base
from mfg.migrate import append_only

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('product_bag',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('execution_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('division', sa.String(length=2), nullable=False),
    sa.Column('product_code', sa.String(length=8), nullable=False),
    sa.Column('volume_ml', sa.Numeric(precision=12, scale=1), nullable=False),
    sa.Column('viable_cells', sa.BigInteger(), nullable=False),
    sa.Column('nk_cells', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_product_bag_batch_id_batch')),
    sa.ForeignKeyConstraint(['execution_id'], ['step_execution.id'], name=op.f('fk_product_bag_execution_id_step_execution')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_product_bag')),
    sa.UniqueConstraint('batch_id', 'division', name=op.f('uq_product_bag_batch_id_division'))
    )
    append_only(op, "product_bag")


def downgrade() -> None:
    op.drop_table('product_bag')
