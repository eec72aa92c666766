"""The batch execution engine on the generic demo process (sops/demo/DEMO-PROC_v1.yaml)."""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from mfg.domain.errors import (
    AuthenticationFailed,
    IdentityMismatch,
    InvalidTransition,
    PermissionDenied,
    StepConflict,
    ValidationFailed,
)
from mfg.models import AuditEntry, RecordedValue, Signature, SignatureInvalidation, StepExecution, utcnow
from mfg.services import batch_pages, deviations, evaluation, masterdata, signatures, starting, steps
from tests.support import PASSWORD, app_refusal, attacker_engine

UTC = ZoneInfo("UTC")


@pytest.fixture
def plant(session, approved_sop, make_user):
    """Two operators, the demo master data and a started batch."""
    olivia = session.merge(make_user("olivia", "operator", full_name="Olivia Operator"))
    oscar = session.merge(make_user("oscar", "operator", full_name="Oscar Verifier"))
    today = date.today()
    masterdata.add_equipment(session, identifier="BSC-01", equipment_type="biosafety cabinet",
                             calibration_due=today + timedelta(days=90))
    masterdata.add_equipment(session, identifier="BSC-02", equipment_type="biosafety cabinet",
                             calibration_due=today - timedelta(days=1))
    masterdata.receive_lot(session, material="Phosphate-buffered saline", lot_number="PBS-7",
                           expiry=today + timedelta(days=200), qc_status="released")
    masterdata.receive_lot(session, material="Phosphate-buffered saline", lot_number="PBS-OLD",
                           expiry=today - timedelta(days=1), qc_status="released")
    batch = starting.start_batch(session, codes=["DEMO-PROC"], user=olivia)
    session.commit()
    return {"session": session, "batch": batch, "olivia": olivia, "oscar": oscar}


def perform(plant, step_id, raw, *, who="olivia", instance=1, comments=None, comment="", password=PASSWORD):
    session = plant["session"]
    return steps.perform_step(session, plant["batch"], position=0, step_id=step_id, instance=instance,
                                entry=evaluation.StepInput(raw=raw, field_comments=comments or {}, comment=comment),
                                signer=plant[who], password=password, username=None, require_username=False,
                                tz=UTC)


def now_text(delta_minutes=0):
    return (utcnow() + timedelta(minutes=delta_minutes)).strftime("%Y-%m-%d %H:%M")


GOOD = {
    "line_clearance": lambda: {"area_clear": "yes", "cabinet": "BSC-01", "started_at": now_text(-30)},
    "identify_material": lambda lot: {"lot_scan": lot, "buffer": "PBS-7"},
    "room_check": lambda: {"room_temperature": "21.5", "settle_plate_count": "0", "room_status": "Clean"},
    "initial_count": lambda: {"volume_ml": "100.0", "concentration": "2.50", "viability": "95.0"},
}


def test_batch_pins_effective_versions_and_gets_a_lot(plant):
    batch = plant["batch"]
    assert batch.lot.startswith("DEMO-PROC-") and batch.status == "created"
    assert [pin.sop_version.code for pin in batch.master_records] == ["DEMO-PROC"]


def test_a_good_step_is_stored_signed_and_references_its_definition(plant):
    session = plant["session"]
    ex = perform(plant, "line_clearance", GOOD["line_clearance"]())
    session.commit()
    assert ex.status == "complete" and plant["batch"].status == "in_progress"
    assert {v.field_id: v.text for v in ex.values}["cabinet"] == "BSC-01"
    assert len(ex.definition_sha256) == 64 and ex.sop_version_id == plant["batch"].master_records[0].sop_version_id
    sig = session.get(Signature, ex.performed_signature_id)
    assert sig.meaning == "performed" and sig.printed_name == "Olivia Operator"
    assert signatures.check_all(session)[1] == []


