"""Enrolment under a trial configuration that sets subject eligibility (issue [3.7] item 1): the screening is
required, checked, stored with every finding and signed; an ineligible or stale value and the subject beyond the
trial's maximum are refused, naming why, with nothing stored."""

from __future__ import annotations

import dataclasses
import threading
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from mfg.config import RESOURCE_ROOT
from mfg.demo.nk_batch import eligible_screening
from mfg.domain.errors import AuthenticationFailed, ValidationFailed
from mfg.extensions import db
from mfg.models import AuditEntry, ScreeningFinding, Signature, Subject, SubjectScreening
from mfg.services import audit, clinical, signatures, sops
from tests.support import PASSWORD

TRIAL_V5 = RESOURCE_ROOT / "sops" / "trial" / "NK-TRIAL_v5.yaml"


@pytest.fixture
def trial(session, make_user, sops_dir):
    """NK-TRIAL v5, effective, with at most 2 subjects (escalation.max_subjects, a test copy); a clinical
    coordinator and a donor."""
    (sops_dir / "trial").mkdir()
    text = TRIAL_V5.read_text()
    assert "max_subjects: 12 " in text
    (sops_dir / "trial" / TRIAL_V5.name).write_text(text.replace("max_subjects: 12 ", "max_subjects: 2 "))
    loader = session.merge(make_user("loader", "qa"))
    approver = session.merge(make_user("approver", "qa"))
    clara = session.merge(make_user("clara", "clinical", full_name="Clara Coordinator"))
    version = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    sops.approve(session, version, site_timezone="UTC",
                 signer=approver, password=PASSWORD, username="approver", require_username=True)
    donor = clinical.register_donor(session, code="D-001", abo_rh="A+", relationship="transplant_donor", user=clara)
    session.commit()
    criteria = sops.trial_configuration(session).subject_eligibility
    assert criteria is not None
    return {"clara": clara, "donor": donor, "criteria": criteria, "version": version}


def _enrol(session, trial, code="S-01", screening=None, password=PASSWORD):
    return clinical.enrol_subject(
        session, code=code, donor=trial["donor"], weight_kg="62.4", measured_on=date.today(), user=trial["clara"],
        screening=screening or eligible_screening(trial["criteria"], date.today()), password=password,
        username="clara", require_username=True)


def _stored(session) -> tuple[int, int, int]:
    subjects = session.scalar(sa.select(sa.func.count()).select_from(Subject))
    screenings = session.scalar(sa.select(sa.func.count()).select_from(SubjectScreening))
    entries = session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
        AuditEntry.entity_type.in_(["subject", "subject_screening", "screening_finding"])))
    return subjects, screenings, entries


def _with_lab(trial, code, value, uln="", measured_on=None):
    screening = eligible_screening(trial["criteria"], date.today())
    labs = dict(screening.labs)
    labs[code] = (value, uln, measured_on or date.today())
    return dataclasses.replace(screening, labs=labs)


def test_the_screening_is_stored_with_every_finding_and_signed(session, trial):
    subject = _enrol(session, trial)
    session.commit()
    session.expire_all()
    screening = clinical.screening_of(session, subject)
    assert screening is not None and screening.trial_config_version_id == trial["version"].id
    assert (screening.age_years, screening.ecog) == (54, 1)
    criteria = trial["criteria"]
    assert [f.code for f in screening.findings] == [c.code for c in criteria.labs] + [
        e.code for e in criteria.exclusions]
    alt = next(f for f in screening.findings if f.code == "alt")
    assert (alt.label, alt.unit, float(alt.value), float(alt.uln)) == ("ALT", "U/L", 32.0, 40.0)
    assert alt.measured_on == date.today() - timedelta(days=1)
    pregnancy = next(f for f in screening.findings if f.code == "pregnancy")
    assert (pregnancy.label, pregnancy.answer) == ("Pregnant or lactating?", False)
    [signature] = signatures.for_record(session, screening)
    assert signature.meaning == "approved" and signature.user_id == trial["clara"].id
    assert "ALT ≤ 3 × ULN" in signature.comment and "Pregnant or lactating? no" in signature.comment
    content = screening.signed_content()
    assert {"code": "alt", "value": "32", "uln": "40", "unit": "U/L",
            "measured_on": (date.today() - timedelta(days=1)).isoformat(), "answer": None} in content["findings"]
    assert signatures.check_all(session)[1] == []  # the signature still matches, read back from the database
    assert _stored(session)[2] >= 1 + len(screening.findings) + 1  # subject, findings, screening audited


