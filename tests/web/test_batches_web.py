"""Batch screens through the Flask test client: roles, malformed input, conflicts, the work queue."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from mfg.extensions import db
from mfg.models import Batch, RecordedValue, StepExecution, utcnow
from mfg.services import audit, masterdata
from tests.support import PASSWORD


@pytest.fixture
def demo(app, approved_sop, make_user):
    make_user("olivia", "operator", full_name="Olivia Operator")
    make_user("oscar", "operator", full_name="Oscar Verifier")
    make_user("clara", "clinical")
    with app.app_context():
        audit.set_actor(db.session, name="test-setup")
        masterdata.add_equipment(db.session, identifier="BSC-01", equipment_type="biosafety cabinet",
                                 calibration_due=date.today() + timedelta(days=30))
        db.session.commit()
    return app


def _start(client):
    response = client.post("/batches/start", data={"code": "DEMO-PROC"})
    assert response.status_code == 302, response.get_data(as_text=True)
    return int(response.location.rsplit("/", 1)[1])


def _clearance(cabinet="BSC-01", started="now"):
    started = utcnow().strftime("%Y-%m-%d %H:%M") if started == "now" else started
    return {"v_area_clear": "y", "v_cabinet": cabinet, "v_started_at": started, "username": "olivia",
            "password": PASSWORD}


def _through_preparation(app, client, login, batch_id, started="now"):
    """Olivia performs the preparation stage; Oscar signs in and verifies it. Each step must succeed."""
    assert client.post(f"/batches/{batch_id}/step/0/line_clearance/1",
                       data=_clearance(started=started)).status_code == 302
    with app.app_context():
        lot = db.session.get(Batch, batch_id).lot
        audit.set_actor(db.session, name="test-setup")
        masterdata.receive_lot(db.session, material="Phosphate-buffered saline", lot_number="PBS-7",
                               expiry=date.today() + timedelta(days=30), qc_status="released")
        db.session.commit()
    assert client.post(f"/batches/{batch_id}/step/0/room_check/1",
                       data={"v_room_temperature": "21.0", "v_settle_plate_count": "0", "v_room_status": "Clean",
                             "password": PASSWORD}).status_code == 302
    assert client.post(f"/batches/{batch_id}/step/0/identify_material/1",
                       data={"v_lot_scan": lot, "v_buffer": "PBS-7", "password": PASSWORD}).status_code == 302
    client.post("/auth/logout")
    login("oscar")
    with app.app_context():
        ex = db.session.scalar(sa.select(StepExecution).where(StepExecution.step_id == "identify_material"))
    assert client.post(f"/batches/{batch_id}/execution/{ex.id}/verify",
                       data={"verify-username": "oscar", "verify-password": PASSWORD}).status_code == 302


def test_step_screen_renders_instruction_fields_limits_and_signing(demo, client, login):
    login("olivia")
    batch_id = _start(client)
    page = client.get(f"/batches/{batch_id}/step/0/room_check/1").get_data(as_text=True)
    assert "≥ 18; ≤ 25" in page and "°C" in page and 'inputmode="decimal"' in page
    assert "Record and sign as Performed by" in page and 'name="username"' in page
    clearance = client.get(f"/batches/{batch_id}/step/0/line_clearance/1").get_data(as_text=True)
    assert "<strong>no material, label or record</strong>" in clearance  # Markdown rendered
    assert 'data-scan="1"' in clearance


def test_instruction_markdown_never_passes_raw_html():
    from mfg.web.batches import markdown_filter

    assert "<script>" not in markdown_filter("<script>alert(1)</script> **bold**")
    assert "<strong>bold</strong>" in markdown_filter("<script>alert(1)</script> **bold**")


def test_malformed_entry_is_refused_with_a_message_and_nothing_stored(demo, client, login):
    login("olivia")
    batch_id = _start(client)
    response = client.post(f"/batches/{batch_id}/step/0/line_clearance/1",
                           data=_clearance(started="2026-02-30 10:00"))
    assert response.status_code == 400 and "Processing started" in response.get_data(as_text=True)
    with demo.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(RecordedValue)) == 0


def test_good_entry_is_recorded_and_second_attempt_names_the_first_performer(demo, client, login):
    login("olivia")
    batch_id = _start(client)
    assert client.post(f"/batches/{batch_id}/step/0/line_clearance/1", data=_clearance()).status_code == 302
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert "1 of 3 steps complete" in page and "0 of 2 steps complete" in page and "BSC-01" in page
    other = demo.test_client()
    other.post("/auth/login", data={"username": "oscar", "password": PASSWORD})
    response = other.post(f"/batches/{batch_id}/step/0/line_clearance/1",
                          data=_clearance() | {"username": "oscar"}, follow_redirects=True)
    text = response.get_data(as_text=True)
    assert "already completed by Olivia Operator at" in text and "Nothing you entered was stored" in text
    with demo.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(StepExecution)) == 1


def test_out_of_order_step_is_refused_not_a_500(demo, client, login):
    login("olivia")
    batch_id = _start(client)
    response = client.post(f"/batches/{batch_id}/step/0/initial_count/1",
                           data={"v_volume_ml": "100.0", "v_concentration": "2.50", "v_viability": "95.0",
                                 "username": "olivia", "password": PASSWORD})
    assert response.status_code == 400 and "not open yet" in response.get_data(as_text=True)


def test_wrong_password_stores_nothing_and_is_audited(demo, client, login):
    login("olivia")
    batch_id = _start(client)
    response = client.post(f"/batches/{batch_id}/step/0/line_clearance/1",
                           data=_clearance() | {"password": "not-my-password"})
    assert response.status_code == 400 and "not correct" in response.get_data(as_text=True)
    with demo.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(StepExecution)) == 0
        assert audit.search(db.session, audit.AuditFilter(action="signature.failure"))[0]


@pytest.mark.parametrize("method,path", [("post", "/batches/start"), ("post", "/batches/1/step/0/line_clearance/1"),
                                         ("post", "/batches/1/execution/1/verify"),
                                         ("post", "/batches/1/execution/1/correct"),
                                         ("post", "/masterdata/equipment"), ("post", "/masterdata/lots")])
def test_batch_and_master_data_actions_need_their_role(demo, client, login, method, path):
    login("clara")
    assert getattr(client, method)(path).status_code == 403


def test_work_queue_shows_next_steps_and_verifications(demo, client, login):
    login("olivia")
    batch_id = _start(client)
    client.post(f"/batches/{batch_id}/step/0/line_clearance/1", data=_clearance())
    with demo.app_context():
        lot = db.session.get(Batch, batch_id).lot
        audit.set_actor(db.session, name="test-setup")
        masterdata.receive_lot(db.session, material="Phosphate-buffered saline", lot_number="PBS-7",
                               expiry=date.today() + timedelta(days=30), qc_status="released")
        db.session.commit()
    client.post(f"/batches/{batch_id}/step/0/identify_material/1",
                data={"v_lot_scan": lot, "v_buffer": "PBS-7", "password": PASSWORD})
    mine = client.get("/batches/").get_data(as_text=True)
    assert "Room check" in mine and "Verify: Identify the starting material" not in mine  # not her own
    assert "<td>Preparation</td>" in mine  # the stage each next step belongs to
    client.post("/auth/logout")
    login("oscar")
    theirs = client.get("/batches/").get_data(as_text=True)
    assert "Verify: Identify the starting material" in theirs
    with demo.app_context():
        ex = db.session.scalar(sa.select(StepExecution).where(StepExecution.step_id == "identify_material"))
    wrong = client.post(f"/batches/{batch_id}/execution/{ex.id}/verify",
                        data={"verify-username": "oscar", "verify-password": "not-his-password"})
    assert wrong.status_code == 400 and "not correct" in wrong.get_data(as_text=True)
    ok = client.post(f"/batches/{batch_id}/execution/{ex.id}/verify",
                     data={"verify-username": "oscar", "verify-password": PASSWORD})
    assert ok.status_code == 302


def test_master_data_screens(demo, client, make_user, login):
    make_user("quinn", "qa")
    login("quinn")
    page = client.get("/masterdata/").get_data(as_text=True)
    assert "BSC-01" in page and "Register equipment" in page
    response = client.post("/masterdata/lots", data={"lot-material": "IL-2", "lot-lot_number": "IL2-1",
                                                     "lot-expiry": "2030-01-01", "lot-qc_status": "quarantine"})
    assert response.status_code == 302
    with demo.app_context():
        lot = masterdata.list_lots(db.session)[0]
        assert masterdata.lot_problems(db.session, "IL-2", "IL2-1", date.today()) == [
            "IL-2 lot 'IL2-1' is quarantine, not released by QC"]
    client.post(f"/masterdata/lots/{lot.id}/status", data={"qc_status": "released", "reason": "CoA reviewed"})
    with demo.app_context():
        assert masterdata.lot_problems(db.session, "IL-2", "IL2-1", date.today()) == []
        equipment = masterdata.list_equipment(db.session)[0]
    client.post(f"/masterdata/equipment/{equipment.id}/status",
                data={"status": "out_of_service", "calibration_due": "2030-01-01", "reason": "broken sash"})
    with demo.app_context():
        assert "out of service" in masterdata.equipment_problems(db.session, "BSC-01", "biosafety cabinet",
                                                                 date.today())[0]
    login_page = client.get("/masterdata/").get_data(as_text=True)
    assert "out of service" in login_page


def test_calculation_error_is_a_clear_message_not_a_500(demo, client, login):
    login("olivia")
    batch_id = _start(client)
    _through_preparation(demo, client, login, batch_id)
    ok = client.post(f"/batches/{batch_id}/step/0/initial_count/1",
                     data={"v_volume_ml": "0.0", "c_volume_ml": "sample lost", "v_concentration": "2.50",
                           "v_viability": "95.0", "password": PASSWORD})
    assert ok.status_code == 302
    client.post(f"/batches/{batch_id}/step/0/daily_check/1",
                data={"v_checked_at": utcnow().strftime("%Y-%m-%d %H:%M"), "v_ph": "7.30", "v_appearance": "Clear",
                      "password": PASSWORD})
    response = client.post(f"/batches/{batch_id}/step/0/final_count/1",
                           data={"v_final_volume_ml": "50.0", "v_final_concentration": "4.00", "password": PASSWORD})
    assert response.status_code == 400 and "division by zero" in response.get_data(as_text=True)


def test_date_times_are_entered_and_shown_in_the_site_zone_and_stored_in_utc(demo, app_factory):
    from zoneinfo import ZoneInfo

    berlin = app_factory(SITE_TIMEZONE="Europe/Berlin")
    client = berlin.test_client()
    client.post("/auth/login", data={"username": "olivia", "password": PASSWORD})
    batch_id = _start(client)
    moment = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=10)
    local = moment.astimezone(ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%d %H:%M")
    response = client.post(f"/batches/{batch_id}/step/0/line_clearance/1", data=_clearance(started=local))
    assert response.status_code == 302, response.get_data(as_text=True)
    with berlin.app_context():
        stored = db.session.scalar(sa.select(RecordedValue).where(RecordedValue.field_id == "started_at"))
    assert stored.moment == moment and stored.text == moment.strftime("%Y-%m-%dT%H:%M:00.000000Z")
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert f"Processing started: {local} CE" in page  # by its label, in the site's zone (CET or CEST)


def test_identity_mismatch_is_a_hard_stop_audited_with_a_deviation(demo, client, login):
    login("olivia")
    batch_id = _start(client)
    client.post(f"/batches/{batch_id}/step/0/line_clearance/1", data=_clearance())
    response = client.post(f"/batches/{batch_id}/step/0/identify_material/1",
                           data={"v_lot_scan": "SOMEONE-ELSES-LOT", "v_buffer": "PBS-7", "password": PASSWORD})
    text = response.get_data(as_text=True)
    assert response.status_code == 400 and "IDENTITY MISMATCH" in text and "override" not in text.lower()
    assert 'value="SOMEONE-ELSES-LOT"' not in text and 'value="PBS-7"' in text  # scans cleared, the rest kept
    assert '<dialog open class="hard-stop-dialog"' in text  # the stop is drawn by the server: it shows without script
    with demo.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(StepExecution).where(
            StepExecution.step_id == "identify_material")) == 0
        assert audit.search(db.session, audit.AuditFilter(action="identity.mismatch"))[0]
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert "identity" in page and "SOMEONE-ELSES-LOT" in page


def test_batch_page_counts_down_to_time_windows(demo, client, login):
    login("olivia")
    batch_id = _start(client)
    assert "Time limits" not in client.get(f"/batches/{batch_id}").get_data(as_text=True)
    started = (utcnow() - timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M")
    _through_preparation(demo, client, login, batch_id, started=started)
    page = " ".join(client.get(f"/batches/{batch_id}").get_data(as_text=True).split())
    assert "Time limits" in page and "Initial count</strong> due by" in page
    import re

    assert re.search(r"1 h (2[0-9]|30) min left", page)  # a 2 h window that started 30-31 min ago
