"""Subject and donor screens: roles, enrolment, eligibility, the signed dose level."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from mfg.config import RESOURCE_ROOT
from mfg.extensions import db
from mfg.models import Donor, Subject, User
from mfg.services import audit, sops
from tests.support import PASSWORD, eligible_enrolment


@pytest.fixture
def trial_app(app, make_user):
    sops_dir = Path(app.config["SOPS_DIR"])
    (sops_dir / "trial").mkdir()
    shutil.copy(RESOURCE_ROOT / "sops" / "trial" / "NK-TRIAL_v1.yaml", sops_dir / "trial")
    loader, approver = make_user("loader", "qa"), make_user("approver", "qa")
    make_user("clara", "clinical", full_name="Clara Coordinator")
    make_user("olivia", "operator")
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        version = sops.load_directory(s, sops_dir, loader=s.merge(loader)).loaded[0]
        sops.approve(s, version, site_timezone="UTC", signer=s.merge(approver), password=PASSWORD, username="approver",
                     require_username=True)
        s.commit()
    return app


def test_clinical_coordinator_enrols_determines_and_assigns_a_signed_dose(trial_app, client, login):
    login("clara")
    assert client.post("/clinical/donors", data={"donor-code": "D-001", "donor-abo_rh": "O-"}).status_code == 302
    with trial_app.app_context():
        donor_id = db.session.scalar(sa.select(Donor.id))
    refused = client.post(f"/clinical/donors/{donor_id}/eligibility",
                          data={"elig-eligible": "eligible", "elig-summary": "screening complete"})
    assert refused.status_code == 400 and "without test results" in refused.get_data(as_text=True)
    client.post(f"/clinical/donors/{donor_id}/tests", data={"test-test": "HIV-1/2 Ab", "test-result": "non-reactive",
                                                            "test-specimen_date": date.today().isoformat()})
    client.post(f"/clinical/donors/{donor_id}/eligibility",
                data={"elig-eligible": "eligible", "elig-summary": "screening complete"})
    bad = client.post("/clinical/subjects", data={"subject-code": "S-01", "subject-donor_id": donor_id,
                                                  "subject-weight_kg": "sixty", "subject-measured_on": "2026-11-20"})
    assert bad.status_code == 400 and "Weight: &#39;sixty&#39; is not a number" in bad.get_data(as_text=True)
    ok = client.post("/clinical/subjects", data={"subject-code": "S-01", "subject-donor_id": donor_id,
                                                 "subject-weight_kg": "62.4", "subject-measured_on": "2026-11-20"})
    assert ok.status_code == 302
    with trial_app.app_context():
        subject = db.session.scalar(sa.select(Subject))
    page = client.get(f"/clinical/subjects/{subject.id}").get_data(as_text=True)
    assert subject.coi.startswith("CHX9999") and "Sign: assign dose level" in page
    assert client.post(f"/clinical/subjects/{subject.id}/dose",
                       data={"level": "DL2", "username": "clara", "password": "wrong"}).status_code == 400
    assert client.post(f"/clinical/subjects/{subject.id}/dose",
                       data={"level": "DL2", "username": "clara", "password": PASSWORD}).status_code == 302
    page = client.get(f"/clinical/subjects/{subject.id}").get_data(as_text=True)
    text = " ".join(page.split())
    assert "DL2: 3.00 × 10⁶ NK cells/kg" in text and "Approved by Clara Coordinator (clara)" in text


@pytest.mark.parametrize("path", ["/clinical/donors", "/clinical/subjects", "/clinical/donors/1/tests",
                                  "/clinical/donors/1/eligibility", "/clinical/subjects/1/dose"])
def test_clinical_actions_need_the_clinical_role(trial_app, client, login, path):
    login("olivia")
    assert client.post(path).status_code == 403


def test_an_operator_opens_the_nk_batch_record_from_the_subject(trial_app, client, login):
    from mfg.services import clinical

    with trial_app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        clara = s.scalar(sa.select(User).where(User.username == "clara"))
        donor = clinical.register_donor(s, code="D-9", abo_rh=None, user=clara)
        subject = clinical.enrol_subject(s, code="S-9", donor=donor, weight_kg="70", measured_on=date.today(),
                                         user=clara, **eligible_enrolment(s))
        s.commit()
        subject_id = subject.id
    login("olivia")
    page = client.get(f"/clinical/subjects/{subject_id}").get_data(as_text=True)
    # the guard refuses (donor not eligible, no dose level): the screen offers nothing and says why
    assert "Open the batch record" not in page and "The batch record cannot be opened yet" in page
    assert "not determined eligible" in page and "no signed dose level" in page
    refused = client.post("/batches/start-product", data={"subject_id": subject_id}, follow_redirects=True)
    text = refused.get_data(as_text=True)
    assert "not determined eligible" in text and "no signed dose level" in text


@pytest.fixture
def nk_app(app, make_user):
    """The NK master records and trial configuration effective; the demo subject NK-001 (DL2) and its batch
    opened (created): (app, subject id, lot)."""
    from mfg.demo import nk_batch as demo_nk
    from mfg.services import starting

    sops_dir = Path(app.config["SOPS_DIR"])
    for folder in ("nk", "trial"):
        shutil.copytree(RESOURCE_ROOT / "sops" / folder, sops_dir / folder)
    loader, approver = make_user("loader", "qa"), make_user("approver", "qa")
    clara = make_user("clara", "clinical", full_name="Clara Coordinator")
    olivia = make_user("olivia", "operator")
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        for version in sops.load_directory(s, sops_dir, loader=s.merge(loader)).loaded:
            sops.approve(s, version, site_timezone="UTC", signer=s.merge(approver), password=PASSWORD, username=None,
                         require_username=False)
        subject = demo_nk.seed_demo_subject(s, s.merge(clara), PASSWORD)
        batch = starting.start_product_batch(s, subject=subject, user=s.merge(olivia))
        s.commit()
        return app, subject.id, batch.lot


def test_the_subject_page_says_why_neither_the_dose_nor_a_second_batch_is_offered(nk_app, client, login):
    app, subject_id, lot = nk_app
    login("clara")
    page = " ".join(client.get(f"/clinical/subjects/{subject_id}").get_data(as_text=True).split())
    assert "Sign: assign dose level" not in page
    assert "NK-DONOR-001</a> (eligible; Original transplant donor)" in page  # the donor's relationship (NK-TRIAL v5)
    assert (f"The dose level cannot be reassigned now: batch {lot} of subject NK-001 is open (created): its dose "
            "was pinned when it started") in page
    refused = client.post(f"/clinical/subjects/{subject_id}/dose",
                          data={"level": "DL4", "username": "clara", "password": PASSWORD})
    assert refused.status_code == 400 and f"batch {lot} of subject NK-001 is open" in refused.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Subject, subject_id).dose_level == "DL2"
    client.post("/auth/logout")

    login("olivia")
    page = " ".join(client.get(f"/clinical/subjects/{subject_id}").get_data(as_text=True).split())
    assert "Open the batch record" not in page
    assert (f"The batch record cannot be opened yet: subject NK-001 already has batch {lot}, open (created): a "
            f"second batch is not opened while one is; subject NK-001 already has batch {lot} (created): the trial "
            "allows 1 infusion per subject") in page
    again = client.post("/batches/start-product", data={"subject_id": subject_id}, follow_redirects=True)
    assert f"already has batch {lot} (created)" in again.get_data(as_text=True)


@pytest.fixture
def v5_app(app, make_user):
    """NK-TRIAL v5 effective (the donor's panel, specimen age and relationships); a clinical coordinator."""
    sops_dir = Path(app.config["SOPS_DIR"])
    (sops_dir / "trial").mkdir()
    shutil.copy(RESOURCE_ROOT / "sops" / "trial" / "NK-TRIAL_v5.yaml", sops_dir / "trial")
    loader, approver = make_user("loader", "qa"), make_user("approver", "qa")
    make_user("clara", "clinical", full_name="Clara Coordinator")
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        version = sops.load_directory(s, sops_dir, loader=s.merge(loader)).loaded[0]
        sops.approve(s, version, site_timezone="UTC", signer=s.merge(approver), password=PASSWORD, username=None,
                     require_username=False)
        s.commit()
    return app


def test_the_donor_relationship_is_chosen_and_a_stale_test_refuses_eligibility_naming_it(v5_app, client, login):
    """Issue [3.7] item 2 on the screens: the registration form offers the configuration's relationships with no
    default (none chosen is refused by the service, nothing stored); the donor page, the list and the refusal of
    the determination name the test whose specimen is too old."""
    from datetime import timedelta

    login("clara")
    form = client.get("/clinical/").get_data(as_text=True)
    assert ('<select id="donor-relationship" name="donor-relationship"><option value="">choose…</option>'
            '<option value="transplant_donor">Original transplant donor</option>') in form  # nothing selected
    assert '<option value="haploidentical">Haploidentical</option>' in form and " selected" not in form
    refused = client.post("/clinical/donors", data={"donor-code": "D-001", "donor-abo_rh": "O-"})
    assert refused.status_code == 400 and ("Choose the donor&#39;s relationship to the subject: one of "
                                           "transplant_donor") in refused.get_data(as_text=True)
    with v5_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Donor)) == 0
    assert client.post("/clinical/donors", data={"donor-code": "D-001", "donor-abo_rh": "O-",
                                                 "donor-relationship": "haploidentical"}).status_code == 302
    with v5_app.app_context():
        donor_id = db.session.scalar(sa.select(Donor.id))
    assert "Haploidentical" in client.get("/clinical/").get_data(as_text=True)

    stale = date.today() - timedelta(days=31)
    panel = {"panel-specimen_date": stale.isoformat()} | {f"panel-result_{n}": "non-reactive" for n in range(9)}
    assert client.post(f"/clinical/donors/{donor_id}/panel", data=panel).status_code == 302
    page = " ".join(client.get(f"/clinical/donors/{donor_id}").get_data(as_text=True).split())
    message = f"HBsAg: specimen of {stale.isoformat()} is 31 days old; the panel needs a specimen at most 30 days old"
    assert "Relationship to the subject</dt><dd>Haploidentical" in page
    assert "The donor cannot be determined eligible yet" in page and message in page
    refused = client.post(f"/clinical/donors/{donor_id}/eligibility",
                          data={"elig-eligible": "eligible", "elig-summary": "screening complete"})
    assert refused.status_code == 400 and message in refused.get_data(as_text=True)
    with v5_app.app_context():
        assert db.session.get(Donor, donor_id).eligibility == "pending"
