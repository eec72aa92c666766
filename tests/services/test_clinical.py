"""Subjects and donors: eligibility, enrolment with a chain-of-identity id, signed dose level, DINs."""

from __future__ import annotations

import shutil
import threading
from datetime import date, timedelta
from decimal import Decimal

import pytest

from mfg.config import RESOURCE_ROOT
from mfg.domain import isbt128
from mfg.domain.errors import AuthenticationFailed, PermissionDenied, ValidationFailed
from mfg.extensions import db
from mfg.models import SignatureInvalidation
from mfg.services import audit, clinical, signatures, sops
from tests.support import PASSWORD

TRIAL = RESOURCE_ROOT / "sops" / "trial" / "NK-TRIAL_v1.yaml"


@pytest.fixture
def trial(session, make_user, sops_dir):
    """The demo trial configuration, effective; a clinical coordinator and an eligible donor."""
    (sops_dir / "trial").mkdir()
    shutil.copy(TRIAL, sops_dir / "trial" / TRIAL.name)
    loader = session.merge(make_user("loader", "qa"))
    approver = session.merge(make_user("approver", "qa"))
    clara = session.merge(make_user("clara", "clinical", full_name="Clara Coordinator"))
    version = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    sops.approve(session, version, site_timezone="UTC",
                 signer=approver, password=PASSWORD, username="approver", require_username=True)
    donor = clinical.register_donor(session, code="D-001", abo_rh="A+", user=clara)
    for test in ("HIV-1/2 Ab", "HBsAg", "anti-HCV"):
        clinical.record_donor_test(session, donor, test=test, result="non-reactive",
                                   specimen_date=date.today() - timedelta(days=3), user=clara)
    session.commit()
    return {"clara": clara, "donor": donor}


def test_eligibility_needs_results_and_a_summary_and_intake_requires_it(session, trial):
    clara, donor = trial["clara"], trial["donor"]
    with pytest.raises(ValidationFailed, match="intake refused"):
        clinical.require_eligible(donor)
    with pytest.raises(ValidationFailed, match="summary"):
        clinical.determine_eligibility(session, donor, eligible=True, summary="", user=clara)
    clinical.record_donor_test(session, donor, test="WNV NAT", result="reactive",
                               specimen_date=date.today(), user=clara)
    with pytest.raises(ValidationFailed, match="WNV NAT: reactive"):
        clinical.determine_eligibility(session, donor, eligible=True, summary="screening complete", user=clara)
    session.rollback()
    clinical.determine_eligibility(session, donor, eligible=True, summary="screening and testing complete",
                                   user=clara)
    session.commit()
    clinical.require_eligible(donor)
    assert donor.determined_by_id == clara.id


def test_enrolment_gives_a_valid_coi_and_refuses_bad_input(session, trial):
    clara, donor = trial["clara"], trial["donor"]
    with pytest.raises(ValidationFailed, match="Weight"):
        clinical.enrol_subject(session, code="S-01", donor=donor, weight_kg="62,4", measured_on=date.today(),
                               user=clara)
    subject = clinical.enrol_subject(session, code="S-01", donor=donor, weight_kg="62.4",
                                     measured_on=date.today(), user=clara)
    other = clinical.enrol_subject(session, code="S-02", donor=donor, weight_kg="70", measured_on=date.today(),
                                   user=clara)
    session.commit()
    assert subject.weight_kg == Decimal("62.4")
    coi = isbt128.parse_coi("&/" + subject.coi)
    assert coi.fin == "X9999" and coi.text == subject.coi and other.coi != subject.coi


