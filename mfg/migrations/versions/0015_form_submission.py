"""form submission tokens

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

Do once: every POST form carries a one-time token, claimed in the same transaction as what the submission
does; a repeat with the same token (double tap, reload, resubmission) gets the first one's result and creates
nothing (``mfg/models/submission.py``, ``mfg/web/security.py``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('form_submission',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('endpoint', sa.String(length=120), nullable=False),
    sa.Column('created_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('location', sa.String(length=500), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_form_submission_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_form_submission')),
    sa.UniqueConstraint('token', name=op.f('uq_form_submission_token'))
    )


def downgrade() -> None:
    op.drop_table('form_submission')
