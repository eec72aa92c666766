"""Issue 19 item 5: every POST that stores something, sent twice at the same moment, is done once.

Three guarantees, each tested here on both databases, over the routes of ``app.url_map`` (a new POST route
without an entry below fails ``test_every_post_route_is_raced_or_listed``):

* a signed-in POST that stores something must carry its one-time submission token (``mfg/static/once.js``
  puts one in every form): without it, two identical submissions (a script) could not be told apart, so it is
  refused with a 400 and nothing is stored (``test_a_post_without_its_token_is_refused_on_every_route``);
* two identical submissions (the same form, the same token: a double tap, two tabs of one sent form) released
  together after both passed the check for a repeat: one is done, the other is answered "already done by
  <printed name> at <UTC time>", one record, never a 500 (``test_two_identical_submits_at_once_are_done_once``);
* two different submissions of the same one-shot action (two people, two forms) released together: the second
  re-checks under the record's row lock and is told who did it first (``test_two_people_doing_the_same_...``).

Real threads and connections, no mocks: each request holds at a barrier before the check for a repeat, so both
have read the database before either commits.
"""

from __future__ import annotations

import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask import request

from mfg.extensions import db
from mfg.models import (
    AuditEntry,
    Batch,
    BatchDecision,
    CustodyEvent,
    Deviation,
    DltEvent,
    DocumentRevision,
    Donor,
    DonorTest,
    Equipment,
    EscalationDecision,
    FormSubmission,
    LedgerDocument,
    MaterialLot,
    RecordedValue,
    ReviewMark,
    RoleGrant,
    Signature,
    SopVersion,
    StepExecution,
    Subject,
    User,
    utcnow,
)
from mfg.services import (
    accounts,
    audit,
    clinical,
    deviations,
    evaluation,
    lifecycle,
    masterdata,
    results,
    review,
    sops,
    starting,
    steps,
)
from mfg.web.security import MISSING_TOKEN, SUBMISSION_FIELD
from tests.services import test_batch_engine as engine
from tests.support import DEMO_SOP, PASSWORD, assert_audit_intact, enrolment_form, open_level
from tests.web.test_actions import plant, released  # noqa: F401 - the fixtures
from tests.web.test_custody_web import nk_batch  # noqa: F401 - the fixture

# POST endpoints that take no part in the one-time token, and why (mfg/web/security.py ``_NOT_CLAIMED``,
# ``stores_nothing``): they act on the browser's own session, or store nothing.
NOT_CLAIMED = {
    "auth.login": "signs in: acts on the browser's session cookie; a second sign-in is harmless",
    "auth.logout": "signs out: acts on the browser's session cookie; a second sign-out is harmless",
    "auth.change_password": "acts on the session; a second change with the old password as 'current' is refused",
    "auth.keep_alive": "stores nothing (stores_nothing)",
    "batches.step_preview": "stores nothing (stores_nothing)",
}


@dataclass
class Race:
    user: str
    full_name: str
    url: str
    data: dict
    done: Callable[[], int]  # how many times it was done: exactly one more after the race


def _count(model, *where) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


@pytest.fixture
def world(app, make_user, nk_batch, site_certificate):  # noqa: F811 - the fixture
    """tests/web/test_custody_web.py's released NK batch for subject S-01 with one bag, the demo master record in
    the definitions folder (not loaded), a donor D-002 with its panel recorded and users of every role."""
    extra = {"adam": ("admin", "Adam Administrator"), "quinn": ("qa", "Quinn Quality"),
             "oscar": ("operator", "Oscar Operator"),
             "spare": ("operator", "Spare Person")}
    for name, (roles, full) in extra.items():
        make_user(name, roles, full_name=full)
    shutil.copy(DEMO_SOP, Path(app.config["SOPS_DIR"]) / DEMO_SOP.name)
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        clara = s.scalar(sa.select(User).where(User.username == "clara"))
        donor = clinical.register_donor(s, code="D-002", abo_rh="O+", relationship="matched_sibling", user=clara)
        clinical.record_donor_panel(s, donor, results={test: "non-reactive" for test in clinical.donor_panel(s)},
                                    specimen_date=date.today() - timedelta(days=2), user=clara)
        s.commit()
        return {"batch": nk_batch["id"], "bag": nk_batch["bag"], "label": nk_batch["label"], "coi": nk_batch["coi"],
                "donor": donor.id,
                "subject": s.scalar(sa.select(Subject.id).where(Subject.code == "S-01")),
                "user_id": dict(s.execute(sa.select(User.username, User.id)).all())}