def test_an_ineligible_value_is_refused_naming_the_criterion_and_nothing_is_stored(session, trial):
    before = _stored(session)
    with pytest.raises(ValidationFailed) as refused:
        _enrol(session, trial, screening=_with_lab(trial, "alt", "250", "40"))
    assert refused.value.problems == ["ALT 250 U/L is above 3 × ULN (ULN 40 U/L): not eligible"]
    session.rollback()
    assert _stored(session) == before == (0, 0, 0)


def test_a_stale_lab_value_is_refused(session, trial):
    screening = _with_lab(trial, "platelets", "180", measured_on=date.today() - timedelta(days=3))
    with pytest.raises(ValidationFailed) as refused:
        _enrol(session, trial, screening=screening)
    first = (date.today() + timedelta(days=1)).isoformat()
    assert refused.value.problems == [
        f"Platelets measured {(date.today() - timedelta(days=3)).isoformat()}, more than 3 days before the first "
        f"treatment on {first}: stale"]
    session.rollback()
    assert _stored(session) == (0, 0, 0)


def test_malformed_input_an_unanswered_exclusion_and_a_wrong_password_store_nothing(session, trial):
    with pytest.raises(ValidationFailed, match="'2,5' is not a number"):
        _enrol(session, trial, screening=_with_lab(trial, "anc", "2,5"))
    session.rollback()
    screening = eligible_screening(trial["criteria"], date.today())
    unanswered = dataclasses.replace(screening, exclusions={**screening.exclusions, "gvhd": None})
    with pytest.raises(ValidationFailed, match="GVHD needing immunosuppression\\? not answered"):
        _enrol(session, trial, screening=unanswered)
    session.rollback()
    with pytest.raises(ValidationFailed, match="Re-enter your password"):
        _enrol(session, trial, password="")
    session.rollback()
    with pytest.raises(AuthenticationFailed):
        _enrol(session, trial, password="wrong")
    session.rollback()
    assert _stored(session)[:2] == (0, 0)
    with pytest.raises(ValidationFailed, match="enter the screening"):
        clinical.enrol_subject(session, code="S-01", donor=trial["donor"], weight_kg="62.4",
                               measured_on=date.today(), user=trial["clara"])


def test_the_subject_beyond_the_maximum_is_refused(session, trial):
    _enrol(session, trial, code="S-01")
    _enrol(session, trial, code="S-02")
    session.commit()
    assert clinical.guard_enrol_subject(session, trial["clara"])  # the screen no longer offers it
    with pytest.raises(ValidationFailed) as refused:
        _enrol(session, trial, code="S-03")
    assert refused.value.problems == [
        "the trial enrols at most 2 subjects (escalation.max_subjects); 2 are enrolled: subject refused"]
    session.rollback()
    assert _stored(session)[:2] == (2, 2)
    assert session.scalar(sa.select(sa.func.count()).select_from(Signature)) >= 2
    assert session.scalar(sa.select(sa.func.count()).select_from(ScreeningFinding)) == 2 * (
        len(trial["criteria"].labs) + len(trial["criteria"].exclusions))


def test_two_enrolments_racing_for_the_last_place_give_it_to_one(app, session, trial):
    _enrol(session, trial, code="S-01")
    session.commit()
    outcomes: list[object] = []
    barrier = threading.Barrier(2)

    def worker(code: str) -> None:
        with app.app_context():
            s = db.new_session()
            audit.set_actor(s, name="clara")
            try:
                barrier.wait(timeout=30)
                clara, donor = s.merge(trial["clara"]), s.merge(trial["donor"])
                clinical.enrol_subject(s, code=code, donor=donor, weight_kg="70", measured_on=date.today(),
                                       user=clara, screening=eligible_screening(trial["criteria"], date.today()),
                                       password=PASSWORD, username="clara", require_username=True)
                s.commit()
                outcomes.append(code)
            except Exception as exc:  # noqa: BLE001 - reported below
                s.rollback()
                outcomes.append(exc)
            finally:
                s.close()

    threads = [threading.Thread(target=worker, args=(code,)) for code in ("S-02", "S-03")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == 2
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], ValidationFailed), outcomes
    assert "at most 2 subjects" in str(refused[0].problems)
    session.expire_all()
    assert session.scalar(sa.select(sa.func.count()).select_from(Subject)) == 2
