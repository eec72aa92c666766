"""audit head seal

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

Seal the record (issue [3.5] item 1): the audit head carries a keyed seal, HMAC-SHA256 under a key kept in
the instance folder, not in the database (``mfg/domain/audit_chain.py``). A trail written before has no seal:
``flask --app mfg init`` (or ``audit seal-existing``) seals it, and says that the seal vouches for it only
from that point on. Plain ADD COLUMN (no batch rebuild on SQLite, so the head's guard trigger stays).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('audit_head', sa.Column('seal_key_id', sa.String(length=40), nullable=True))
    op.add_column('audit_head', sa.Column('seal', sa.String(length=64), nullable=True))


def downgrade() -> None:
    # plain DROP COLUMN (SQLite 3.35+): a batch rebuild would drop the head's guard trigger
    op.execute("ALTER TABLE audit_head DROP COLUMN seal")
    op.execute("ALTER TABLE audit_head DROP COLUMN seal_key_id")