def _client(app, username):
    client = app.test_client()
    assert client.post("/auth/login", data={"username": username, "password": PASSWORD}).status_code == 302
    return client


def _send_together(app, url: str, sends: list[Callable[[], object]]) -> list:
    """Run each of ``sends`` in its own thread; each request to ``url`` holds at a barrier before anything of the
    application runs (the check for a repeat included), so that both have started before either commits."""
    together = threading.Barrier(len(sends), timeout=20)

    def hold() -> None:
        if request.path == url:
            together.wait()

    app.before_request_funcs.setdefault(None, []).insert(0, hold)
    answers: list = [None] * len(sends)

    def run(i: int) -> None:
        try:
            answers[i] = sends[i]()
        except Exception as exc:  # noqa: BLE001 - the test reports it
            answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sends))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
    finally:
        app.before_request_funcs[None].remove(hold)
    return answers


def _flashes(client) -> list[str]:
    with client.session_transaction() as session:
        return [message for _category, message in session.get("_flashes", [])]


# --- the scenarios: one per raced endpoint; each prepares its record and says what to send -----------------

def _admin_create_user(app, w) -> Race:
    return Race("adam", "Adam Administrator", "/admin/users/new",
                {"username": "newbie", "full_name": "New Bie", "roles": "operator", "password": "a-Temporary-pass-42"},
                lambda: _count(User, User.username == "newbie"))


def _admin_user_action(app, w) -> Race:
    spare = w["user_id"]["spare"]
    return Race("adam", "Adam Administrator", f"/admin/users/{spare}/deactivate", {"deactivate-reason": "left"},
                lambda: _count(AuditEntry, AuditEntry.entity_type == "user_account",
                               AuditEntry.entity_id == str(spare), AuditEntry.reason == "left"))


def _pending_grant(w) -> int:
    """A pending QA grant for Oscar (the two-person rule), requested by Adam."""
    oscar = db.session.get(User, w["user_id"]["oscar"])
    audit.set_actor(db.session, db.session.get(User, w["user_id"]["adam"]))
    accounts.set_roles(db.session, oscar, roles="operator,qa", full_name=oscar.full_name, reason="second duty",
                       policy=accounts.Policy())
    db.session.commit()
    return accounts.pending_grants(db.session, oscar)[-1].id


def _admin_confirm_grant(app, w) -> Race:
    grant = _pending_grant(w)
    return Race("quinn", "Quinn Quality", f"/admin/grants/{grant}/confirm", {},
                lambda: _count(RoleGrant, RoleGrant.id == grant, RoleGrant.confirmed_at.is_not(None)))


def _sops_load(app, w) -> Race:
    return Race("loader", "Loader Person", "/sops/load", {},
                lambda: _count(SopVersion, SopVersion.code == "DEMO-PROC"))


def _sops_approve(app, w) -> Race:
    sop = db.session.scalar(sa.select(SopVersion.id).where(SopVersion.code == "DEMO-PROC"))
    return Race("quentin", "Quentin Quality", f"/sops/{sop}/approve", {"username": "quentin", "password": PASSWORD},
                lambda: _count(AuditEntry, AuditEntry.entity_type == "sop_version", AuditEntry.entity_id == str(sop),
                               AuditEntry.reason.like("approved by%")))


def _masterdata_add_equipment(app, w) -> Race:
    return Race("quentin", "Quentin Quality", "/masterdata/equipment",
                {"eq-identifier": "BSC-01", "eq-equipment_type": "biosafety cabinet",
                 "eq-calibration_due": (date.today() + timedelta(days=30)).isoformat()},
                lambda: _count(Equipment, Equipment.identifier == "BSC-01"))


def _masterdata_equipment_status(app, w) -> Race:
    item = db.session.scalar(sa.select(Equipment.id).where(Equipment.identifier == "BSC-01"))
    return Race("quentin", "Quentin Quality", f"/masterdata/equipment/{item}/status",
                {"status": "out_of_service", "reason": "door seal"},
                lambda: _count(AuditEntry, AuditEntry.entity_type == "equipment", AuditEntry.entity_id == str(item),
                               AuditEntry.reason == "door seal"))


def _masterdata_receive_lot(app, w) -> Race:
    return Race("quentin", "Quentin Quality", "/masterdata/lots",
                {"lot-material": "IL-2", "lot-lot_number": "L-77", "lot-qc_status": "quarantine",
                 "lot-expiry": (date.today() + timedelta(days=300)).isoformat()},
                lambda: _count(MaterialLot, MaterialLot.lot_number == "L-77"))