@pytest.mark.parametrize("raw,message", [
    ({"area_clear": "", "cabinet": "BSC-01", "started_at": "x"}, "Area clear"),
    ({"area_clear": "yes", "cabinet": "BSC-99", "started_at": now_text()}, "not registered"),
    ({"area_clear": "yes", "cabinet": "BSC-02", "started_at": now_text()}, "out of calibration"),
    ({"area_clear": "yes", "cabinet": "BSC-01", "started_at": "2026-02-30 10:00"}, "Processing started"),
])
def test_malformed_or_refused_input_stores_nothing(plant, raw, message):
    session = plant["session"]
    with pytest.raises(ValidationFailed, match=message):
        perform(plant, "line_clearance", raw)
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(StepExecution)) == 0
    assert session.scalar(sa.select(sa.func.count()).select_from(RecordedValue)) == 0


def test_every_problem_is_reported_at_once(plant):
    with pytest.raises(ValidationFailed) as info:
        perform(plant, "line_clearance", {"area_clear": "", "cabinet": "", "started_at": "soon"})
    assert len(info.value.problems) == 3


def test_steps_follow_the_master_record_order(plant):
    session = plant["session"]
    with pytest.raises(InvalidTransition, match="not open yet"):
        perform(plant, "identify_material", GOOD["identify_material"](plant["batch"].lot))
    session.rollback()
    # a parallel step may be done at any time while its stage is open
    perform(plant, "room_check", GOOD["room_check"]())
    session.commit()
    with pytest.raises(InvalidTransition, match="not open yet"):  # the next stage waits for this one
        perform(plant, "initial_count", GOOD["initial_count"]())
    session.rollback()
    perform(plant, "line_clearance", GOOD["line_clearance"]())
    session.commit()
    with pytest.raises(StepConflict):
        perform(plant, "line_clearance", GOOD["line_clearance"]())


def test_identity_scan_must_match_and_expired_lots_are_refused(plant):
    session = plant["session"]
    perform(plant, "line_clearance", GOOD["line_clearance"]())
    session.commit()
    with pytest.raises(IdentityMismatch, match="IDENTITY MISMATCH") as info:
        perform(plant, "identify_material", {"lot_scan": "DEMO-PROC-1999-0001", "buffer": "PBS-7"})
    session.rollback()
    # what the edge does after rolling the step back: audit the stop and open a deviation
    deviation = deviations.record_identity_mismatch(session, info.value, plant["olivia"])
    session.commit()
    assert deviation.origin == "identity" and "DEMO-PROC-1999-0001" in deviation.description
    entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "identity.mismatch"))
    assert entry.entity_id == str(plant["batch"].id) and "DEMO-PROC-1999-0001" in entry.after
    assert session.scalar(sa.select(sa.func.count()).select_from(StepExecution).where(
        StepExecution.step_id == "identify_material")) == 0
    with pytest.raises(ValidationFailed, match="expired"):
        perform(plant, "identify_material", {"lot_scan": plant["batch"].lot, "buffer": "PBS-OLD"})


def test_out_of_limit_needs_a_comment_is_stored_flagged_and_opens_a_deviation(plant):
    session = plant["session"]
    raw = {"room_temperature": "26.0", "settle_plate_count": "0", "room_status": "Clean"}
    with pytest.raises(ValidationFailed, match="needs a comment"):
        perform(plant, "room_check", raw)
    session.rollback()
    ex = perform(plant, "room_check", raw, comments={"room_temperature": "HVAC alarm, QA informed"})
    session.commit()
    value = ex.current_values()["room_temperature"]
    assert value.text == "26.0" and not value.in_limits and "above the maximum" in value.limit_message
    (deviation,) = deviations.of_batch(session, plant["batch"])
    assert deviation.origin == "out_of_limit" and deviation.status == "open" and deviation.step_id == "room_check"
    assert deviation.number.startswith("DEV-")


def _prepare(plant):
    session = plant["session"]
    perform(plant, "line_clearance", GOOD["line_clearance"]())
    perform(plant, "room_check", GOOD["room_check"]())
    ex = perform(plant, "identify_material", GOOD["identify_material"](plant["batch"].lot))
    session.commit()
    return ex


