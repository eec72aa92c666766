"""Chain-of-custody screens: the custody log, a signed hand-off and the two-person bedside check."""

from __future__ import annotations

import re
import shutil
import threading
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import request

from mfg.config import RESOURCE_ROOT
from mfg.domain import dose, isbt128
from mfg.extensions import db
from mfg.models import AuditEntry, Batch, CustodyEvent, Deviation, Signature, StepExecution, User, utcnow
from mfg.services import audit, bags, clinical, sops, starting
from tests.support import PASSWORD, eligible_enrolment, open_level

BAD_CREDENTIALS = "User name or password is not correct."


@pytest.fixture
def nk_batch(app, make_user):
    """An NK batch opened for subject S-01 (eligible donor, signed dose level): its id, bag and COI scans."""
    sops_dir = Path(app.config["SOPS_DIR"])
    shutil.copytree(RESOURCE_ROOT / "sops" / "nk", sops_dir / "nk")
    shutil.copytree(RESOURCE_ROOT / "sops" / "trial", sops_dir / "trial")
    loader, approver = make_user("loader", "qa"), make_user("approver", "qa")
    make_user("quentin", "qa", full_name="Quentin Quality")
    clara = make_user("clara", "clinical", full_name="Clara Coordinator")
    make_user("nina", "clinical", full_name="Nina Nurse")
    olivia = make_user("olivia", "operator", full_name="Olivia Operator")
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        clara, olivia = s.merge(clara), s.merge(olivia)
        for version in sops.load_directory(s, sops_dir, loader=s.merge(loader)).loaded:
            sops.approve(s, version, site_timezone="UTC", signer=s.merge(approver), password=PASSWORD, username=None,
                         require_username=False)
        donor = clinical.register_donor(s, code="D-001", abo_rh="A+", relationship="transplant_donor", user=clara)
        clinical.record_donor_panel(s, donor, results={test: "non-reactive" for test in clinical.donor_panel(s)},
                                    specimen_date=date.today() - timedelta(days=2), user=clara)
        subject = clinical.enrol_subject(s, code="S-01", donor=donor, weight_kg="62.4", measured_on=date.today(),
                                         user=clara, **eligible_enrolment(s))
        clinical.determine_eligibility(s, donor, eligible=True, summary="complete", user=clara)
        open_level(s, clara, "DL2")
        clinical.assign_dose_level(s, subject, level="DL2", signer=clara, password=PASSWORD, username=None,
                                   require_username=False)
        batch = starting.start_product_batch(s, subject=subject, user=olivia)
        # the bedside check's preconditions, set here: a bag of the divided product (made by the dividing step in
        # test_bags.py) and QA's release (tested in test_review*.py)
        execution = StepExecution(batch_id=batch.id, sop_version_id=batch.master_records[-1].sop_version_id,
                                  stage_id="formulation", step_id="bag_preparation", instance=1,
                                  definition_sha256="0" * 64, status="complete", performed_by_id=olivia.id,
                                  performed_at=utcnow())
        s.add(execution)
        s.flush()
        [bag] = bags.create(s, batch, execution, [dose.Bag(
            index=1, volume_ml=Decimal("13.4"), nk_cells=187_000_000, viable_cells=201_000_000,
            expires_at=utcnow() + timedelta(hours=48))])
        batch.status = "released"
        s.commit()
        return {"id": batch.id, "lot": batch.lot, "din": isbt128.din_from_text(batch.din),
                "bag": isbt128.din_from_text(batch.din).barcode("00"),
                "label": isbt128.PRODUCT_CODE_PREFIX + bag.product_code,
                "coi": isbt128.parse_coi(isbt128.COI_PREFIX + subject.coi)}


def _count(app, model, *where):
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def _text(response) -> str:
    return " ".join(response.get_data(as_text=True).split())


def _problems(response) -> list[str]:
    return re.findall(r'<p class="error form-error" role="alert">(.*?)</p>', response.get_data(as_text=True))


def _handoff(client, batch, **override):
    data = {"handoff-scanned_din": batch["bag"], "handoff-from_location": "Cleanroom 2",
            "handoff-to_location": "Courier", "handoff-condition": "sealed, 4 C",
            "handoff-username": "olivia", "handoff-password": PASSWORD}
    data.update(override)
    return client.post(f"/batches/{batch['id']}/custody/handoff", data=data)


def _bedside(client, batch, first="clara", second="nina", **override):
    data = {}
    for panel, username in (("first", first), ("second", second)):
        data |= {f"bedside-{panel}-username": username, f"bedside-{panel}-password": PASSWORD,
                 f"bedside-{panel}-scanned_din": batch["bag"], f"bedside-{panel}-scanned_bag": batch["label"],
                 f"bedside-{panel}-scanned_coi": batch["coi"].barcode()}
    data.update(override)
    return client.post(f"/batches/{batch['id']}/custody/bedside", data=data)