def _masterdata_lot_status(app, w) -> Race:
    lot = db.session.scalar(sa.select(MaterialLot.id).where(MaterialLot.lot_number == "L-77"))
    return Race("quentin", "Quentin Quality", f"/masterdata/lots/{lot}/status",
                {"qc_status": "released", "reason": "CoA reviewed"},
                lambda: _count(AuditEntry, AuditEntry.entity_type == "material_lot", AuditEntry.entity_id == str(lot),
                               AuditEntry.reason == "CoA reviewed"))


def _batches_start(app, w) -> Race:
    return Race("olivia", "Olivia Operator", "/batches/start", {"code": "DEMO-PROC"},
                lambda: _count(Batch, Batch.din.is_(None)))


def _batches_step(app, w) -> Race:
    batch = db.session.scalar(sa.select(Batch.id).where(Batch.din.is_(None)))
    return Race("olivia", "Olivia Operator", f"/batches/{batch}/step/0/line_clearance/1",
                {"v_area_clear": "y", "v_cabinet": "BSC-01", "v_started_at": utcnow().strftime("%Y-%m-%d %H:%M"),
                 "username": "olivia", "password": PASSWORD},
                lambda: _count(StepExecution, StepExecution.batch_id == batch))


def _demo_execution(step_id: str) -> StepExecution:
    batch = db.session.scalar(sa.select(Batch.id).where(Batch.din.is_(None)))
    return db.session.scalar(sa.select(StepExecution).where(StepExecution.batch_id == batch,
                                                            StepExecution.step_id == step_id))


def _batches_verify(app, w) -> Race:
    s = db.session
    for lot in ("PBS-7", "PBS-8"):
        masterdata.receive_lot(s, material="Phosphate-buffered saline", lot_number=lot,
                               expiry=date.today() + timedelta(days=300), qc_status="released")
    batch = s.scalar(sa.select(Batch).where(Batch.din.is_(None)))
    olivia = s.scalar(sa.select(User).where(User.username == "olivia"))
    ex = steps.perform_step(s, batch, position=0, step_id="identify_material", instance=1,
                            entry=evaluation.StepInput(raw={"lot_scan": batch.lot, "buffer": "PBS-7"}), signer=olivia,
                            password=PASSWORD, username=None, require_username=False, tz=ZoneInfo("UTC"))
    s.commit()
    return Race("oscar", "Oscar Operator", f"/batches/{batch.id}/execution/{ex.id}/verify",
                {"verify-username": "oscar", "verify-password": PASSWORD},
                lambda: _count(Signature, Signature.record_type == "step_execution", Signature.record_id == str(ex.id),
                               Signature.meaning == "verified"))


def _batches_correct(app, w) -> Race:
    ex = _demo_execution("identify_material")
    return Race("olivia", "Olivia Operator", f"/batches/{ex.batch_id}/execution/{ex.id}/correct",
                {"correct-username": "olivia", "correct-password": PASSWORD, "field_id": "buffer",
                 "new_value": "PBS-8", "reason": "wrong bottle scanned"},
                lambda: _count(RecordedValue, RecordedValue.execution_id == ex.id, RecordedValue.field_id == "buffer"))


def _review_mark(app, w) -> Race:
    ex = _demo_execution("identify_material")
    batch = db.session.get(Batch, ex.batch_id)
    batch.status = "awaiting_review"  # as its last step leaves it: QA reviews the correction
    db.session.commit()
    key = review.exceptions(db.session, batch)[0].key
    return Race("quinn", "Quinn Quality", f"/review/batches/{batch.id}/mark", {"key": key, "comment": "seen"},
                lambda: _count(ReviewMark, ReviewMark.batch_id == batch.id, ReviewMark.item_key == key))


def _clinical_add_donor(app, w) -> Race:
    return Race("clara", "Clara Coordinator", "/clinical/donors", {"donor-code": "D-009", "donor-abo_rh": "B+",
                                                               "donor-relationship": "matched_sibling"},
                lambda: _count(Donor, Donor.code == "D-009"))


def _clinical_add_subject(app, w) -> Race:
    return Race("clara", "Clara Coordinator", "/clinical/subjects",
                {"subject-code": "S-09", "subject-donor_id": str(w["donor"]), "subject-weight_kg": "70.0",
                 "subject-measured_on": date.today().isoformat(), "subject-username": "clara",
                 "subject-password": PASSWORD, **enrolment_form(db.session)},  # the signed screening (NK-TRIAL v5)
                lambda: _count(Subject, Subject.code == "S-09"))


def _clinical_add_test(app, w) -> Race:
    return Race("clara", "Clara Coordinator", f"/clinical/donors/{w['donor']}/tests",
                {"test-test": "anti-HCV", "test-result": "negative",
                 "test-specimen_date": (date.today() - timedelta(days=1)).isoformat()},
                lambda: _count(DonorTest, DonorTest.donor_id == w["donor"], DonorTest.test == "anti-HCV"))


