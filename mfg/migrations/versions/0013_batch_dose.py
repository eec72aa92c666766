"""batch dose

Revision ID: 0013
Revises: 0011
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

SQLite rebuilds the table in batch mode, which drops its guard triggers: they are created again (the lead
re-chains this revision after 0012; a later batch-mode change of ``batch`` must create them again too).
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
down_revision = '0011'
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
            "trial_config_version_id = :version WHERE id = :id"),
            {"level": level, "cells": cells, "label": _label(conn, version_id, level, cache), "weight": weight,
             "measured": measured_on, "signature": signature_id, "version": version_id, "id": batch_id})


def upgrade() -> None:
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dose_level', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('dose_cells_per_kg', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('dose_label', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('weight_kg', sa.Numeric(precision=6, scale=2), nullable=True))
        batch_op.add_column(sa.Column('weight_measured_on', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('dose_signature_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('trial_config_version_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_batch_dose_signature_id_signature'), 'signature',
                                    ['dose_signature_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_batch_trial_config_version_id_sop_version'), 'sop_version',
                                    ['trial_config_version_id'], ['id'])
    _backfill(op.get_bind())
    if op.get_context().dialect.name == "sqlite":
        never_deleted(op, "batch")
    immutable_columns(op, "batch", PINNED)


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS batch_immutable")
    else:
        op.execute("DROP TRIGGER IF EXISTS batch_immutable ON batch")
        op.execute("DROP FUNCTION IF EXISTS batch_immutable()")
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_batch_trial_config_version_id_sop_version'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_batch_dose_signature_id_signature'), type_='foreignkey')
        for column in reversed(PINNED):
            batch_op.drop_column(column)
    if op.get_context().dialect.name == "sqlite":
        never_deleted(op, "batch")
