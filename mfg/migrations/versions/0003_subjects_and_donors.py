"""subjects and donors

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Donors with their eligibility determination and test results, and trial subjects with their
chain-of-identity identifier, weight and signed dose level. None of them is ever deleted.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base
from mfg.migrate import never_deleted

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('donor',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('abo_rh', sa.String(length=10), nullable=True),
    sa.Column('eligibility', sa.String(length=20), nullable=False),
    sa.Column('eligibility_summary', sa.Text(), nullable=True),
    sa.Column('determined_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('determined_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['determined_by_id'], ['user_account.id'], name=op.f('fk_donor_determined_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_donor')),
    sa.UniqueConstraint('code', name=op.f('uq_donor_code'))
    )
    op.create_table('donor_test',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('donor_id', sa.Integer(), nullable=False),
    sa.Column('test', sa.String(length=60), nullable=False),
    sa.Column('result', sa.String(length=20), nullable=False),
    sa.Column('specimen_date', sa.Date(), nullable=False),
    sa.Column('recorded_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('recorded_by_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['donor_id'], ['donor.id'], name=op.f('fk_donor_test_donor_id_donor')),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['user_account.id'], name=op.f('fk_donor_test_recorded_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_donor_test'))
    )
    op.create_table('subject',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('coi', sa.String(length=20), nullable=False),
    sa.Column('donor_id', sa.Integer(), nullable=False),
    sa.Column('weight_kg', sa.Numeric(precision=6, scale=2), nullable=False),
    sa.Column('weight_measured_on', sa.Date(), nullable=False),
    sa.Column('dose_level', sa.String(length=10), nullable=True),
    sa.Column('dose_cells_per_kg', sa.BigInteger(), nullable=True),
    sa.Column('trial_config_version_id', sa.Integer(), nullable=True),
    sa.Column('dose_signature_id', sa.Integer(), nullable=True),
    sa.Column('enrolled_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('enrolled_by_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['donor_id'], ['donor.id'], name=op.f('fk_subject_donor_id_donor')),
    sa.ForeignKeyConstraint(['dose_signature_id'], ['signature.id'], name=op.f('fk_subject_dose_signature_id_signature')),
    sa.ForeignKeyConstraint(['enrolled_by_id'], ['user_account.id'], name=op.f('fk_subject_enrolled_by_id_user_account')),
    sa.ForeignKeyConstraint(['trial_config_version_id'], ['sop_version.id'], name=op.f('fk_subject_trial_config_version_id_sop_version')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subject')),
    sa.UniqueConstraint('code', name=op.f('uq_subject_code')),
    sa.UniqueConstraint('coi', name=op.f('uq_subject_coi'))
    )
    for table in ("donor", "donor_test", "subject"):
        never_deleted(op, table)


def downgrade() -> None:
    op.drop_table('subject')
    op.drop_table('donor_test')
    op.drop_table('donor')
