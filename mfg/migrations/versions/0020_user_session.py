"""server-side sessions and password history

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06

Issue [3.6] items 2 and 3: a sign-in is a row (``user_session``) that sign-out, timeouts, the absolute lifetime,
password changes, deactivation and lockout end at once; an account's earlier password hashes
(``password_history``) so a new password is not one of the last few (``mfg/models/sign_in.py``). Sessions
signed in before this migration were cookie-only: they end (their next request signs in again).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('user_session',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('started_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('has_signed', sa.Boolean(), nullable=False),
    sa.Column('ended_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('end_reason', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_user_session_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_session')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_user_session_token_hash'))
    )
    op.create_index(op.f('ix_user_session_user_id'), 'user_session', ['user_id'], unique=False)
    op.create_table('password_history',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('replaced_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_password_history_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_password_history')),
    )
    op.create_index(op.f('ix_password_history_user_id'), 'password_history', ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_password_history_user_id'), table_name='password_history')
    op.drop_table('password_history')
    op.drop_index(op.f('ix_user_session_user_id'), table_name='user_session')
    op.drop_table('user_session')