def test_the_custody_page_shows_the_identity_and_both_forms_to_an_operator(nk_batch, client, login):
    login("olivia")
    response = client.get(f"/batches/{nk_batch['id']}/custody")
    page = response.get_data(as_text=True)
    text = _text(response)
    assert response.status_code == 200
    assert nk_batch["lot"] in text and "S-01" in text
    assert nk_batch["coi"].eye_readable() in text and nk_batch["din"].eye_readable() in text
    assert "Record a hand-off" in text and "Bedside identity check" in text
    assert "Person 1" in text and "Person 2" in text and "Performed by" in text and "Verified by" in text
    scan = re.search(r'<input[^>]*id="handoff-scanned_din"[^>]*>', page).group(0)
    assert "autofocus" in scan and 'autocomplete="off"' in scan and "data-scan" in scan
    assert page.count("autofocus") == 1 and page.count("data-scan") == 7  # the hand-off's and 2 x 3 bedside scans
    for panel in ("first", "second"):
        assert f'name="bedside-{panel}-username"' in page and f'name="bedside-{panel}-password"' in page
        assert f'name="bedside-{panel}-scanned_coi"' in page and f'name="bedside-{panel}-scanned_bag"' in page
    assert 'name="handoff-username"' in page  # the first signature of the session needs the user name
    assert "No custody events recorded yet" in text


def test_a_hand_off_of_the_right_bag_is_stored_signed_and_listed(nk_batch, app, client, login):
    login("olivia")
    response = _handoff(client, nk_batch)
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.location.endswith(f"/batches/{nk_batch['id']}/custody")
    with app.app_context():
        event = db.session.scalar(sa.select(CustodyEvent))
        signature = db.session.scalar(sa.select(Signature).where(Signature.record_type == "custody_event"))
        assert (event.kind, event.scanned_din, event.from_location, event.to_location, event.condition) == (
            "handoff", nk_batch["din"].text, "Cleanroom 2", "Courier", "sealed, 4 C")
        assert (signature.record_id, signature.username, signature.meaning) == (str(event.id), "olivia", "performed")
    text = _text(client.get(f"/batches/{nk_batch['id']}/custody"))
    assert "recorded and signed" in text
    assert "Hand-off" in text and "Cleanroom 2" in text and "Courier" in text and "sealed, 4 C" in text
    assert "Performed by Olivia Operator (olivia)" in text and nk_batch["din"].text in text
    assert 'name="handoff-username"' not in text  # later signatures of the session: the password alone


def test_a_hand_off_of_the_wrong_bag_is_a_hard_stop_with_a_deviation(nk_batch, app, client, login):
    login("olivia")
    other = isbt128.make_din("X9999", 26, 999999).barcode("00")
    response = _handoff(client, nk_batch, **{"handoff-scanned_din": other})
    text = _text(response)
    assert response.status_code == 400 and "IDENTITY MISMATCH" in text and "HARD STOP" in text
    # the scan is cleared from its field (the stop names it: what was scanned)
    assert "override" not in text.lower() and f'value="{other}"' not in response.get_data(as_text=True)
    assert _count(app, CustodyEvent) == 0
    assert _count(app, Deviation, Deviation.batch_id == nk_batch["id"], Deviation.origin == "identity") == 1
    with app.app_context():
        entries = audit.search(db.session, audit.AuditFilter(action="identity.mismatch"))[0]
        assert [(e.entity_type, e.entity_id, e.username) for e in entries] == [("batch", str(nk_batch["id"]), "olivia")]


def test_a_bedside_check_by_two_people_is_stored_and_lists_both(nk_batch, app, client, login):
    login("olivia")
    response = _bedside(client, nk_batch)
    assert response.status_code == 302, response.get_data(as_text=True)
    with app.app_context():
        event = db.session.scalar(sa.select(CustodyEvent))
        signed = db.session.execute(sa.select(Signature.username, Signature.meaning).where(
            Signature.record_type == "custody_event").order_by(Signature.id)).all()
        assert (event.kind, event.scanned_din, event.scanned_coi) == (
            "bedside", nk_batch["din"].text, nk_batch["coi"].text)
        assert [tuple(row) for row in signed] == [("clara", "performed"), ("nina", "verified")]
    text = _text(client.get(f"/batches/{nk_batch['id']}/custody"))
    assert "Bedside identity check recorded" in text
    assert "Performed by Clara Coordinator (clara)" in text and "Verified by Nina Nurse (nina)" in text
    # Olivia signed nothing: her first own signature still needs her user name (21 CFR 11.200).
    assert 'name="handoff-username"' in text


