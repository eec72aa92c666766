"""batch lifecycle: pending results, bag blocks, clinical alerts; the bag of a custody event

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

``pending_result``: a result pending at a conditional release, with its due time, entered and verified later
(never deleted; what it names is immutable). ``bag_block``: bags blocked when a batch goes under investigation
(append-only). ``clinical_alert``: what the clinic must acknowledge (never deleted; the finding is immutable).
``custody_event.bag_id``: the bag scanned at the bedside; added in place (no table copy), so the
append-only triggers of ``custody_event`` stay.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base
from mfg.migrate import append_only, immutable_columns, never_deleted

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bag_block',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('bag_id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('deviation_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('blocked_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('blocked_by_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['bag_id'], ['product_bag.id'], name=op.f('fk_bag_block_bag_id_product_bag')),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_bag_block_batch_id_batch')),
    sa.ForeignKeyConstraint(['blocked_by_id'], ['user_account.id'], name=op.f('fk_bag_block_blocked_by_id_user_account')),
    sa.ForeignKeyConstraint(['deviation_id'], ['deviation.id'], name=op.f('fk_bag_block_deviation_id_deviation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bag_block'))
    )
    with op.batch_alter_table('bag_block', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bag_block_bag_id'), ['bag_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_bag_block_batch_id'), ['batch_id'], unique=False)

    op.create_table('clinical_alert',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('deviation_id', sa.Integer(), nullable=True),
    sa.Column('finding', sa.Text(), nullable=False),
    sa.Column('raised_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('acknowledged_by_id', sa.Integer(), nullable=True),
    sa.Column('acknowledged_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('row_version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['acknowledged_by_id'], ['user_account.id'], name=op.f('fk_clinical_alert_acknowledged_by_id_user_account')),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_clinical_alert_batch_id_batch')),
    sa.ForeignKeyConstraint(['deviation_id'], ['deviation.id'], name=op.f('fk_clinical_alert_deviation_id_deviation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clinical_alert'))
    )
    with op.batch_alter_table('clinical_alert', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clinical_alert_acknowledged_at'), ['acknowledged_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_clinical_alert_batch_id'), ['batch_id'], unique=False)

    op.create_table('pending_result',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('execution_id', sa.Integer(), nullable=False),
    sa.Column('field_id', sa.String(length=40), nullable=False),
    sa.Column('pending_value_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('method', sa.String(length=200), nullable=True),
    sa.Column('sampled_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('due_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('decision_id', sa.Integer(), nullable=False),
    sa.Column('created_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=30), nullable=False),
    sa.Column('result_text', sa.Text(), nullable=True),
    sa.Column('in_limits', sa.Boolean(), nullable=True),
    sa.Column('limit_message', sa.Text(), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('entered_by_id', sa.Integer(), nullable=True),
    sa.Column('entered_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('verified_by_id', sa.Integer(), nullable=True),
    sa.Column('verified_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('row_version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_pending_result_batch_id_batch')),
    sa.ForeignKeyConstraint(['decision_id'], ['batch_decision.id'], name=op.f('fk_pending_result_decision_id_batch_decision')),
    sa.ForeignKeyConstraint(['entered_by_id'], ['user_account.id'], name=op.f('fk_pending_result_entered_by_id_user_account')),
    sa.ForeignKeyConstraint(['execution_id'], ['step_execution.id'], name=op.f('fk_pending_result_execution_id_step_execution')),
    sa.ForeignKeyConstraint(['pending_value_id'], ['recorded_value.id'], name=op.f('fk_pending_result_pending_value_id_recorded_value')),
    sa.ForeignKeyConstraint(['verified_by_id'], ['user_account.id'], name=op.f('fk_pending_result_verified_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pending_result')),
    sa.UniqueConstraint('pending_value_id', name=op.f('uq_pending_result_pending_value_id'))
    )
    with op.batch_alter_table('pending_result', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pending_result_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_pending_result_status'), ['status'], unique=False)

    if op.get_context().dialect.name == "sqlite":  # ALTER TABLE in place: no table copy, the triggers stay
        op.execute("ALTER TABLE custody_event ADD COLUMN bag_id INTEGER "
                   "CONSTRAINT fk_custody_event_bag_id_product_bag REFERENCES product_bag (id)")
    else:
        op.add_column('custody_event', sa.Column('bag_id', sa.Integer(), sa.ForeignKey(
            'product_bag.id', name=op.f('fk_custody_event_bag_id_product_bag')), nullable=True))
    append_only(op, "bag_block")
    never_deleted(op, "pending_result")
    immutable_columns(op, "pending_result", ("batch_id", "execution_id", "field_id", "pending_value_id", "label",
                                             "method", "sampled_at", "due_at", "decision_id", "created_at"))
    never_deleted(op, "clinical_alert")
    immutable_columns(op, "clinical_alert", ("batch_id", "deviation_id", "finding", "raised_at"))



def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.drop_constraint(op.f('fk_custody_event_bag_id_product_bag'), 'custody_event', type_='foreignkey')
    op.drop_column('custody_event', 'bag_id')

    with op.batch_alter_table('pending_result', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pending_result_status'))
        batch_op.drop_index(batch_op.f('ix_pending_result_batch_id'))

    op.drop_table('pending_result')
    with op.batch_alter_table('clinical_alert', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_clinical_alert_batch_id'))
        batch_op.drop_index(batch_op.f('ix_clinical_alert_acknowledged_at'))

    op.drop_table('clinical_alert')
    with op.batch_alter_table('bag_block', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bag_block_batch_id'))
        batch_op.drop_index(batch_op.f('ix_bag_block_bag_id'))

    op.drop_table('bag_block')
