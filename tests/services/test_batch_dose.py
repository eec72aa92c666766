"""The dose belongs to the batch: pinned at start from the subject's signed dose, used by every calculation,
label and record of the batch; a reassignment waits for the subject's open batch and changes later batches
only; a batch beyond the trial's infusions per subject is refused (issue 3.3, deliverable 6)."""

from __future__ import annotations

import importlib.util
import io
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from alembic import command
from pypdf import PdfReader

from mfg.demo import nk_batch as demo_nk
from mfg.demo import seed as demo
from mfg.domain.errors import ValidationFailed
from mfg.extensions import db
from mfg.migrate import MIGRATIONS, alembic_config
from mfg.models import Batch
from mfg.reports import pdf as pdfs
from mfg.reports.site_certificate import ensure_site_certificate
from mfg.services import audit, clinical, documents, evaluation, review, snapshot, starting
from tests.support import PASSWORD, assert_audit_intact, open_level, owner_url, recorded_back, settle_pending_results

from .test_batch_concurrency import _race
from .test_demo_nk import nk_demo  # noqa: F401 - the fixture

UTC = ZoneInfo("UTC")
DL2 = {"subject.dose_per_kg": Decimal(3000000), "subject.weight_kg": Decimal("62.4")}


def _sign(user):
    return {"signer": user, "password": PASSWORD, "username": user.username, "require_username": True}


def _text(data: bytes) -> str:
    return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages).replace("\n", " ")


def _reassign(session, subject, clara, level="DL4"):
    open_level(session, clara, level)
    return clinical.assign_dose_level(session, subject, level=level, **_sign(clara))


def _context(session, batch):
    numbers = evaluation.context_numbers(session, batch)
    return {name: numbers[name] for name in DL2}


def test_a_batch_pins_the_dose_a_reassignment_waits_for_it_and_changes_later_batches_only(
        nk_demo, session, make_user):  # noqa: F811
    clara, olivia = nk_demo["clara"], nk_demo["olivia"]
    quinn = session.merge(make_user("quinn", "qa", full_name="Quinn Quality"))
    subject = demo_nk.seed_demo_subject(session, clara, PASSWORD)
    first = starting.start_product_batch(session, subject=subject, user=olivia)
    session.commit()

    # pinned at start: level, cells/kg, wording, weight with its date, the signature and trial configuration
    assert (first.dose_level, first.dose_cells_per_kg, first.dose_label) == ("DL2", 3000000, "3 x 10^6 NK cells/kg")
    assert (first.weight_kg, first.weight_measured_on) == (Decimal("62.4"), subject.weight_measured_on)
    assert first.dose_signature_id == subject.dose_signature_id is not None
    assert first.trial_config_version_id == subject.trial_config_version_id is not None
    assert _context(session, first) == DL2
    with pytest.raises(sa.exc.DBAPIError, match="GMP record guard"):  # the database keeps it
        session.execute(sa.update(Batch).where(Batch.id == first.id).values(dose_cells_per_kg=30000000))
    session.rollback()

    # while the batch is open: no reassignment (naming the batch) and no second batch (naming the first)
    with pytest.raises(ValidationFailed) as refused:
        _reassign(session, subject, clara)
    assert refused.value.problems == [
        f"batch {first.lot} of subject NK-001 is open (created): its dose was pinned when it started; the dose "
        "level can be reassigned once it is released, rejected, recalled or cancelled"]
    session.rollback()
    assert subject.dose_level == "DL2"
    with pytest.raises(ValidationFailed) as refused:
        starting.start_product_batch(session, subject=subject, user=olivia)
    assert refused.value.problems == [
        f"subject NK-001 already has batch {first.lot}, open (created): a second batch is not opened while one is",
        f"subject NK-001 already has batch {first.lot} (created): the trial allows 1 infusion per subject "
        "(infusions_per_subject); another batch is refused"]
    session.rollback()

    # rejected: finished (the dose may be reassigned) and never infused (a batch may start again)
    review.decide(session, first, decision="rejected", comment="collection bag leaking", **_sign(quinn))
    session.commit()
    _reassign(session, subject, clara)
    session.commit()
    assert (subject.dose_level, subject.dose_cells_per_kg) == ("DL4", 30000000)
    session.expire_all()
    assert (first.dose_level, first.dose_cells_per_kg) == ("DL2", 3000000)
    assert _context(session, first) == DL2  # its calculations keep the dose it was made for
    assert snapshot.batch_snapshot(session, first)["subject"]["dose_level"] == "DL2"

    second = starting.start_product_batch(session, subject=subject, user=olivia)
    session.commit()
    assert (second.dose_level, second.dose_cells_per_kg, second.dose_label) == ("DL4", 30000000,
                                                                                "3 x 10^7 NK cells/kg")
    assert second.dose_signature_id == subject.dose_signature_id != first.dose_signature_id
    assert _context(session, second)["subject.dose_per_kg"] == Decimal(30000000)
    with pytest.raises(ValidationFailed, match=f"already has batch {second.lot} \\(created\\): the trial"):
        starting.start_product_batch(session, subject=subject, user=olivia)  # the rejected one is not counted
    session.rollback()
    assert_audit_intact(session)


