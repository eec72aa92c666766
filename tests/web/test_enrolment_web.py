"""The enrolment form with the eligibility screening of NK-TRIAL v5 (issue [3.7] item 1): a row per lab criterion,
a yes/no per exclusion, signed; a refusal names the criterion and keeps the values; the subject page shows the
screening and its signature; the subject beyond the trial's maximum is not offered."""

from __future__ import annotations

import html
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from mfg.config import RESOURCE_ROOT
from mfg.extensions import db
from mfg.models import AuditEntry, Donor, Subject, SubjectScreening
from mfg.services import audit, clinical, sops
from tests.support import PASSWORD, enrolment_form


@pytest.fixture
def trial_app(app, make_user):
    """NK-TRIAL v5 effective, at most 2 subjects (a test copy), an eligible-enough donor D-001."""
    sops_dir = Path(app.config["SOPS_DIR"])
    (sops_dir / "trial").mkdir()
    text = (RESOURCE_ROOT / "sops" / "trial" / "NK-TRIAL_v5.yaml").read_text()
    (sops_dir / "trial" / "NK-TRIAL_v5.yaml").write_text(text.replace("max_subjects: 12 ", "max_subjects: 2 "))
    loader, approver = make_user("loader", "qa"), make_user("approver", "qa")
    clara = make_user("clara", "clinical", full_name="Clara Coordinator")
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        version = sops.load_directory(s, sops_dir, loader=s.merge(loader)).loaded[0]
        sops.approve(s, version, site_timezone="UTC", signer=s.merge(approver), password=PASSWORD, username="approver",
                     require_username=True)
        clinical.register_donor(s, code="D-001", abo_rh="O-", relationship="transplant_donor", user=s.merge(clara))
        s.commit()
    return app


def _data(app, code: str, **changes: str) -> dict[str, str]:
    with app.app_context():
        donor_id = db.session.scalar(sa.select(Donor.id))
        data = enrolment_form(db.session)
    return data | {"subject-code": code, "subject-donor_id": str(donor_id), "subject-weight_kg": "62.4",
                   "subject-measured_on": date.today().isoformat(), "subject-username": "clara",
                   "subject-password": PASSWORD} | changes


def _count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_the_form_asks_every_criterion_refuses_naming_it_and_keeps_the_values(trial_app, client, login):
    login("clara")
    page = client.get("/clinical/").get_data(as_text=True)
    for label in ("Absolute neutrophil count", "ALT", "Creatinine clearance", "LVEF", "Pregnant or lactating?"):
        assert html.escape(label) in page
    assert 'name="subject-lab_alt_uln"' in page and 'name="subject-lab_platelets_uln"' not in page
    assert 'name="subject-exclusion_pregnancy" type="radio" value="no">' in page and " checked>" not in page
    refused = client.post("/clinical/subjects", data=_data(trial_app, "S-01", **{
        "subject-lab_alt_value": "250", "subject-lab_alt_uln": "40", "subject-exclusion_gvhd": ""}))
    text = html.unescape(refused.get_data(as_text=True))
    assert refused.status_code == 400
    assert "ALT 250 U/L is above 3 × ULN (ULN 40 U/L): not eligible" in text
    assert "Grade II-IV GVHD needing immunosuppression? not answered: answer yes or no" in text
    assert 'value="250"' in text and 'value="S-01"' in text and PASSWORD not in text  # kept; password cleared
    assert 'checked id="subject-exclusion_pregnancy-1" name="subject-exclusion_pregnancy" type="radio" value="no"' \
        in text  # the answers given stay chosen
    assert _count(trial_app, Subject) == 0
    with trial_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
            AuditEntry.entity_type == "subject")) == 0
    malformed = client.post("/clinical/subjects", data=_data(trial_app, "S-01", **{"subject-lab_anc_value": "2,5"}))
    assert malformed.status_code == 400 and "is not a number" in html.unescape(malformed.get_data(as_text=True))
    assert _count(trial_app, Subject) == 0


def test_an_eligible_subject_is_enrolled_signed_and_shown_and_the_third_is_not_offered(trial_app, client, login):
    login("clara")
    ok = client.post("/clinical/subjects", data=_data(trial_app, "S-01"))
    assert ok.status_code == 302, html.unescape(ok.get_data(as_text=True))
    assert _count(trial_app, SubjectScreening) == 1
    page = " ".join(html.unescape(client.get(ok.headers["Location"]).get_data(as_text=True)).split())
    assert "Eligibility screening" in page and "Age 54 years, ECOG performance status 1" in page
    assert '<th scope="row">ALT</th> <td>32 U/L</td><td>40 U/L</td><td>' in page
    assert "Approved by Clara Coordinator (clara)" in page and "ALT ≤ 3 × ULN" in page
    # the second subject: the user name is no longer needed (signed in this session)
    second = _data(trial_app, "S-02")
    second.pop("subject-username")
    assert client.post("/clinical/subjects", data=second).status_code == 302
    index = html.unescape(client.get("/clinical/").get_data(as_text=True))
    assert "Enrol a subject" not in index
    assert "the trial enrols at most 2 subjects (escalation.max_subjects); 2 are enrolled: subject refused" in index
    refused = client.post("/clinical/subjects", data=_data(trial_app, "S-03"))
    assert refused.status_code == 400 and "at most 2 subjects" in html.unescape(refused.get_data(as_text=True))
    assert _count(trial_app, Subject) == 2