def _clinical_add_panel(app, w) -> Race:
    data = {"panel-specimen_date": date.today().isoformat()}
    data |= {f"panel-result_{n}": "negative" for n in range(len(clinical.DONOR_PANEL))}
    return Race("clara", "Clara Coordinator", f"/clinical/donors/{w['donor']}/panel", data,
                lambda: _count(DonorTest, DonorTest.donor_id == w["donor"], DonorTest.test == "CMV Ab"))


def _clinical_eligibility(app, w) -> Race:
    return Race("clara", "Clara Coordinator", f"/clinical/donors/{w['donor']}/eligibility",
                {"elig-eligible": "eligible", "elig-summary": "panel complete"},
                lambda: _count(AuditEntry, AuditEntry.entity_type == "donor", AuditEntry.entity_id == str(w["donor"]),
                               AuditEntry.reason == "donor eligibility determined"))


def _close_batches(w) -> None:
    """No batch of the subject open (as QA's final release leaves it): a dose reassignment is allowed."""
    for batch in db.session.scalars(sa.select(Batch).where(Batch.subject_id == w["subject"])):
        batch.status = "cancelled"
    audit.set_actor(db.session, name="test-setup")
    db.session.commit()


def _open_level(w, level: str) -> None:
    """The escalation decisions that open ``level`` (``tests.support.open_level``), signed by Clara."""
    audit.set_actor(db.session, name="test-setup")
    open_level(db.session, db.session.get(User, w["user_id"]["clara"]), level)
    db.session.commit()


def _clinical_assign_dose(app, w) -> Race:
    _close_batches(w)
    _open_level(w, "DL3")
    return Race("clara", "Clara Coordinator", f"/clinical/subjects/{w['subject']}/dose",
                {"level": "DL3", "username": "clara", "password": PASSWORD},
                lambda: _count(Signature, Signature.record_type == "subject", Signature.record_id == str(w["subject"]),
                               Signature.comment.like("dose level DL3%")))


def _custody_handoff(app, w) -> Race:
    return Race("olivia", "Olivia Operator", f"/batches/{w['batch']}/custody/handoff",
                {"handoff-scanned_din": w["bag"], "handoff-from_location": "Cleanroom 2",
                 "handoff-to_location": "Courier", "handoff-condition": "sealed, 4 C",
                 "handoff-username": "olivia", "handoff-password": PASSWORD},
                lambda: _count(CustodyEvent, CustodyEvent.batch_id == w["batch"], CustodyEvent.kind == "handoff"))


def _custody_bedside(app, w) -> Race:
    data = {}
    for panel, username in (("first", "clara"), ("second", "nina")):
        data |= {f"bedside-{panel}-username": username, f"bedside-{panel}-password": PASSWORD,
                 f"bedside-{panel}-scanned_din": w["bag"], f"bedside-{panel}-scanned_bag": w["label"],
                 f"bedside-{panel}-scanned_coi": w["coi"].barcode()}
    return Race("clara", "Clara Coordinator", f"/batches/{w['batch']}/custody/bedside", data,
                lambda: _count(CustodyEvent, CustodyEvent.batch_id == w["batch"], CustodyEvent.kind == "bedside"))


def _batches_start_product(app, w) -> Race:
    return Race("olivia", "Olivia Operator", "/batches/start-product", {"subject_id": str(w["subject"])},
                lambda: _count(Batch, Batch.subject_id == w["subject"], Batch.status != "cancelled"))


def _review_open_deviation(app, w) -> Race:
    return Race("quentin", "Quentin Quality", f"/review/batches/{w['batch']}/deviations",
                {"deviation-description": "Label printer jammed"},
                lambda: _count(Deviation, Deviation.batch_id == w["batch"],
                               Deviation.description == "Label printer jammed"))


def _deviation(w) -> int:
    return db.session.scalar(sa.select(Deviation.id).where(Deviation.description == "Label printer jammed"))


def _review_investigate(app, w) -> Race:
    number = _deviation(w)
    return Race("quentin", "Quentin Quality", f"/review/deviations/{number}/investigation",
                {"inv-classification": "minor", "inv-investigation": "Printer log reviewed",
                 "inv-root_cause": "Worn feed roller", "inv-impact": "None", "inv-capa_reference": ""},
                lambda: _count(AuditEntry, AuditEntry.entity_type == "deviation", AuditEntry.entity_id == str(number),
                               AuditEntry.reason.like("%investigated")))


