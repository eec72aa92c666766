"""The current state matches the trail (issue [3.5] item 3): a plain UPDATE, INSERT or DELETE made the way
someone with database access alone would make it (guard triggers dropped on SQLite, disabled by the superuser on
PostgreSQL, the trail itself untouched) is reported by `audit verify`, by table, row and column.

Each change leaves the chain and its seal intact (the attacker did not touch the trail): what catches it is the
state check alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from mfg.domain.audit_state import redact
from mfg.models import Audited, Base, Equipment, MaterialLot, RecordedValue, StepExecution, User, utcnow
from mfg.services import accounts, audit, audit_state, clinical, evaluation, masterdata, starting, steps
from tests.support import PASSWORD

UTC = ZoneInfo("UTC")


@pytest.fixture
def world(session, approved_sop, make_user):
    """A realistic small plant: users of each role, equipment, lots, a donor, a batch with three performed steps
    (one value out of limits, with its deviation), a role change and a lot released by QA."""
    olivia = session.merge(make_user("olivia", "operator", full_name="Olivia Operator"))
    oscar = session.merge(make_user("oscar", "operator", full_name="Oscar Verifier"))
    clara = session.merge(make_user("clara", "clinical"))
    today = date.today()
    masterdata.add_equipment(session, identifier="BSC-01", equipment_type="biosafety cabinet",
                             calibration_due=today + timedelta(days=90))
    masterdata.add_equipment(session, identifier="BSC-02", equipment_type="biosafety cabinet",
                             calibration_due=today + timedelta(days=30))
    masterdata.receive_lot(session, material="Phosphate-buffered saline", lot_number="PBS-7",
                           expiry=today + timedelta(days=200), qc_status="released")
    held = masterdata.receive_lot(session, material="Phosphate-buffered saline", lot_number="PBS-8",
                                  expiry=today + timedelta(days=200))
    masterdata.set_lot_status(session, held, qc_status="rejected", reason="QC failed: endotoxin")
    donor = clinical.register_donor(session, code="D-0001", abo_rh="A+", user=clara)
    accounts.set_roles(session, oscar, roles="operator", full_name="Oscar V. Verifier", reason="name corrected")
    batch = starting.start_batch(session, codes=["DEMO-PROC"], user=olivia)
    session.commit()

    def perform(step_id: str, raw: dict[str, str], comments: dict[str, str] | None = None) -> StepExecution:
        return steps.perform_step(session, batch, position=0, step_id=step_id, instance=1,
                                  entry=evaluation.StepInput(raw=raw, field_comments=comments or {}, comment=""),
                                  signer=olivia, password=PASSWORD, username=None, require_username=False, tz=UTC)

    now = (utcnow() - timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M")
    perform("line_clearance", {"area_clear": "yes", "cabinet": "BSC-01", "started_at": now})
    room = perform("room_check", {"room_temperature": "26.0", "settle_plate_count": "0", "room_status": "Clean"},
                   {"room_temperature": "HVAC alarm, QA informed"})
    perform("identify_material", {"lot_scan": batch.lot, "buffer": "PBS-7"})
    session.commit()
    value = room.current_values()["room_temperature"]
    assert not value.in_limits and value.limit_message
    return {"batch": batch.id, "oscar": oscar.id, "olivia": olivia.id, "donor": donor.id, "lot": held.id,
            "step": room.id, "value": value.id,
            "equipment": session.scalar(sa.select(Equipment.id).where(Equipment.identifier == "BSC-01")),
            "spare": session.scalar(sa.select(Equipment.id).where(Equipment.identifier == "BSC-02"))}


@pytest.fixture
def attacker(app, session, database_url) -> Iterator[sa.Engine]:
    """A connection of someone with database access alone: on PostgreSQL the test server's superuser (the
    application's own role owns the tables today, issue [3.5] item 6), on SQLite the file itself."""
    session.rollback()  # end the application's read transaction: DROP / ALTER TABLE wait for its locks
    if database_url.startswith("sqlite"):
        engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    else:
        admin = sa.engine.make_url(os.environ["MFG_TEST_DATABASE_URL"])
        engine = sa.create_engine(sa.engine.make_url(database_url).set(username=admin.username,
                                                                         password=admin.password),
                                  poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def _tamper(engine: sa.Engine, table: str, statement: str, **params: object) -> None:
    """Run ``statement`` on ``table`` with its guard triggers out of the way, as an attacker would."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for (name,) in conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                                "AND tbl_name = :table"), {"table": table}).all():
                conn.execute(sa.text(f'DROP TRIGGER "{name}"'))
        else:
            conn.execute(sa.text(f'ALTER TABLE "{table}" DISABLE TRIGGER ALL'))
        conn.execute(sa.text(statement), params)


def _instant(engine: sa.Engine, text: str) -> str:
    """A UTC instant as a SQL literal of the column type the application uses (UTCDateTime)."""
    return f"'{text}.000000'" if engine.dialect.name == "sqlite" else f"'{text}+00'"


def _reported(app, session, *expected: str) -> list[str]:
    """``expected`` lines (or parts of them) are all reported, by the service and by `audit verify`,
    with the chain itself intact; returns the findings."""
    session.rollback()
    assert audit.verify(session).ok  # the trail was not touched: the chain and its seal verify
    state = audit_state.check(session)
    lines = state.lines()
    session.rollback()
    for line in expected:
        assert any(line in found for found in lines), (line, lines)
    cli = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert cli.exit_code == 1, cli.output
    assert "audit trail intact" in cli.output and "current state DOES NOT MATCH the trail" in cli.output
    for line in expected:
        assert line in cli.output, (line, cli.output)
    return lines


def test_an_untouched_database_after_a_realistic_flow_reports_nothing(app, session, world):
    state = audit_state.check(session)
    assert state.ok, state.lines()
    assert state.rows_checked >= 20 and state.entries_read >= state.rows_checked
    assert not state.not_checkable  # every password hash was recorded by its digest
    session.rollback()
    cli = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert cli.exit_code == 0, cli.output
    assert "audit trail intact" in cli.output
    assert f"current state matches the trail: {state.rows_checked} audited rows checked" in cli.output


def test_every_audited_model_is_checked(session):
    checked = audit_state.audited_tables()
    audited = {m.local_table.name for m in Base.registry.mappers if issubclass(m.class_, Audited)}
    assert set(checked) == audited and {"batch", "user_account", "recorded_value", "equipment"} <= audited
    # nothing is left out but the optimistic-lock counter
    assert {name for name, (_model, shape) in checked.items() if shape.excluded} == \
        {"batch", "step_execution", "deviation", "pending_result", "clinical_alert"}
    assert all(shape.excluded <= {"row_version"} for _model, shape in checked.values())
    assert checked["recorded_value"][1].numeric == {"number"}
    assert checked["user_account"][1].redacted == {"password_hash"}


def test_a_batch_set_to_released(app, session, world, attacker):
    _tamper(attacker, "batch", "UPDATE batch SET status = 'released' WHERE id = :id", id=world["batch"])
    _reported(app, session, f'batch {world["batch"]} status: trail says "in_progress", row holds "released"')


def test_a_password_hash_replaced(app, session, world, attacker):
    forged = accounts.hash_password("attacker-chosen-1")
    _tamper(attacker, "user_account", "UPDATE user_account SET password_hash = :h WHERE id = :id",
            h=forged, id=world["oscar"])
    real = session.scalar(sa.select(User.password_hash).where(User.username == "olivia"))
    lines = _reported(app, session, f'user_account {world["oscar"]} password_hash: trail says "sha256:',
                      f'row holds "{redact(forged)}"')
    # the report shows digests only, never a password hash
    assert not [line for line in lines if forged in line or real in line]


def test_a_users_roles_changed(app, session, world, attacker):
    _tamper(attacker, "user_account", "UPDATE user_account SET roles = 'admin,operator,qa' WHERE id = :id",
            id=world["olivia"])
    _reported(app, session,
              f'user_account {world["olivia"]} roles: trail says "operator", row holds "admin,operator,qa"')


def test_donor_eligibility_changed(app, session, world, attacker):
    _tamper(attacker, "donor", "UPDATE donor SET eligibility = 'eligible' WHERE id = :id", id=world["donor"])
    _reported(app, session, f'donor {world["donor"]} eligibility: trail says "pending", row holds "eligible"')


def test_a_lots_qc_status_changed(app, session, world, attacker):
    _tamper(attacker, "material_lot", "UPDATE material_lot SET qc_status = 'released' WHERE id = :id",
            id=world["lot"])
    _reported(app, session, f'material_lot {world["lot"]} qc_status: trail says "rejected", row holds "released"')


def test_a_steps_performer_and_time_changed(app, session, world, attacker):
    at = _instant(attacker, "2026-01-05 08:00:00")
    _tamper(attacker, "step_execution",
            f"UPDATE step_execution SET performed_by_id = :who, performed_at = {at} WHERE id = :id",
            who=world["oscar"], id=world["step"])
    _reported(app, session,
              f'step_execution {world["step"]} performed_by_id: trail says {world["olivia"]}, '
              f'row holds {world["oscar"]}',
              f'step_execution {world["step"]} performed_at: trail says "',
              'row holds "2026-01-05T08:00:00.000000Z"')


def test_an_equipment_calibration_date_changed(app, session, world, attacker):
    due = session.get(Equipment, world["equipment"]).calibration_due
    _tamper(attacker, "equipment", "UPDATE equipment SET calibration_due = '2099-12-31' WHERE id = :id",
            id=world["equipment"])
    _reported(app, session, f'equipment {world["equipment"]} calibration_due: trail says "{due.isoformat()}", '
                            'row holds "2099-12-31"')


def test_a_recorded_values_number_and_limits_judgement_changed(app, session, world, attacker):
    value = session.get(RecordedValue, world["value"])
    message = value.limit_message
    _tamper(attacker, "recorded_value", "UPDATE recorded_value SET number = 22.5, in_limits = TRUE, "
                                        "limit_message = NULL WHERE id = :id", id=world["value"])
    _reported(app, session,
              f'recorded_value {world["value"]} number: trail says "26", row holds "22.5"',
              f'recorded_value {world["value"]} in_limits: trail says false, row holds true',
              f'recorded_value {world["value"]} limit_message: trail says "{message}", row holds null')


def test_a_row_inserted_outside_the_application(app, session, world, attacker):
    at = _instant(attacker, "2026-01-05 08:00:00")
    _tamper(attacker, "material_lot", "INSERT INTO material_lot (material, lot_number, expiry, qc_status, "
                                      f"received_at) VALUES ('Phosphate-buffered saline', 'PBS-X', '2099-01-01', "
                                      f"'released', {at})")
    new_id = session.scalar(sa.select(MaterialLot.id).where(MaterialLot.lot_number == "PBS-X"))
    session.rollback()
    _reported(app, session, f"material_lot {new_id}: row inserted outside the application")


def test_a_row_deleted_outside_the_application(app, session, world, attacker):
    _tamper(attacker, "equipment", "DELETE FROM equipment WHERE id = :id", id=world["spare"])
    _reported(app, session, f'equipment {world["spare"]}: row deleted outside the application')


def test_a_broken_chain_is_reported_and_the_state_check_says_it_did_not_run(app, session, world, attacker):
    _tamper(attacker, "audit_entry", "UPDATE audit_entry SET reason = 'rewritten' WHERE seq = 3")
    cli = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert cli.exit_code == 1 and "audit trail BROKEN after 2 good entries" in cli.output, cli.output
    assert "current state not checked against the trail: the trail itself is broken" in cli.output