def test_verification_by_a_second_operator_only(plant):
    session = plant["session"]
    ex = _prepare(plant)
    assert ex.status == "awaiting_verification"
    with pytest.raises(PermissionDenied, match="different operator"):
        steps.verify_step(session, ex, signer=plant["olivia"], password=PASSWORD, username=None,
                            require_username=False)
    session.rollback()
    with pytest.raises(AuthenticationFailed):
        steps.verify_step(session, ex, signer=plant["oscar"], password="wrong-password", username=None,
                            require_username=False)
    session.rollback()
    steps.verify_step(session, ex, signer=plant["oscar"], password=PASSWORD, username=None,
                        require_username=False)
    session.commit()
    assert ex.status == "complete"
    assert session.get(Signature, ex.verified_signature_id).printed_name == "Oscar Verifier"


def test_stage_waits_for_verification(plant):
    session = plant["session"]
    ex = _prepare(plant)
    with pytest.raises(InvalidTransition):
        perform(plant, "initial_count", GOOD["initial_count"]())
    session.rollback()
    steps.verify_step(session, ex, signer=plant["oscar"], password=PASSWORD, username=None, require_username=False)
    ex2 = perform(plant, "initial_count", GOOD["initial_count"]())
    session.commit()
    assert ex2.current_values()["total_cells"].text == "250.0"


def test_missed_time_window_opens_a_deviation(plant):
    session = plant["session"]
    raw = GOOD["line_clearance"]() | {"started_at": now_text(-180)}
    perform(plant, "line_clearance", raw)
    perform(plant, "room_check", GOOD["room_check"]())
    ex = perform(plant, "identify_material", GOOD["identify_material"](plant["batch"].lot))
    steps.verify_step(session, ex, signer=plant["oscar"], password=PASSWORD, username=None, require_username=False)
    session.commit()
    (deadline,) = batch_pages.deadlines(session, plant["batch"])
    assert deadline.step_title == "Initial count" and deadline.overdue and deadline.remaining_minutes <= -59
    perform(plant, "initial_count", GOOD["initial_count"]())
    session.commit()
    assert batch_pages.deadlines(session, plant["batch"]) == []
    (deviation,) = deviations.of_batch(session, plant["batch"])
    assert deviation.origin == "time_window" and "allows 0-2 h" in deviation.description


def test_repeatable_step_and_calculation_errors(plant):
    session = plant["session"]
    ex = _prepare(plant)
    steps.verify_step(session, ex, signer=plant["oscar"], password=PASSWORD, username=None, require_username=False)
    perform(plant, "initial_count", GOOD["initial_count"]())
    for day in (1, 2, 3):
        perform(plant, "daily_check", {"checked_at": now_text(), "ph": "7.30", "appearance": "Clear"}, instance=day)
    session.commit()
    with pytest.raises(InvalidTransition):
        perform(plant, "daily_check", {"checked_at": now_text(), "ph": "7.30", "appearance": "Clear"}, instance=4)
    session.rollback()
    ex = perform(plant, "final_count", {"final_volume_ml": "50.0", "final_concentration": "4.00"})
    session.commit()
    assert ex.current_values()["recovery"].text == "80.0"
    perform(plant, "close_out", {"waste_disposed": "yes", "summary": "uneventful"}, comment="all as planned")
    session.commit()
    assert plant["batch"].status == "awaiting_review"


def test_division_by_zero_is_a_clear_error(plant):
    session = plant["session"]
    ex = _prepare(plant)
    steps.verify_step(session, ex, signer=plant["oscar"], password=PASSWORD, username=None, require_username=False)
    perform(plant, "initial_count", {"volume_ml": "100.0", "concentration": "2.50", "viability": "95.0"})
    perform(plant, "daily_check", {"checked_at": now_text(), "ph": "7.30", "appearance": "Clear"})
    session.commit()
    # correcting the initial volume to zero is out of limit but legal; recovery then divides by zero
    initial = session.scalar(sa.select(StepExecution).where(StepExecution.step_id == "initial_count"))
    steps.correct_value(session, initial, field_id="volume_ml", raw="0.0", reason="misread",
                        field_comment="re-measured",
                          signer=plant["olivia"], password=PASSWORD, username=None, require_username=False, tz=UTC)
    session.commit()
    with pytest.raises(ValidationFailed, match="division by zero"):
        perform(plant, "final_count", {"final_volume_ml": "50.0", "final_concentration": "4.00"})


