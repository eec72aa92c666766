"""trial rules: eligibility screening, donor relationship, DLT events, escalation decisions

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07

Issue [3.7]. A subject is enrolled on a signed eligibility screening (``subject_screening`` with its
``screening_finding`` rows, append-only); a donor records its relationship to the subject
(``donor.relationship``); the clinic records adverse events and whether they are dose-limiting (``dlt_event``,
append-only); the safety review's signed decisions open each dose level (``escalation_decision``, append-only).
A subject's dose assignment names its cohort and the decision that opened its level (``subject.cohort``,
``subject.escalation_decision_id``) and a batch pins that decision with its dose (``batch.escalation_decision_id``,
added to the batch's immutable columns). A bag records its CD3+ cells when its master record calculates them
(``product_bag.cd3_cells``). Every new column is nullable: rows that exist hold NULL (made before the rule).

Columns are added in place on both databases (SQLite's batch mode would rebuild tables that other tables
reference, and drop their guard triggers).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base
from mfg.migrate import append_only, immutable_columns, never_deleted

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

PINNED_BEFORE = ('dose_level', 'dose_cells_per_kg', 'dose_label', 'weight_kg', 'weight_measured_on',
                 'dose_signature_id', 'trial_config_version_id')
PINNED = PINNED_BEFORE + ('escalation_decision_id',)
NEW_TABLES = ('subject_screening', 'screening_finding', 'dlt_event', 'escalation_decision')


def _reference(table: str, column: str, target: str) -> None:
    if op.get_context().dialect.name == "sqlite":  # SQLite adds a column's reference only inline
        op.execute(f'ALTER TABLE {table} ADD COLUMN {column} INTEGER CONSTRAINT fk_{table}_{column}_{target} '
                   f'REFERENCES {target} (id)')
    else:
        op.add_column(table, sa.Column(column, sa.Integer(), nullable=True))
        op.create_foreign_key(f'fk_{table}_{column}_{target}', table, target, [column], ['id'])


def _drop_batch_guard() -> None:
    if op.get_context().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS batch_immutable")
    else:
        op.execute("DROP TRIGGER IF EXISTS batch_immutable ON batch")


def upgrade() -> None:
    op.create_table('escalation_decision',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trial_config_version_id', sa.Integer(), nullable=False),
    sa.Column('from_level', sa.String(length=10), nullable=True),
    sa.Column('recommendation', sa.String(length=40), nullable=False),
    sa.Column('recommended_level', sa.String(length=10), nullable=True),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('level', sa.String(length=10), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('ledger', sa.Text(), nullable=False),
    sa.Column('decided_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('decided_by_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['trial_config_version_id'], ['sop_version.id'],
                            name=op.f('fk_escalation_decision_trial_config_version_id_sop_version')),
    sa.ForeignKeyConstraint(['decided_by_id'], ['user_account.id'],
                            name=op.f('fk_escalation_decision_decided_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_escalation_decision'))
    )
    op.create_table('subject_screening',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('trial_config_version_id', sa.Integer(), nullable=False),
    sa.Column('age_years', sa.Integer(), nullable=False),
    sa.Column('ecog', sa.Integer(), nullable=False),
    sa.Column('first_treatment_on', sa.Date(), nullable=False),
    sa.Column('recorded_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('recorded_by_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['subject_id'], ['subject.id'], name=op.f('fk_subject_screening_subject_id_subject')),
    sa.ForeignKeyConstraint(['trial_config_version_id'], ['sop_version.id'],
                            name=op.f('fk_subject_screening_trial_config_version_id_sop_version')),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['user_account.id'],
                            name=op.f('fk_subject_screening_recorded_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subject_screening')),
    sa.UniqueConstraint('subject_id', name=op.f('uq_subject_screening_subject_id'))
    )
    op.create_table('screening_finding',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('screening_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('value', sa.Numeric(precision=18, scale=6), nullable=True),
    sa.Column('uln', sa.Numeric(precision=18, scale=6), nullable=True),
    sa.Column('unit', sa.String(length=40), nullable=True),
    sa.Column('measured_on', sa.Date(), nullable=True),
    sa.Column('answer', sa.Boolean(), nullable=True),
    sa.ForeignKeyConstraint(['screening_id'], ['subject_screening.id'],
                            name=op.f('fk_screening_finding_screening_id_subject_screening')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_screening_finding'))
    )
    op.create_index(op.f('ix_screening_finding_screening_id'), 'screening_finding', ['screening_id'], unique=False)
    op.create_table('dlt_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('term', sa.String(length=200), nullable=False),
    sa.Column('grade', sa.Integer(), nullable=False),
    sa.Column('attribution', sa.String(length=20), nullable=False),
    sa.Column('onset_on', sa.Date(), nullable=False),
    sa.Column('is_dlt', sa.Boolean(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('recorded_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('recorded_by_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['subject_id'], ['subject.id'], name=op.f('fk_dlt_event_subject_id_subject')),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['user_account.id'],
                            name=op.f('fk_dlt_event_recorded_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dlt_event'))
    )
    op.create_index(op.f('ix_dlt_event_subject_id'), 'dlt_event', ['subject_id'], unique=False)
    for table in NEW_TABLES:
        append_only(op, table)
    op.add_column('donor', sa.Column('relationship', sa.String(length=40), nullable=True))
    op.add_column('subject', sa.Column('cohort', sa.Integer(), nullable=True))
    _reference('subject', 'escalation_decision_id', 'escalation_decision')
    _reference('batch', 'escalation_decision_id', 'escalation_decision')
    op.add_column('product_bag', sa.Column('cd3_cells', sa.BigInteger(), nullable=True))
    _drop_batch_guard()
    immutable_columns(op, 'batch', PINNED)


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    _drop_batch_guard()
    if dialect == "sqlite":
        # SQLite drops a plain column in place (3.35+); a referencing one needs the table rebuilt, which leaves
        # the guard triggers out (created again below). With rows that other tables reference, that needs foreign
        # keys off (as 0013's downgrade: for PostgreSQL or a restored copy).
        for table, column in (('product_bag', 'cd3_cells'), ('subject', 'cohort'), ('donor', 'relationship')):
            op.execute(f'ALTER TABLE {table} DROP COLUMN {column}')
        for table in ('batch', 'subject'):
            with op.batch_alter_table(table, schema=None) as batch_op:
                batch_op.drop_column('escalation_decision_id')
            never_deleted(op, table)
    else:
        op.drop_column('product_bag', 'cd3_cells')
        op.drop_constraint('fk_batch_escalation_decision_id_escalation_decision', 'batch', type_='foreignkey')
        op.drop_column('batch', 'escalation_decision_id')
        op.drop_constraint('fk_subject_escalation_decision_id_escalation_decision', 'subject', type_='foreignkey')
        op.drop_column('subject', 'escalation_decision_id')
        op.drop_column('subject', 'cohort')
        op.drop_column('donor', 'relationship')
        op.execute("DROP FUNCTION IF EXISTS batch_immutable()")
    immutable_columns(op, 'batch', PINNED_BEFORE)
    for table in ('dlt_event', 'screening_finding', 'subject_screening', 'escalation_decision'):
        if dialect != "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_refuse_change ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_refuse_truncate ON {table}")
        op.drop_table(table)