def test_the_same_person_twice_is_refused(nk_batch, app, client, login):
    login("clara")
    response = _bedside(client, nk_batch, first="clara", second="clara")
    assert response.status_code == 400 and "two different people" in _text(response)
    assert _count(app, CustodyEvent) == 0 and _count(app, Signature, Signature.record_type == "custody_event") == 0


def test_a_wrong_password_of_person_2_stores_nothing_and_is_counted(nk_batch, app, client, login):
    login("olivia")
    response = _bedside(client, nk_batch, **{"bedside-second-password": "not-her-password"})
    assert response.status_code == 400 and BAD_CREDENTIALS in _text(response)
    assert _count(app, CustodyEvent) == 0 and _count(app, Signature, Signature.record_type == "custody_event") == 0
    with app.app_context():
        failures = dict(db.session.execute(sa.select(User.username, User.failed_logins)).all())
        assert (failures["nina"], failures["clara"], failures["olivia"]) == (1, 0, 0)
        entries = audit.search(db.session, audit.AuditFilter(action="signature.failure"))[0]
        assert [e.entity_id for e in entries] == [str(db.session.scalar(
            sa.select(User.id).where(User.username == "nina")))]


def test_an_unknown_user_name_fails_like_a_wrong_password(nk_batch, app, client, login):
    login("olivia")
    wrong_password = _bedside(client, nk_batch, **{"bedside-second-password": "not-her-password"})
    response = _bedside(client, nk_batch, second="nobody")
    assert response.status_code == 400
    assert _problems(response) == _problems(wrong_password) == [BAD_CREDENTIALS]  # no user enumeration
    assert _count(app, CustodyEvent) == 0
    with app.app_context():
        entries = audit.search(db.session, audit.AuditFilter(action="signature.failure"))[0]
        assert len(entries) == 2 and entries[0].entity_id is None and '"nobody"' in entries[0].after


def test_a_wrong_subject_at_the_bedside_is_a_hard_stop(nk_batch, app, client, login):
    login("olivia")
    wrong = isbt128.CoiId("X9999", 26, 4242).barcode()
    response = _bedside(client, nk_batch, **{"bedside-second-scanned_coi": wrong})
    text = _text(response)
    assert response.status_code == 400 and "IDENTITY MISMATCH: Subject COI (person 2)" in text
    assert _count(app, CustodyEvent) == 0
    assert _count(app, Deviation, Deviation.batch_id == nk_batch["id"], Deviation.origin == "identity") == 1


@pytest.mark.parametrize("action", ["handoff", "bedside"])
def test_a_qa_only_user_may_look_but_not_record(nk_batch, app, client, login, action):
    login("quentin")
    page = client.get(f"/batches/{nk_batch['id']}/custody")
    assert page.status_code == 200 and "Record a hand-off" not in _text(page)
    post = _handoff if action == "handoff" else _bedside
    assert post(client, nk_batch).status_code == 403
    assert _count(app, CustodyEvent) == 0


def test_the_custody_page_needs_a_sign_in_and_an_existing_batch(nk_batch, client, login):
    assert client.get(f"/batches/{nk_batch['id']}/custody").status_code == 302
    login("olivia")
    assert client.get("/batches/9999/custody").status_code == 404


def _trail(app, since: int) -> list[tuple]:
    """The audit entries after ``since``, as what they say (no times, sequence numbers or hashes)."""
    import json

    with app.app_context():
        rows = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.seq > since).order_by(AuditEntry.seq))
        found = []
        for e in rows:
            after = json.loads(e.after) if e.after else None
            if isinstance(after, dict):  # what differs by nature between two attempts: ids, times, the count
                after = {k: ("(count)" if k == "failed_logins" else v) for k, v in after.items()
                         if k not in ("id", "opened_at", "number")}
            found.append((e.action, e.entity_type, e.username, e.reason, json.dumps(after, sort_keys=True)))
        return found


def _seq(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.coalesce(sa.func.max(AuditEntry.seq), 0)))


def _deviations(app) -> list[tuple]:
    with app.app_context():
        return [(d.origin, d.step_id, d.description, d.status, d.opened_by_id)
                for d in db.session.scalars(sa.select(Deviation).order_by(Deviation.id))]