def test_correction_keeps_the_original_invalidates_signatures_and_is_audited(plant):
    session = plant["session"]
    ex = _prepare(plant)
    steps.verify_step(session, ex, signer=plant["oscar"], password=PASSWORD, username=None, require_username=False)
    session.commit()
    old_signatures = {ex.performed_signature_id, ex.verified_signature_id}
    with pytest.raises(ValidationFailed, match="reason"):
        steps.correct_value(session, ex, field_id="buffer", raw="PBS-7", reason=" ", field_comment="",
                              signer=plant["olivia"], password=PASSWORD, username=None, require_username=False, tz=UTC)
    session.rollback()
    masterdata.receive_lot(session, material="Phosphate-buffered saline", lot_number="PBS-8",
                           expiry=date.today() + timedelta(days=10), qc_status="released")
    row = steps.correct_value(session, ex, field_id="buffer", raw="PBS-8", reason="wrong bottle scanned",
                                field_comment="", signer=plant["olivia"], password=PASSWORD, username=None,
                                require_username=False, tz=UTC)
    session.commit()
    history = [(v.field_id, v.text, v.supersedes_id is not None) for v in ex.values if v.field_id == "buffer"]
    assert history == [("buffer", "PBS-7", False), ("buffer", "PBS-8", True)]
    assert row.correction_reason == "wrong bottle scanned"
    assert ex.status == "awaiting_verification" and ex.verified_signature_id is None
    invalidated = set(session.scalars(sa.select(SignatureInvalidation.signature_id)))
    assert invalidated == old_signatures
    assert signatures.check_all(session)[1] == []  # invalidated signatures are expected not to match
    reasons = set(session.scalars(sa.select(AuditEntry.reason).where(AuditEntry.action == "recorded_value.create")))
    assert "correction: wrong bottle scanned" in reasons
    # the corrector is now a performer: only a third person, or the original verifier, may verify
    with pytest.raises(PermissionDenied):
        steps.verify_step(session, ex, signer=plant["olivia"], password=PASSWORD, username=None,
                            require_username=False)
    session.rollback()
    steps.verify_step(session, ex, signer=plant["oscar"], password=PASSWORD, username=None, require_username=False)
    session.commit()
    assert ex.status == "complete"


def test_recorded_values_cannot_be_updated_in_the_database(app, plant):
    perform(plant, "line_clearance", GOOD["line_clearance"]())
    plant["session"].commit()
    # the application's role: refused by the guard trigger, or with two PostgreSQL roles by its privileges first
    with pytest.raises(sa.exc.DatabaseError, match=app_refusal(app, "UPDATE", "recorded_value")):
        with app.extensions["mfg.db"].engine.begin() as conn:
            conn.execute(sa.text("UPDATE recorded_value SET text = 'BSC-02'"))
    with pytest.raises(sa.exc.DatabaseError, match="GMP record guard"):  # and whoever owns the table
        with attacker_engine(app).begin() as conn:
            conn.execute(sa.text("UPDATE recorded_value SET text = 'BSC-02'"))