def _review_close_deviation(app, w) -> Race:
    number = _deviation(w)
    return Race("quinn", "Quinn Quality", f"/review/deviations/{number}/close",
                {"close-username": "quinn", "close-password": PASSWORD},
                lambda: _count(Signature, Signature.record_type == "deviation", Signature.record_id == str(number),
                               Signature.comment == "deviation closed"))


def _documents_print_labels(app, w) -> Race:
    """The first print of the released batch's labels: one revision, not two. The batch carries the demonstration
    FIN, whose labels print only as DEMO labels (a demo instance)."""
    app.config["DEMO"] = True
    return Race("olivia", "Olivia Operator", f"/batches/{w['batch']}/labels",
                {"reason": "label smudged at the bench", "username": "olivia", "password": PASSWORD},
                lambda: _count(DocumentRevision, DocumentRevision.batch_id == w["batch"],
                               DocumentRevision.kind == "labels"))


def _results_cancel(app, w) -> Race:
    """A DEMO-PROC batch started by mistake, cancelled."""
    olivia = db.session.scalar(sa.select(User).where(User.username == "olivia"))
    batch = starting.start_batch(db.session, codes=["DEMO-PROC"], user=olivia)
    db.session.commit()
    return Race("olivia", "Olivia Operator", f"/batches/{batch.id}/cancel",
                {"cancel-comment": "started by mistake", "cancel-username": "olivia", "cancel-password": PASSWORD},
                lambda: _count(BatchDecision, BatchDecision.batch_id == batch.id))


def _batches_resign(app, w) -> Race:
    """A DEMO-PROC batch whose final count is recalculated by a correction of the initial count: its signature
    no longer stands, and the step is signed again (tests/services/test_batch_engine.py's scenario)."""
    s = db.session
    olivia, oscar = (s.scalar(sa.select(User).where(User.username == name)) for name in ("olivia", "oscar"))
    masterdata.add_equipment(s, identifier="BSC-09", equipment_type="biosafety cabinet",
                             calibration_due=date.today() + timedelta(days=90))  # BSC-01 was taken out of service
    masterdata.receive_lot(s, material="Phosphate-buffered saline", lot_number="PBS-9",
                           expiry=date.today() + timedelta(days=200), qc_status="released")
    batch = starting.start_batch(s, codes=["DEMO-PROC"], user=olivia)
    work = {"session": s, "batch": batch, "olivia": olivia, "oscar": oscar}
    engine.perform(work, "line_clearance", {**engine.GOOD["line_clearance"](), "cabinet": "BSC-09"})
    engine.perform(work, "room_check", engine.GOOD["room_check"]())
    material = engine.perform(work, "identify_material", {"lot_scan": batch.lot, "buffer": "PBS-9"})
    steps.verify_step(s, material, signer=oscar, password=PASSWORD, username=None, require_username=False)
    initial = engine.perform(work, "initial_count", engine.GOOD["initial_count"]())
    engine.perform(work, "daily_check", {"checked_at": engine.now_text(), "ph": "7.30", "appearance": "Clear"})
    final = engine.perform(work, "final_count", {"final_volume_ml": "50.0", "final_concentration": "4.00"})
    s.commit()
    steps.correct_value(s, initial, field_id="volume_ml", raw="110.0", reason="re-read the scale", field_comment="",
                        signer=olivia, password=PASSWORD, username=None, require_username=False, tz=ZoneInfo("UTC"))
    s.commit()
    return Race("oscar", "Oscar Operator", f"/batches/{final.batch_id}/execution/{final.id}/resign",
                {"resign-username": "oscar", "resign-password": PASSWORD},
                _signatures("step_execution", final.id, "performed"))


def _review_decide(app, w) -> Race:
    """The released batch placed under investigation (after the hand-off and the bedside check: its bags are
    blocked from then on)."""
    return Race("quinn", "Quinn Quality", f"/review/batches/{w['batch']}/decide",
                {"decide-decision": "under_investigation", "decide-comment": "complaint from the ward",
                 "decide-username": "quinn", "decide-password": PASSWORD},
                lambda: _count(BatchDecision, BatchDecision.batch_id == w["batch"]))


def _trial_record_event(app, w) -> Race:
    """An adverse event of S-01, infused by the bedside scenario before."""
    return Race("clara", "Clara Coordinator", "/trial/events",
                {"event-subject_id": str(w["subject"]), "event-term": "Cytokine release syndrome", "event-grade": "2",
                 "event-attribution": "probable", "event-onset_on": date.today().isoformat(), "event-is_dlt": "no",
                 "event-username": "clara", "event-password": PASSWORD},
                lambda: _count(DltEvent, DltEvent.subject_id == w["subject"]))