def test_a_wrong_bag_and_a_wrong_password_through_the_cli_are_recorded_as_through_the_screen(
        nk_batch, app, client, login, tmp_path):
    """The failure side of the GMP policy lives in the unit of work, not in the web edge: the CLI's hand-off
    leaves the same audit entries, deviation and lockout count as the screen's."""
    other = isbt128.make_din("X9999", 26, 999999).barcode("00")
    secret = tmp_path / "password"
    runner = app.test_cli_runner()

    def cli(scan: str, password: str):
        secret.write_text(password + "\n")
        return runner.invoke(args=["custody", "hand-off", "--batch", nk_batch["lot"], "--user", "olivia",
                                   "--password-file", str(secret), "--scan", scan, "--from", "Cleanroom",
                                   "--to", "Courier", "--condition", "sealed"])

    login("olivia")
    results = {}
    for edge in ("web", "cli"):
        for case, scan, password in (("mismatch", other, PASSWORD), ("password", nk_batch["bag"], "wrong-password")):
            start, deviations_before = _seq(app), len(_deviations(app))
            if edge == "web":
                response = _handoff(client, nk_batch, **{"handoff-scanned_din": scan, "handoff-password": password})
                assert response.status_code == 400
            else:
                result = cli(scan, password)
                assert result.exit_code == 1, result.output
                assert ("IDENTITY MISMATCH" if case == "mismatch" else BAD_CREDENTIALS) in result.output
            results[(edge, case)] = (_trail(app, start), _deviations(app)[deviations_before:])
    assert results[("web", "mismatch")] == results[("cli", "mismatch")]
    entries, opened = results[("cli", "mismatch")]
    assert [e[0] for e in entries] == ["identity.mismatch", "deviation.create"] and len(opened) == 1
    assert opened[0][0] == "identity" and "Bag DIN" in opened[0][2]
    assert results[("web", "password")] == results[("cli", "password")]
    entries, opened = results[("cli", "password")]
    assert [e[0] for e in entries] == ["user_account.update", "signature.failure"] and opened == []
    assert _count(app, CustodyEvent) == 0
    with app.app_context():
        assert db.session.scalar(sa.select(User.failed_logins).where(User.username == "olivia")) == 2
    assert cli(nk_batch["bag"], PASSWORD).exit_code == 0 and _count(app, CustodyEvent) == 1


@pytest.mark.parametrize(("stop", "action", "origin", "audited"), [
    ("identity", "handoff", "identity", "identity.mismatch"),  # a wrong bag at the hand-off
    ("product", "bedside", "product_stop", "product.blocked"),  # the right bag of a product QA has not released
])
def test_the_same_stop_submitted_twice_at_the_same_moment_is_recorded_once(nk_batch, app, stop, action, origin,
                                                                            audited):
    """A double tap sends the same stopped submission twice at once, with the form's one token: both requests pass
    the check for a repeat before either has committed anything, and both reach the stop. The commit that
    records the stop (its audit entry, its deviation) claims the token too, so the twin's is refused on the token
    and the twin is answered as a repeat: one stop recorded, one deviation."""
    if stop == "identity":
        other = isbt128.make_din("X9999", 26, 999999).barcode("00")
        data = {"handoff-scanned_din": other, "handoff-from_location": "Cleanroom 2",
                "handoff-to_location": "Courier", "handoff-condition": "sealed, 4 C", "handoff-username": "olivia",
                "handoff-password": PASSWORD}
    else:
        with app.app_context():  # QA's release withdrawn, as the fixture gave it (tested in test_review*.py)
            audit.set_actor(db.session, name="test-setup")
            db.session.get(Batch, nk_batch["id"]).status = "awaiting_review"
            db.session.commit()
        data = {}
        for panel, username in (("first", "clara"), ("second", "nina")):
            data |= {f"bedside-{panel}-username": username, f"bedside-{panel}-password": PASSWORD,
                     f"bedside-{panel}-scanned_din": nk_batch["bag"],
                     f"bedside-{panel}-scanned_bag": nk_batch["label"],
                     f"bedside-{panel}-scanned_coi": nk_batch["coi"].barcode()}
    data["submission_token"] = "twin-taps-of-one-form"
    clients = [app.test_client(), app.test_client()]
    for twin in clients:
        assert twin.post("/auth/login", data={"username": "olivia", "password": PASSWORD}).status_code == 302
    together = threading.Barrier(2, timeout=10)

    def at_the_same_moment() -> None:  # before the check for a repeat: neither twin has committed anything yet
        if request.endpoint == f"custody.{action}":
            together.wait()

    app.before_request_funcs.setdefault(None, []).insert(0, at_the_same_moment)
    answers: list[int] = []

    def send(twin) -> None:
        answers.append(twin.post(f"/batches/{nk_batch['id']}/custody/{action}", data=data,
                                 headers={"Referer": f"/batches/{nk_batch['id']}/custody"}).status_code)

    threads = [threading.Thread(target=send, args=(twin,)) for twin in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(answers) == [303, 400]  # the stop, and its twin answered as a repeat
    assert _count(app, Deviation, Deviation.batch_id == nk_batch["id"], Deviation.origin == origin) == 1
    assert _count(app, AuditEntry, AuditEntry.action == audited) == 1
    assert _count(app, CustodyEvent) == 0