def test_dose_level_is_signed_and_a_reassignment_invalidates_the_earlier_signature(session, trial, make_user):
    clara, donor = trial["clara"], trial["donor"]
    subject = clinical.enrol_subject(session, code="S-01", donor=donor, weight_kg="62.4",
                                     measured_on=date.today(), user=clara)
    session.commit()
    with pytest.raises(ValidationFailed, match="unknown dose level 'DL9'"):
        clinical.assign_dose_level(session, subject, level="DL9", signer=clara, password=PASSWORD,
                                   username="clara", require_username=True)
    session.rollback()
    with pytest.raises(AuthenticationFailed):
        clinical.assign_dose_level(session, subject, level="DL2", signer=clara, password="wrong-password",
                                   username="clara", require_username=True)
    session.rollback()
    operator = session.merge(make_user("olivia", "operator"))  # nothing pending in this session here
    with pytest.raises(PermissionDenied):
        clinical.assign_dose_level(session, subject, level="DL2", signer=operator, password=PASSWORD,
                                   username="olivia", require_username=True)
    session.rollback()
    clinical.assign_dose_level(session, subject, level="DL2", signer=clara, password=PASSWORD, username="clara",
                               require_username=True)
    session.commit()
    assert (subject.dose_level, subject.dose_cells_per_kg) == ("DL2", 3_000_000)
    first = subject.dose_signature_id
    session.expire_all()  # read back from the database: its numeric form must hash the same
    assert signatures.check_all(session)[1] == []
    clinical.assign_dose_level(session, subject, level="DL1", signer=clara, password=PASSWORD, username=None,
                               require_username=False)
    session.commit()
    assert session.get(SignatureInvalidation, first) is not None
    assert signatures.check_all(session)[1] == []


def test_din_allocation_is_unique_under_concurrency(app, trial):
    found: list[str] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(4)

    def worker():
        try:
            with app.app_context():
                s = db.new_session()
                audit.set_actor(s, name="thread")
                barrier.wait(timeout=30)
                for _ in range(5):
                    found.append(clinical.allocate_din(s, "X9999").text)
                    s.commit()
                s.close()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(found) == 20 and len(set(found)) == 20
    sequences = sorted(int(text[-6:]) for text in found)
    assert sequences == list(range(1, 21))  # none skipped, none reused
    for text in found:
        din = isbt128.din_from_text(text)
        assert isbt128.parse_din_keyboard(din.keyboard) == din


def test_a_signed_dose_still_matches_when_read_back_from_the_database(session, trial):
    """Decimal weights come back as 62.40 from PostgreSQL and 62.4 from SQLite: the signed content
    must not depend on which form was in memory when the signature was made."""
    subject = clinical.enrol_subject(session, code="S-03", donor=trial["donor"], weight_kg="62.4",
                                     measured_on=date.today(), user=trial["clara"])
    clinical.assign_dose_level(session, subject, level="DL2", signer=trial["clara"], password=PASSWORD,
                               username="clara", require_username=True)
    session.commit()
    session.expire_all()
    assert signatures.check_all(session)[1] == []


def test_abo_rh_is_one_of_the_blood_groups_and_the_panel_needs_every_result(session, trial):
    """Issue 17 item 9: the service refuses an ABO/Rh that is not a blood group ("banana"), and the panel with
    an unanswered test (never taken as negative), storing nothing."""
    clara = trial["clara"]
    with pytest.raises(ValidationFailed, match="'banana' is not a blood group"):
        clinical.register_donor(session, code="D-002", abo_rh="banana", user=clara)
    session.rollback()
    donor = clinical.register_donor(session, code="D-002", abo_rh="O-", user=clara)
    answers = {test: "negative" for test in clinical.DONOR_PANEL}
    drawn = date.today() - timedelta(days=2)
    with pytest.raises(ValidationFailed) as refused:
        clinical.record_donor_panel(session, donor, results={**answers, "HBsAg": ""}, specimen_date=None, user=clara)
    assert refused.value.problems == ["HBsAg: choose the result (one of negative, non-reactive, reactive, positive, "
                                      "indeterminate).", "Enter the date the specimen was drawn."]
    assert donor.tests == []
    recorded = clinical.record_donor_panel(session, donor, results=answers, specimen_date=drawn, user=clara)
    assert [t.test for t in recorded] == list(clinical.DONOR_PANEL) and len(donor.tests) == 9