def test_a_label_reprint_after_a_reassignment_shows_the_dose_the_bags_were_made_for(
        nk_demo, session, make_user, tmp_path):  # noqa: F811
    """The bug of issue 3.3: a released DL2 batch, its subject reassigned to DL4, reprinted labels read DL4."""
    ensure_site_certificate(tmp_path / "key.pem", tmp_path / "cert.pem", "Test site", demo=True)
    site = pdfs.SiteSigner.from_files(tmp_path / "key.pem", tmp_path / "cert.pem")
    clara, olivia = nk_demo["clara"], nk_demo["olivia"]
    quinn = session.merge(make_user("quinn", "qa", full_name="Quinn Quality"))
    demo.seed_master_data(session)
    ended, today = recorded_back()  # its 14-day results can be read today
    subject = demo_nk.seed_demo_subject(session, clara, PASSWORD, today=today)
    batch = demo_nk.run_nk_batch(session, subject=subject, performer=olivia, verifier=nk_demo["oscar"],
                                 password=PASSWORD, tz=UTC, now=ended)
    documents.print_labels(session, batch, reason="", site=site, demo=True, **_sign(olivia))
    for item in review.exceptions(session, batch):
        review.mark_reviewed(session, batch, item.key, user=quinn)
    review.decide(session, batch, decision="conditionally_released", comment="sterility pending", **_sign(quinn))
    session.commit()
    with pytest.raises(ValidationFailed, match=f"batch {batch.lot} of subject NK-001 is open \\(conditionally"):
        _reassign(session, subject, clara)
    session.rollback()

    settle_pending_results(session, batch, enterer=olivia, verifier=nk_demo["oscar"], tz=UTC)  # the final results
    for item in review.exceptions(session, batch):
        if item.key not in review.marks(session, batch):
            review.mark_reviewed(session, batch, item.key, user=quinn)
    review.decide(session, batch, decision="released", comment="final results", **_sign(quinn))
    session.commit()
    assert batch.status == "released"

    _reassign(session, subject, clara)
    session.commit()
    reprint = documents.print_labels(session, batch, reason="label damaged in transport", site=site, demo=True,
                                     **_sign(olivia))
    record = documents.issue(session, batch, kind="batch_record", reason="copy after reassignment", site=site,
                             demo=True, user=quinn)
    session.commit()
    labels = _text(reprint.content)
    # the label's narrow column may wrap the dose anywhere: compared without white space
    assert "REPRINT 1" in labels and "DoselevelDL2(3.00×10⁶NKcells/kg)" in "".join(labels.split())
    assert "DL4" not in labels and "3.00 × 10⁷" not in labels
    whole = _text(record.content)
    measured = subject.weight_measured_on.isoformat()
    assert f"dose level DL2 (3.00 × 10⁶ NK cells/kg; 3 x 10^6 NK cells/kg) · weight 62.4 kg, measured {measured}" \
        in whole
    assert "level assigned: Approved by" in whole and "DL4" not in whole
    assert _context(session, batch) == DL2


