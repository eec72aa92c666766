"""foundation: users, audit trail, signatures, master records

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Tables for accounts, the hash-chained audit trail and its head, e-signatures and master record
versions, with the database guards: audit entries and signatures are append-only, accounts and master
records are never deleted, a master record's content and hash never change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mfg.models.base
from mfg.domain.audit_chain import GENESIS_HASH
from mfg.migrate import append_only, immutable_columns, never_deleted

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_head'))
    )
    op.create_table('user_account',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('full_name', sa.String(length=200), nullable=False),
    sa.Column('roles', sa.String(length=200), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('password_changed_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('must_change_password', sa.Boolean(), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_login_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_account')),
    sa.UniqueConstraint('username', name=op.f('uq_user_account_username'))
    )
    op.create_table('audit_entry',
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('occurred_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('username', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=60), nullable=False),
    sa.Column('entity_type', sa.String(length=60), nullable=True),
    sa.Column('entity_id', sa.String(length=60), nullable=True),
    sa.Column('before', sa.Text(), nullable=True),
    sa.Column('after', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_audit_entry_user_id_user_account')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_entry'))
    )
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_entry_action'), ['action'], unique=False)
        batch_op.create_index('ix_audit_entry_entity', ['entity_type', 'entity_id', 'seq'], unique=False)
        batch_op.create_index('ix_audit_entry_user_seq', ['user_id', 'seq'], unique=False)

    op.create_table('signature',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('printed_name', sa.String(length=200), nullable=False),
    sa.Column('meaning', sa.String(length=20), nullable=False),
    sa.Column('signed_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('record_type', sa.String(length=60), nullable=False),
    sa.Column('record_id', sa.String(length=60), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_signature_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signature'))
    )
    with op.batch_alter_table('signature', schema=None) as batch_op:
        batch_op.create_index('ix_signature_record', ['record_type', 'record_id'], unique=False)

    op.create_table('sop_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('source_name', sa.String(length=255), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('loaded_at', mfg.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('loaded_by_id', sa.Integer(), nullable=False),
    sa.Column('approved_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('approved_by_id', sa.Integer(), nullable=True),
    sa.Column('approval_signature_id', sa.Integer(), nullable=True),
    sa.Column('superseded_at', mfg.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['approval_signature_id'], ['signature.id'], name=op.f('fk_sop_version_approval_signature_id_signature')),
    sa.ForeignKeyConstraint(['approved_by_id'], ['user_account.id'], name=op.f('fk_sop_version_approved_by_id_user_account')),
    sa.ForeignKeyConstraint(['loaded_by_id'], ['user_account.id'], name=op.f('fk_sop_version_loaded_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sop_version')),
    sa.UniqueConstraint('code', 'version', name=op.f('uq_sop_version_code_version'))
    )
    with op.batch_alter_table('sop_version', schema=None) as batch_op:
        batch_op.create_index('ix_sop_version_code_status', ['code', 'status'], unique=False)

    op.execute(sa.text("INSERT INTO audit_head (id, seq, entry_hash) VALUES (1, 0, :genesis)")
               .bindparams(genesis=GENESIS_HASH))
    append_only(op, "audit_entry")
    append_only(op, "signature")
    never_deleted(op, "audit_head")
    never_deleted(op, "user_account")
    never_deleted(op, "sop_version")
    immutable_columns(op, "sop_version", ("code", "version", "kind", "title", "content", "sha256",
                                          "loaded_at", "loaded_by_id"))


def downgrade() -> None:
    with op.batch_alter_table('sop_version', schema=None) as batch_op:
        batch_op.drop_index('ix_sop_version_code_status')

    op.drop_table('sop_version')
    with op.batch_alter_table('signature', schema=None) as batch_op:
        batch_op.drop_index('ix_signature_record')

    op.drop_table('signature')
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entry_user_seq')
        batch_op.drop_index('ix_audit_entry_entity')
        batch_op.drop_index(batch_op.f('ix_audit_entry_action'))

    op.drop_table('audit_entry')
    op.drop_table('user_account')
    op.drop_table('audit_head')