def _latest_decision() -> str:
    return str(db.session.scalar(sa.select(sa.func.max(EscalationDecision.id))) or "")


def _trial_decide(app, w) -> Race:
    """The safety review stays at the open level (a new cohort), on the ledger as shown."""
    level = db.session.scalar(sa.select(EscalationDecision.level).order_by(EscalationDecision.id.desc()).limit(1))
    return Race("clara", "Clara Coordinator", "/trial/decisions",
                {"decision-level": level, "decision-reason": "", "decision-based_on": _latest_decision(),
                 "decision-username": "clara", "decision-password": PASSWORD},
                lambda: _count(EscalationDecision))


def _trial_issue(app, w) -> Race:
    """The cohort ledger issued as a signed PDF/A revision."""
    return Race("clara", "Clara Coordinator", "/trial/documents", {"issue-reason": "safety review meeting"},
                lambda: _count(LedgerDocument))


# In order: a scenario may use what an earlier one made (the equipment, the loaded master record, the deviation).
SCENARIOS: dict[str, Callable] = {
    "admin.create_user": _admin_create_user, "admin.user_action": _admin_user_action,
    "admin.confirm_grant": _admin_confirm_grant,
    "sops.load": _sops_load, "sops.approve": _sops_approve,
    "masterdata.add_equipment": _masterdata_add_equipment, "batches.start": _batches_start,
    "batches.step": _batches_step, "batches.verify": _batches_verify, "batches.correct": _batches_correct,
    "review.mark": _review_mark,
    "masterdata.equipment_status": _masterdata_equipment_status,
    "masterdata.receive_lot": _masterdata_receive_lot, "masterdata.lot_status": _masterdata_lot_status,
    "clinical.add_donor": _clinical_add_donor, "clinical.add_subject": _clinical_add_subject,
    "clinical.add_test": _clinical_add_test, "clinical.add_panel": _clinical_add_panel,
    "clinical.eligibility": _clinical_eligibility, "documents.print_labels": _documents_print_labels,
    "custody.handoff": _custody_handoff,
    "custody.bedside": _custody_bedside,
    "trial.record_event": _trial_record_event, "trial.decide": _trial_decide, "trial.issue": _trial_issue,
    "review.open_deviation": _review_open_deviation, "review.investigate": _review_investigate,
    "review.close_deviation": _review_close_deviation, "review.decide": _review_decide,
    "clinical.assign_dose": _clinical_assign_dose,
    "batches.start_product": _batches_start_product,
    "results.cancel": _results_cancel, "batches.resign": _batches_resign,
}


def _post_endpoints(app) -> dict[str, str]:
    return {rule.endpoint: rule.rule for rule in app.url_map.iter_rules() if "POST" in (rule.methods or ())}


def test_every_post_route_is_raced_or_listed(app):
    """Generated from the url_map: a new POST route must get a race scenario or a reason to have none."""
    endpoints = set(_post_endpoints(app))
    raced = set(SCENARIOS) | set(RELEASED_SCENARIOS)
    listed = raced | set(NOT_CLAIMED)
    assert endpoints - listed == set(), "POST routes without a race or a reason"
    assert listed - endpoints == set(), "listed routes that do not exist"
    assert not (raced & set(NOT_CLAIMED))


def test_a_post_without_its_token_is_refused_on_every_route(app, world):
    """A script (or a form without once.js) that sends no one-time token is refused before anything runs: 400,
    the message, nothing stored, on every claimed POST route of the url_map."""
    client = app.test_client()
    plain = type(client).__mro__[1](app, app.response_class, use_cookies=True)  # a FlaskClient adding no token
    assert plain.post("/auth/login", data={"username": "adam", "password": PASSWORD}).status_code == 302
    with app.app_context():
        before = _count(AuditEntry), _count(FormSubmission)
    refused = []
    for endpoint, rule in sorted(_post_endpoints(app).items()):
        if endpoint in NOT_CLAIMED:
            continue
        url = rule.replace("<int:", "<").replace("<action>", "deactivate")
        url = "/".join("1" if part.startswith("<") else part for part in url.split("/"))
        response = plain.post(url, data={"reason": "scripted", "code": "DEMO-PROC"})
        page = " ".join(response.get_data(as_text=True).split()).replace("&#39;", "'")
        assert response.status_code == 400 and MISSING_TOKEN in page, (endpoint, response.status_code)
        refused.append(endpoint)
    with app.app_context():
        assert (_count(AuditEntry), _count(FormSubmission)) == before
    assert len(refused) == len(_post_endpoints(app)) - len(NOT_CLAIMED)
    # the same request with its token goes through to the view
    assert client.post("/auth/login", data={"username": "loader", "password": PASSWORD}).status_code == 302
    assert client.post("/sops/load").status_code == 302
    with app.app_context():
        assert _count(SopVersion, SopVersion.code == "DEMO-PROC") == 1


