"""signature seal

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06

Seal the record (issue [3.5] item 2): every e-signature's manifest (signer, printed name, meaning, time, what
was signed and the hash of exactly what was signed) is sealed with the instance's audit key
(``mfg/domain/audit_chain.py``, ``seal_signature``), in a row of its own written in the same transaction as the
signature. A table of its own rather than columns on ``signature``: the signatures made before this change
cannot be updated (append-only), yet ``flask --app mfg init`` (``audit seal-existing``) must seal them, saying
that the seal vouches for them only from that point on. Append-only, like the signatures.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mfg.migrate import append_only

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('signature_seal',
    sa.Column('signature_id', sa.Integer(), nullable=False),
    sa.Column('key_id', sa.String(length=40), nullable=False),
    sa.Column('seal', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['signature_id'], ['signature.id'], name=op.f('fk_signature_seal_signature_id_signature')),
    sa.PrimaryKeyConstraint('signature_id', name=op.f('pk_signature_seal'))
    )
    append_only(op, 'signature_seal')


def downgrade() -> None:
    op.drop_table('signature_seal')
