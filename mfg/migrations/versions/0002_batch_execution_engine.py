"""batch execution engine

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

Master data (equipment, material lots), named counters, batches pinned to master record versions,
step executions, append-only recorded values (a correction is a new row), deviations and signature
invalidations, with their database guards.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base
from mfg.migrate import append_only, never_deleted

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('counter',
    sa.Column('name', sa.String(length=60), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_counter'))
    )
    op.create_table('equipment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('identifier', sa.String(length=60), nullable=False),
    sa.Column('equipment_type', sa.String(length=100), nullable=False),
    sa.Column('description', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('calibration_due', sa.Date(), nullable=True),
    sa.Column('created_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_equipment')),
    sa.UniqueConstraint('identifier', name=op.f('uq_equipment_identifier'))
    )
    op.create_table('material_lot',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('material', sa.String(length=100), nullable=False),
    sa.Column('lot_number', sa.String(length=60), nullable=False),
    sa.Column('expiry', sa.Date(), nullable=False),
    sa.Column('qc_status', sa.String(length=20), nullable=False),
    sa.Column('received_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_material_lot')),
    sa.UniqueConstraint('material', 'lot_number', name=op.f('uq_material_lot_material_lot_number'))
    )
    op.create_table('batch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('lot', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=30), nullable=False),
    sa.Column('created_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=False),
    sa.Column('row_version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['user_account.id'], name=op.f('fk_batch_created_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch')),
    sa.UniqueConstraint('lot', name=op.f('uq_batch_lot'))
    )
    op.create_table('signature_invalidation',
    sa.Column('signature_id', sa.Integer(), nullable=False),
    sa.Column('invalidated_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('invalidated_by_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['invalidated_by_id'], ['user_account.id'], name=op.f('fk_signature_invalidation_invalidated_by_id_user_account')),
    sa.ForeignKeyConstraint(['signature_id'], ['signature.id'], name=op.f('fk_signature_invalidation_signature_id_signature')),
    sa.PrimaryKeyConstraint('signature_id', name=op.f('pk_signature_invalidation'))
    )
    op.create_table('batch_master_record',
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('sop_version_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_batch_master_record_batch_id_batch')),
    sa.ForeignKeyConstraint(['sop_version_id'], ['sop_version.id'], name=op.f('fk_batch_master_record_sop_version_id_sop_version')),
    sa.PrimaryKeyConstraint('batch_id', 'position', name=op.f('pk_batch_master_record'))
    )
    op.create_table('step_execution',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('sop_version_id', sa.Integer(), nullable=False),
    sa.Column('stage_id', sa.String(length=40), nullable=False),
    sa.Column('step_id', sa.String(length=40), nullable=False),
    sa.Column('instance', sa.Integer(), nullable=False),
    sa.Column('definition_sha256', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=30), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('performed_by_id', sa.Integer(), nullable=False),
    sa.Column('performed_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('performed_signature_id', sa.Integer(), nullable=True),
    sa.Column('verified_signature_id', sa.Integer(), nullable=True),
    sa.Column('row_version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_step_execution_batch_id_batch')),
    sa.ForeignKeyConstraint(['performed_by_id'], ['user_account.id'], name=op.f('fk_step_execution_performed_by_id_user_account')),
    sa.ForeignKeyConstraint(['performed_signature_id'], ['signature.id'], name=op.f('fk_step_execution_performed_signature_id_signature')),
    sa.ForeignKeyConstraint(['sop_version_id'], ['sop_version.id'], name=op.f('fk_step_execution_sop_version_id_sop_version')),
    sa.ForeignKeyConstraint(['verified_signature_id'], ['signature.id'], name=op.f('fk_step_execution_verified_signature_id_signature')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_step_execution')),
    sa.UniqueConstraint('batch_id', 'sop_version_id', 'step_id', 'instance', name=op.f('uq_step_execution_batch_id_sop_version_id_step_id_instance'))
    )
    with op.batch_alter_table('step_execution', schema=None) as batch_op:
        batch_op.create_index('ix_step_execution_batch', ['batch_id', 'id'], unique=False)

    op.create_table('deviation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=30), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('execution_id', sa.Integer(), nullable=True),
    sa.Column('step_id', sa.String(length=40), nullable=True),
    sa.Column('origin', sa.String(length=30), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('opened_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('opened_by_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_deviation_batch_id_batch')),
    sa.ForeignKeyConstraint(['execution_id'], ['step_execution.id'], name=op.f('fk_deviation_execution_id_step_execution')),
    sa.ForeignKeyConstraint(['opened_by_id'], ['user_account.id'], name=op.f('fk_deviation_opened_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deviation')),
    sa.UniqueConstraint('number', name=op.f('uq_deviation_number'))
    )
    with op.batch_alter_table('deviation', schema=None) as batch_op:
        batch_op.create_index('ix_deviation_batch', ['batch_id', 'status'], unique=False)

    op.create_table('recorded_value',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('execution_id', sa.Integer(), nullable=False),
    sa.Column('field_id', sa.String(length=40), nullable=False),
    sa.Column('field_type', sa.String(length=20), nullable=False),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('number', sa.Numeric(precision=38, scale=10), nullable=True),
    sa.Column('moment', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('unit', sa.String(length=40), nullable=True),
    sa.Column('in_limits', sa.Boolean(), nullable=False),
    sa.Column('limit_message', sa.Text(), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('entered_by_id', sa.Integer(), nullable=False),
    sa.Column('entered_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('supersedes_id', sa.Integer(), nullable=True),
    sa.Column('correction_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['entered_by_id'], ['user_account.id'], name=op.f('fk_recorded_value_entered_by_id_user_account')),
    sa.ForeignKeyConstraint(['execution_id'], ['step_execution.id'], name=op.f('fk_recorded_value_execution_id_step_execution')),
    sa.ForeignKeyConstraint(['supersedes_id'], ['recorded_value.id'], name=op.f('fk_recorded_value_supersedes_id_recorded_value')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recorded_value'))
    )
    with op.batch_alter_table('recorded_value', schema=None) as batch_op:
        batch_op.create_index('ix_recorded_value_execution', ['execution_id'], unique=False)

    for table in ("recorded_value", "signature_invalidation", "batch_master_record"):
        append_only(op, table)
    for table in ("equipment", "material_lot", "batch", "step_execution", "deviation"):
        never_deleted(op, table)


def downgrade() -> None:
    with op.batch_alter_table('recorded_value', schema=None) as batch_op:
        batch_op.drop_index('ix_recorded_value_execution')

    op.drop_table('recorded_value')
    with op.batch_alter_table('deviation', schema=None) as batch_op:
        batch_op.drop_index('ix_deviation_batch')

    op.drop_table('deviation')
    with op.batch_alter_table('step_execution', schema=None) as batch_op:
        batch_op.drop_index('ix_step_execution_batch')

    op.drop_table('step_execution')
    op.drop_table('batch_master_record')
    op.drop_table('signature_invalidation')
    op.drop_table('batch')
    op.drop_table('material_lot')
    op.drop_table('equipment')
    op.drop_table('counter')