def _identical_twice(app, scenarios: dict[str, Callable], world) -> list:
    """Each scenario's form (one token) sent twice at the same moment by the same person: the failures."""
    failures = []
    for endpoint, scenario in scenarios.items():
        with app.app_context():
            audit.set_actor(db.session, name="test-setup")
            race = scenario(app, world)
            before = race.done()
        clients = [_client(app, race.user) for _ in range(2)]
        data = {**race.data, SUBMISSION_FIELD: secrets.token_hex(16)}
        answers = _send_together(app, race.url, [
            (lambda c=c, url=race.url, data=data: c.post(url, data=data, headers={"Referer": url}))
            for c in clients])
        with app.app_context():
            after = race.done()
        statuses = [getattr(a, "status_code", a) for a in answers]
        replayed = [c for c in clients if any(f"already done by {race.full_name} at" in m for m in _flashes(c))]
        if any(not isinstance(s, int) or s >= 500 for s in statuses) or after - before != 1 or len(replayed) != 1:
            failures.append((endpoint, statuses, after - before, len(replayed)))
    with app.app_context():
        assert_audit_intact(db.session)
    return failures


def test_two_identical_submits_at_once_are_done_once(app, world):
    """For every raced POST route in turn: the same form (one token) sent twice at the same moment by the same
    person. One is done, the other is answered "already done by <name> at <UTC time>"; one record, no 500."""
    assert _identical_twice(app, SCENARIOS, world) == []


def _signatures(record_type: str, record_id: int, meaning: str) -> Callable[[], int]:
    return lambda: _count(Signature, Signature.record_type == record_type, Signature.record_id == str(record_id),
                          Signature.meaning == meaning)


def _pending(w) -> int:
    return results.of_batch(db.session, db.session.get(Batch, w[1]))[0].id  # the 14-day culture


def _results_enter(app, w) -> Race:
    pending = _pending(w)
    return Race("olivia", "Olivia Operator", f"/results/{pending}/enter",
                {f"r{pending}-result": "No growth", f"r{pending}-password": PASSWORD, f"r{pending}-username": "olivia"},
                _signatures("pending_result", pending, "performed"))


def _results_verify(app, w) -> Race:
    pending = _pending(w)
    return Race("oscar", "Oscar Verifier", f"/results/{pending}/verify",
                {f"v{pending}-password": PASSWORD, f"v{pending}-username": "oscar"},
                _signatures("pending_result", pending, "verified"))


def _results_acknowledge(app, w) -> Race:
    """The preliminary read entered out of specification: the batch goes under investigation and the clinic is
    alerted; the coordinator acknowledges the alert."""
    s = db.session
    olivia = s.scalar(sa.select(User).where(User.username == "olivia"))
    [preliminary] = [p for p in results.of_batch(s, s.get(Batch, w[1])) if "preliminary" in p.label]
    results.enter_result(s, preliminary, raw="Growth detected", comment="bottle flagged positive", signer=olivia,
                         password=PASSWORD, username="olivia", require_username=True, tz=ZoneInfo("UTC"))
    s.commit()
    [alert] = lifecycle.active_alerts(s)
    return Race("clara", "Clara Coordinator", f"/alerts/{alert.id}/acknowledge",
                {f"ack{alert.id}-password": PASSWORD, f"ack{alert.id}-username": "clara"},
                _signatures("clinical_alert", alert.id, "acknowledged"))


# after a conditional release (tests/web/test_actions.py's ``released``), in order: enter, verify, then the alert
RELEASED_SCENARIOS: dict[str, Callable] = {"results.enter": _results_enter, "results.verify": _results_verify,
                                           "results.acknowledge": _results_acknowledge}


def test_a_pending_result_entered_and_verified_twice_at_once_is_done_once(released):  # noqa: F811
    """After a conditional release: the pending result entered (one "Performed by"), then verified (one "Verified
    by"), and a product alert acknowledged (one "Acknowledged by"), each sent twice at once."""
    app = released[0]
    assert _identical_twice(app, RELEASED_SCENARIOS, released) == []


def _two_people(app, url: str, sends: list[tuple[str, dict]]) -> list:
    clients = [_client(app, user) for user, _ in sends]
    return _send_together(app, url, [
        (lambda c=c, d=d: c.post(url, data={**d, SUBMISSION_FIELD: secrets.token_hex(16)}))
        for c, (_, d) in zip(clients, sends, strict=True)])