def test_a_correction_recalculates_later_steps_and_asks_for_new_signatures(plant):
    """Correcting the initial volume changes recovery in the final count: stored as a new value,
    the final count's signature no longer stands, and the step must be signed again."""
    session = plant["session"]
    ex = _prepare(plant)
    steps.verify_step(session, ex, signer=plant["oscar"], password=PASSWORD, username=None, require_username=False)
    initial = perform(plant, "initial_count", GOOD["initial_count"]())
    perform(plant, "daily_check", {"checked_at": now_text(), "ph": "7.30", "appearance": "Clear"})
    final = perform(plant, "final_count", {"final_volume_ml": "50.0", "final_concentration": "4.00"})
    session.commit()
    assert final.current_values()["recovery"].text == "80.0"
    steps.correct_value(session, initial, field_id="volume_ml", raw="110.0", reason="re-read the scale",
                          field_comment="", signer=plant["olivia"], password=PASSWORD, username=None,
                          require_username=False, tz=UTC)
    session.commit()
    session.refresh(final)
    recovery = final.current_values()["recovery"]
    assert recovery.text == "72.7" and recovery.supersedes_id is not None
    assert "recalculated after correction of Initial count: Volume: re-read the scale" in recovery.correction_reason
    assert final.status == "needs_signature"
    assert final.performed_signature_id in set(session.scalars(sa.select(SignatureInvalidation.signature_id)))
    with pytest.raises(InvalidTransition):  # the batch cannot move on past an unsigned step
        perform(plant, "close_out", {"waste_disposed": "yes", "summary": "x"}, comment="done")
    session.rollback()
    steps.resign_step(session, final, signer=plant["oscar"], password=PASSWORD, username=None,
                        require_username=False)
    session.commit()
    assert final.status == "complete" and signatures.check_all(session)[1] == []
    perform(plant, "close_out", {"waste_disposed": "yes", "summary": "x"}, comment="done")
    session.commit()
    assert plant["batch"].status == "awaiting_review"


@pytest.fixture
def order_of_work(plant, monkeypatch):
    """What a signed action did, in order: "password" when argon2 ran, "write" for each INSERT or UPDATE
    sent to the database. A write takes the audit chain's lock until commit; a password check after it
    made every signature of the site wait for the one before (bench/load.py)."""
    seen: list[str] = []
    engine = plant["session"].get_bind()
    real = signatures.accounts.password_matches

    def password_matches(user, password):
        seen.append("password")
        return real(user, password)

    def statement(conn, cursor, text, parameters, context, executemany):  # noqa: ANN001
        if text.lstrip().upper().startswith(("INSERT", "UPDATE")):
            seen.append("write")

    monkeypatch.setattr(signatures.accounts, "password_matches", password_matches)
    sa.event.listen(engine, "before_cursor_execute", statement)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", statement)


def test_the_password_is_checked_before_the_first_write(plant, order_of_work):
    session = plant["session"]
    perform(plant, "line_clearance", GOOD["line_clearance"]())
    session.commit()
    assert order_of_work[0] == "password" and order_of_work.count("password") == 1, order_of_work
    perform(plant, "room_check", GOOD["room_check"]())
    ex = perform(plant, "identify_material", GOOD["identify_material"](plant["batch"].lot))
    session.commit()
    order_of_work.clear()
    steps.verify_step(session, ex, signer=plant["oscar"], password=PASSWORD, username=None, require_username=False)
    session.commit()
    assert order_of_work[0] == "password" and order_of_work.count("password") == 1, order_of_work
    masterdata.receive_lot(session, material="Phosphate-buffered saline", lot_number="PBS-9",
                           expiry=date.today() + timedelta(days=10), qc_status="released")
    session.commit()
    order_of_work.clear()
    steps.correct_value(session, ex, field_id="buffer", raw="PBS-9", reason="wrong bottle scanned",
                          field_comment="", signer=plant["olivia"], password=PASSWORD, username=None,
                          require_username=False, tz=UTC)
    session.commit()
    assert order_of_work[0] == "password" and order_of_work.count("password") == 1, order_of_work


def test_credentials_are_the_signers_own(plant):
    session = plant["session"]
    ex = perform(plant, "line_clearance", GOOD["line_clearance"]())
    credentials = signatures.authenticate(plant["oscar"], password=PASSWORD, require_username=False)
    with pytest.raises(AuthenticationFailed):  # oscar's password does not sign for olivia
        signatures.sign(session, signer=plant["olivia"], credentials=credentials, meaning="reviewed", record=ex)
    with pytest.raises(TypeError):
        signatures.Credentials(plant["olivia"].id, object())
    own = signatures.authenticate(plant["oscar"], password=PASSWORD, require_username=False)
    signatures.sign(session, signer=plant["oscar"], credentials=own, meaning="verified", record=ex)
    with pytest.raises(AuthenticationFailed):  # one password entry, one signature
        signatures.sign(session, signer=plant["oscar"], credentials=own, meaning="verified", record=ex)
