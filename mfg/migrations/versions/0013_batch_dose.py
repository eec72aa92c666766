"""batch dose

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

The dose belongs to the batch: an NK batch pins, when it starts, the subject's signed dose level (code,
NK cells per kg, the trial configuration's wording), the weight with the date it was measured, the signature
that assigned the level and the trial configuration version it was assigned under. Every calculation, label
and record of the batch reads these; a later reassignment of the subject's dose changes later batches only.
The database refuses any change to them once written (an immutable-columns trigger).

Backfill of the batches that exist (those with a subject): each takes the dose that was in force when it
started, i.e. the content of the subject's latest "Approved by" signature signed at or before the batch's
start (a dose assignment signs the subject's record: its code, weight with date, dose level, cells per kg and
trial configuration version), so a batch whose subject was reassigned afterwards gets its own dose back, not
the reassigned one. A batch with no such signature (none should exist: a product batch needs a signed dose)
takes the subject's current values and signature. The wording comes from that trial configuration version's
dose level. Generic demo batches (no subject) keep every column NULL.

Columns are added in place on both databases (SQLite's batch mode would rebuild the table, which a database
holding batches refuses with its foreign keys on). A later batch-mode change of ``batch`` on SQLite drops the
guard triggers and must create them again (``never_deleted``, ``immutable_columns``).
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import sqlalchemy as sa
import yaml
from alembic import op

from mfg.migrate import immutable_columns, never_deleted

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

PINNED = ('dose_level', 'dose_cells_per_kg', 'dose_label', 'weight_kg', 'weight_measured_on', 'dose_signature_id',
          'trial_config_version_id')


def _label(conn: sa.Connection, version_id: int | None, level: str | None,
           cache: dict[int, dict[str, str]]) -> str | None:
    if version_id is None or level is None:
        return None
    if version_id not in cache:
        content = conn.execute(sa.text("SELECT content FROM sop_version WHERE id = :id"), {"id": version_id}).scalar()
        document = yaml.safe_load(content or "") or {}
        cache[version_id] = {str(d.get("code")): str(d.get("label") or "") for d in document.get("dose_levels", [])}
    return cache[version_id].get(level) or None


def _backfill(conn: sa.Connection) -> None:
    cache: dict[int, dict[str, str]] = {}
    batches = conn.execute(sa.text(
        "SELECT b.id, s.id, s.weight_kg, s.weight_measured_on, s.dose_level, s.dose_cells_per_kg, "
        "s.dose_signature_id, s.trial_config_version_id FROM batch b JOIN subject s ON s.id = b.subject_id "
        "ORDER BY b.id")).all()
    for (batch_id, subject_id, weight, measured_on, level, cells, signature_id,
         version_id) in batches:
        signed = conn.execute(sa.text(
            "SELECT id, content FROM signature WHERE record_type = 'subject' AND record_id = :subject "
            "AND meaning = 'approved' AND signed_at <= (SELECT created_at FROM batch WHERE id = :batch) "
            "ORDER BY signed_at DESC, id DESC LIMIT 1"), {"subject": str(subject_id), "batch": batch_id}).first()
        if signed is not None:
            content = json.loads(signed.content)
            signature_id, level, cells = signed.id, content.get("dose_level"), content.get("dose_cells_per_kg")
            weight, measured_on = Decimal(content["weight_kg"]), date.fromisoformat(content["weight_measured_on"])
            version_id = content.get("trial_config_version_id")
        conn.execute(sa.text(
            "UPDATE batch SET dose_level = :level, dose_cells_per_kg = :cells, dose_label = :label, "
            "weight_kg = :weight, weight_measured_on = :measured, dose_signature_id = :signature, "
            "trial_config_version_id = :version WHERE id = :id").bindparams(
                sa.bindparam("weight", type_=sa.Numeric(6, 2)), sa.bindparam("measured", type_=sa.Date())),
            {"level": level, "cells": cells, "label": _label(conn, version_id, level, cache), "weight": weight,
             "measured": measured_on, "signature": signature_id, "version": version_id, "id": batch_id})


COLUMNS = (('dose_level', sa.String(length=10)), ('dose_cells_per_kg', sa.BigInteger()), ('dose_label', sa.Text()),
           ('weight_kg', sa.Numeric(precision=6, scale=2)), ('weight_measured_on', sa.Date()))
REFERENCES = (('dose_signature_id', 'signature'), ('trial_config_version_id', 'sop_version'))


def _fk(column: str, table: str) -> str:
    return f'fk_batch_{column}_{table}'


def upgrade() -> None:
    # Columns are added in place (no table rebuild), so a SQLite database with batches upgrades with its
    # foreign keys on and keeps the batch table's guard trigger.
    for name, type_ in COLUMNS:
        op.add_column('batch', sa.Column(name, type_, nullable=True))
    for name, table in REFERENCES:
        if op.get_context().dialect.name == "sqlite":  # SQLite adds a column's reference only inline
            op.execute(f'ALTER TABLE batch ADD COLUMN {name} INTEGER CONSTRAINT {_fk(name, table)} '
                       f'REFERENCES {table} (id)')
        else:
            op.add_column('batch', sa.Column(name, sa.Integer(), nullable=True))
            op.create_foreign_key(_fk(name, table), 'batch', table, [name], ['id'])
    _backfill(op.get_bind())
    immutable_columns(op, "batch", PINNED)


def downgrade() -> None:
    # SQLite rebuilds the table to drop a referencing column: with rows that other tables reference, that
    # needs foreign keys off (a downgrade of a database with NK batches is for PostgreSQL or a restored copy).
    if op.get_context().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS batch_immutable")
        with op.batch_alter_table('batch', schema=None) as batch_op:  # the rebuilt table leaves the references out
            for column in reversed(PINNED):
                batch_op.drop_column(column)
        never_deleted(op, "batch")
        return
    op.execute("DROP TRIGGER IF EXISTS batch_immutable ON batch")
    op.execute("DROP FUNCTION IF EXISTS batch_immutable()")
    for name, table in REFERENCES:
        op.drop_constraint(_fk(name, table), 'batch', type_='foreignkey')
    for column in reversed(PINNED):
        op.drop_column('batch', column)