def test_the_migration_pins_each_existing_batch_the_dose_signed_before_it_started(
        database_url, nk_demo, session):  # noqa: F811
    """Migration 0013 backfills a batch from the subject's dose signature in force at its start, not from
    a reassignment made afterwards (what a database of the earlier schema may hold). PostgreSQL: downgraded
    to 0012 and upgraded again. SQLite cannot rebuild the batch table under rows that reference it (foreign
    keys on), so there the pinned columns are emptied and the migration's backfill runs on them."""
    subject = demo_nk.seed_demo_subject(session, nk_demo["clara"], PASSWORD)
    batch = starting.start_product_batch(session, subject=subject, user=nk_demo["olivia"])
    session.commit()
    expected = ("DL2", 3000000, "3 x 10^6 NK cells/kg", Decimal("62.4"), subject.weight_measured_on,
                subject.dose_signature_id, subject.trial_config_version_id)
    batch_id = batch.id
    session.close()
    db.engine.dispose()
    engine = sa.create_engine(owner_url(database_url), poolclass=sa.pool.NullPool)  # migrates, and tampers
    reassign = sa.text("UPDATE subject SET dose_level = 'DL4', dose_cells_per_kg = 30000000")
    if engine.dialect.name == "postgresql":
        config = alembic_config(owner_url(database_url))
        command.downgrade(config, "0012")
        with engine.begin() as conn:  # the old schema let the subject's dose change under an open batch
            conn.execute(reassign)
        command.upgrade(config, "head")
    else:
        spec = importlib.util.spec_from_file_location("batch_dose", MIGRATIONS / "versions" / "0013_batch_dose.py")
        assert spec is not None and spec.loader is not None
        migration = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(migration)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER batch_immutable"))
            conn.execute(sa.update(Batch).values({name: None for name in migration.PINNED}))
            conn.execute(reassign)
            migration._backfill(conn)
    with engine.connect() as conn:
        row = conn.execute(sa.select(Batch.dose_level, Batch.dose_cells_per_kg, Batch.dose_label, Batch.weight_kg,
                                     Batch.weight_measured_on, Batch.dose_signature_id,
                                     Batch.trial_config_version_id).where(Batch.id == batch_id)).one()
    engine.dispose()
    assert tuple(row) == expected


def test_two_operators_opening_a_batch_for_the_same_subject_at_once_make_one(app, nk_demo, session, make_user):  # noqa: F811
    """The subject is locked while a batch starts (``clinical.lock_subject``): the second start waits for the
    first's commit and is refused naming its batch. Never two batches."""
    subject = demo_nk.seed_demo_subject(session, nk_demo["clara"], PASSWORD)
    session.commit()
    subject_id, users = subject.id, [nk_demo["olivia"].id, nk_demo["oscar"].id]

    def start(worker, i):
        from mfg.models import Subject, User

        user = worker.get(User, users[i])
        audit.set_actor(worker, user)
        return starting.start_product_batch(worker, subject=worker.get(Subject, subject_id), user=user).lot

    outcomes = _race(app, start)
    lots = [o for o in outcomes if isinstance(o, str)]
    assert len(lots) == 1, outcomes
    [refused] = [o for o in outcomes if not isinstance(o, str)]
    assert isinstance(refused, ValidationFailed) and f"already has batch {lots[0]}" in str(refused.problems)
    session.expire_all()
    assert session.scalars(sa.select(Batch.lot).where(Batch.subject_id == subject_id)).all() == lots
