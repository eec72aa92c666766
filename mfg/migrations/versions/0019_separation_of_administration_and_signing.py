"""separation of administration and signing

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06

Issue 19 item 1. A password an administrator set (account created, password reset) signs nothing until its owner
has replaced it: ``user_account.password_set_by_self``. Accounts that exist start False, since the row does not
say who set their password: each signer changes it once (Change password) before signing again (README,
"Separation of administration and signing"). Every signature records whether the signer's password was their own
and when it was set (``signature.own_password``, ``signature.password_set_at``; NULL on the signatures made
before). A signing role an administrator grants is pending until a second administrator or QA confirms it
(``role_grant``, never deleted, who asked and what immutable).

Columns are added in place on both databases (SQLite's batch mode would rebuild ``signature`` and drop its
append-only triggers; adding a nullable column fires no row trigger on PostgreSQL). Old rows hold no value in the
trail for the new columns: ``audit verify``'s state check compares them from the row's next change on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base
from mfg.migrate import append_only, immutable_columns, never_deleted

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

GRANT_IMMUTABLE = ('user_id', 'role', 'requested_by_id', 'requested_by', 'requested_at')


def upgrade() -> None:
    op.add_column('user_account', sa.Column('password_set_by_self', sa.Boolean(), nullable=False,
                                            server_default=sa.false()))
    op.add_column('signature', sa.Column('own_password', sa.Boolean(), nullable=True))
    op.add_column('signature', sa.Column('password_set_at', mfg.models.base.UTCDateTime(timezone=True),
                                         nullable=True))
    op.create_table('role_grant',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('requested_by_id', sa.Integer(), nullable=True),
    sa.Column('requested_by', sa.String(length=64), nullable=False),
    sa.Column('requested_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('confirmed_by_id', sa.Integer(), nullable=True),
    sa.Column('confirmed_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('withdrawn_by_id', sa.Integer(), nullable=True),
    sa.Column('withdrawn_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_role_grant_user_id_user_account')),
    sa.ForeignKeyConstraint(['requested_by_id'], ['user_account.id'],
                            name=op.f('fk_role_grant_requested_by_id_user_account')),
    sa.ForeignKeyConstraint(['confirmed_by_id'], ['user_account.id'],
                            name=op.f('fk_role_grant_confirmed_by_id_user_account')),
    sa.ForeignKeyConstraint(['withdrawn_by_id'], ['user_account.id'],
                            name=op.f('fk_role_grant_withdrawn_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_role_grant'))
    )
    op.create_index(op.f('ix_role_grant_user_id'), 'role_grant', ['user_id'], unique=False)
    never_deleted(op, 'role_grant')
    immutable_columns(op, 'role_grant', GRANT_IMMUTABLE)


def downgrade() -> None:
    op.drop_index(op.f('ix_role_grant_user_id'), table_name='role_grant')
    op.drop_table('role_grant')
    if op.get_context().dialect.name == "sqlite":  # batch mode rebuilds the tables: their guards again
        with op.batch_alter_table('signature', schema=None) as batch_op:
            batch_op.drop_column('password_set_at')
            batch_op.drop_column('own_password')
        append_only(op, 'signature')
        with op.batch_alter_table('user_account', schema=None) as batch_op:
            batch_op.drop_column('password_set_by_self')
        never_deleted(op, 'user_account')
        return
    op.drop_column('signature', 'password_set_at')
    op.drop_column('signature', 'own_password')
    op.drop_column('user_account', 'password_set_by_self')