def _one_won(answers, already: str) -> bool:
    """One answer is the success (a redirect), the other a form error saying who did it first."""
    statuses = sorted(a.status_code for a in answers)
    pages = [" ".join(a.get_data(as_text=True).split()) for a in answers]
    return statuses[0] == 302 and statuses[1] in (400, 409) and sum(already in p for p in pages) == 1


def test_two_people_doing_the_same_one_shot_action_at_once_one_is_told_who_did_it(app, world):
    """Different forms (two tokens), the same record: approving one SOP draft, closing one deviation, assigning
    the same dose level, recording the same donor test result, confirming one role grant. The second re-checks
    under the row lock."""
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        [version] = sops.load_directory(s, Path(app.config["SOPS_DIR"]),
                                        loader=s.get(User, world["user_id"]["quinn"])).loaded
        deviation = deviations.open_by_hand(s, s.get(Batch, world["batch"]), description="Spill",
                                            user=s.get(User, world["user_id"]["quinn"]))
        deviations.investigate(s, deviation, classification="minor", investigation="seen", root_cause="tray",
                               impact="none", capa_reference="", user=s.get(User, world["user_id"]["quinn"]))
        s.commit()
        sop_id, deviation_id, deviation_number = version.id, deviation.id, deviation.number
        lot = s.get(Batch, world["batch"]).lot
    decide = {"decide-decision": "under_investigation", "decide-comment": "complaint from the ward",
              "decide-password": PASSWORD}
    answers = _two_people(app, f"/review/batches/{world['batch']}/decide",
                          [("quentin", {**decide, "decide-username": "quentin"}),
                           ("quinn", {**decide, "decide-username": "quinn"})])
    assert _one_won(answers, f"batch {lot} was already under investigation by"), [a.status_code for a in answers]
    with app.app_context():
        assert _count(BatchDecision, BatchDecision.batch_id == world["batch"]) == 1
        _close_batches(world)
    sign = {"password": PASSWORD}
    answers = _two_people(app, f"/sops/{sop_id}/approve",
                          [("quentin", {**sign, "username": "quentin"}),
                           ("approver", {**sign, "username": "approver"})])
    assert _one_won(answers, "DEMO-PROC v1 was already approved by"), [a.status_code for a in answers]
    answers = _two_people(app, f"/review/deviations/{deviation_id}/close",
                          [("quentin", {"close-username": "quentin", "close-password": PASSWORD}),
                           ("approver", {"close-username": "approver", "close-password": PASSWORD})])
    assert _one_won(answers, f"deviation {deviation_number} was already closed by"), [a.status_code for a in answers]
    with app.app_context():
        _open_level(world, "DL3")
        based_on = _latest_decision()
    answers = _two_people(app, "/trial/decisions", [
        (name, {"decision-level": "DL3", "decision-reason": "", "decision-based_on": based_on,
                "decision-username": name, "decision-password": PASSWORD}) for name in ("clara", "nina")])
    assert _one_won(answers, "was signed after the ledger you decided on was shown"), [a.status_code for a in answers]
    answers = _two_people(app, f"/clinical/subjects/{world['subject']}/dose",
                          [("clara", {**sign, "username": "clara", "level": "DL3"}),
                           ("nina", {**sign, "username": "nina", "level": "DL3"})])
    assert _one_won(answers, "dose level DL3 was already assigned to subject S-01 by"), \
        [a.status_code for a in answers]
    test = {"test-test": "anti-HCV", "test-result": "negative",
            "test-specimen_date": (date.today() - timedelta(days=1)).isoformat()}
    answers = _two_people(app, f"/clinical/donors/{world['donor']}/tests", [("clara", test), ("nina", test)])
    assert _one_won(answers, "was already recorded for donor D-002 by"), [a.status_code for a in answers]
    with app.app_context():
        grant = _pending_grant(world)
    answers = _two_people(app, f"/admin/grants/{grant}/confirm", [("quinn", {}), ("approver", {})])
    assert _one_won(answers, "role qa of oscar was already confirmed by"), [a.status_code for a in answers]
    with app.app_context():
        s = db.session
        assert _count(AuditEntry, AuditEntry.entity_type == "sop_version", AuditEntry.entity_id == str(sop_id),
                      AuditEntry.reason.like("approved by%")) == 1
        # the world's panel's (two days ago) and the one result of the race
        assert _count(DonorTest, DonorTest.donor_id == world["donor"], DonorTest.test == "anti-HCV") == 2
        assert_audit_intact(s)
