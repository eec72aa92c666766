"""The cohort ledger (issue [3.7] item 4): only a signed escalation decision opens a dose level; dose planning
refuses any other level and a full cohort; DLT events make subjects evaluable; the ledger's recommendation; a
closed level starts no batch and no decision reopens it; assigned against achieved (item 5). Both databases."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from mfg.demo import nk_batch as demo_nk
from mfg.domain import dose
from mfg.domain.errors import AlreadyDone, ValidationFailed
from mfg.models import AuditEntry, CustodyEvent, EscalationDecision, Signature, StepExecution, Subject, utcnow
from mfg.services import audit, bags, clinical, starting, trial
from tests.support import PASSWORD, assert_audit_intact

from .test_demo_nk import nk_demo  # noqa: F401 - the fixture


def _sign(user):
    return {"signer": user, "password": PASSWORD, "username": user.username, "require_username": True}


def _based_on(session):
    decisions = trial.signed_decisions(session)
    return decisions[-1][0].id if decisions else None


def _decide(session, clara, level, reason=""):
    return trial.decide(session, level=level, reason=reason, based_on=_based_on(session), **_sign(clara))


def _subject(session, clara, code, level=None):
    """An enrolled subject (the demo's eligible donor), assigned ``level`` when given."""
    subject = demo_nk.seed_demo_subject(session, clara, PASSWORD, code=code, dose_level=None)
    if level is not None:
        clinical.assign_dose_level(session, subject, level=level, **_sign(clara))
    return subject


def _infuse(session, subject, olivia, *, days_ago, nk_cells=187_000_000, weight_kg=None):
    """The subject's batch, opened and infused ``days_ago``: a bag and the bedside record (its time is what the
    ledger reads; the two-person check itself is tests/web/test_custody_web.py's)."""
    batch = starting.start_product_batch(session, subject=subject, user=olivia)
    execution = StepExecution(batch_id=batch.id, sop_version_id=batch.master_records[-1].sop_version_id,
                              stage_id="formulation", step_id="bag_preparation", instance=1,
                              definition_sha256="0" * 64, status="complete", performed_by_id=olivia.id,
                              performed_at=utcnow())
    session.add(execution)
    session.flush()
    [bag] = bags.create(session, batch, execution, [dose.Bag(
        index=1, volume_ml=Decimal("13.4"), nk_cells=nk_cells, viable_cells=nk_cells + 14_000_000,
        expires_at=utcnow() + timedelta(hours=48))])
    batch.status = "released"
    session.flush()
    session.add(CustodyEvent(batch_id=batch.id, kind="bedside", scanned_din=batch.din, scanned_coi=subject.coi,
                             bag_id=bag.id, performed_by_id=olivia.id, verified_by_id=olivia.id,
                             occurred_at=utcnow() - timedelta(days=days_ago)))
    audit.flush(session, reason="test: infused")
    return batch


@pytest.fixture
def book(nk_demo, session):  # noqa: F811
    audit.set_actor(session, nk_demo["clara"])
    return nk_demo


def test_no_level_is_open_before_the_first_signed_decision_and_planning_refuses_any_other(book, session):
    clara = book["clara"]
    subject = _subject(session, clara, "S-01")
    with pytest.raises(ValidationFailed, match="no dose level is open: no escalation decision has been signed"):
        clinical.assign_dose_level(session, subject, level="DL1", **_sign(clara))
    assert trial.ledger(session).recommendation.level == "DL1"  # the configuration's start level
    first = _decide(session, clara, "DL1")
    assert (first.action, first.level, first.recommendation) == ("start", "DL1", "start")
    with pytest.raises(ValidationFailed) as refused:
        clinical.assign_dose_level(session, subject, level="DL2", **_sign(clara))
    assert f"dose level DL2 is not open: escalation decision {first.id} (DL1, Approved by" in refused.value.problems[0]
    clinical.assign_dose_level(session, subject, level="DL1", **_sign(clara))
    assert (subject.cohort, subject.escalation_decision_id) == (1, first.id)
    batch = starting.start_product_batch(session, subject=subject, user=book["olivia"])
    assert batch.escalation_decision_id == first.id  # pinned with the dose
    session.commit()
    assert_audit_intact(session)


def test_a_decision_without_a_signature_opens_nothing(book, session):
    clara = book["clara"]
    first = _decide(session, clara, "DL1")
    version_id = first.trial_config_version_id
    session.add(EscalationDecision(trial_config_version_id=version_id, from_level="DL1", recommendation="wait",
                                   recommended_level="DL1", action="escalate", level="DL2", reason="unsigned",
                                   ledger="no subject assigned", decided_by_id=clara.id))
    audit.flush(session, reason="test: a decision row without its signature")
    opened = trial.open_level(session)
    assert (opened.level, opened.decision_id) == ("DL1", first.id)
    subject = _subject(session, clara, "S-01")
    with pytest.raises(ValidationFailed, match="dose level DL2 is not open"):
        clinical.assign_dose_level(session, subject, level="DL2", **_sign(clara))


def test_a_cohort_takes_its_size_and_the_next_opens_with_the_next_decision(book, session):
    clara = book["clara"]
    _decide(session, clara, "DL1")
    for n in range(1, 4):
        _subject(session, clara, f"S-0{n}", "DL1")
    fourth = _subject(session, clara, "S-04")
    with pytest.raises(ValidationFailed, match=r"cohort 1 at DL1 is full \(3 of 3\)"):
        clinical.assign_dose_level(session, fourth, level="DL1", **_sign(clara))
    # the rule waits (no subject evaluable yet): staying at DL1 is the recommendation, a new cohort opens
    assert trial.ledger(session).recommendation.action == "wait"
    second = _decide(session, clara, "DL1")
    clinical.assign_dose_level(session, fourth, level="DL1", **_sign(clara))
    assert (fourth.cohort, fourth.escalation_decision_id, second.action) == (2, second.id, "stay")


def test_decisions_never_skip_a_level_and_a_departure_from_the_rule_needs_a_reason(book, session):
    clara = book["clara"]
    with pytest.raises(ValidationFailed, match="DL2 skips a level: at most DL1"):
        _decide(session, clara, "DL2", reason="go faster")
    _decide(session, clara, "DL1")
    with pytest.raises(ValidationFailed, match=r"differs from the recommendation \(DL1\): give the reason"):
        _decide(session, clara, "DL2")
    with pytest.raises(ValidationFailed, match="DL3 skips a level"):
        _decide(session, clara, "DL3", reason="go faster")
    escalated = _decide(session, clara, "DL2", reason="safety review: DL1 data from the pilot")
    assert (escalated.action, escalated.recommendation, escalated.reason) == (
        "escalate", "wait", "safety review: DL1 data from the pilot")
    [signature] = session.scalars(sa.select(Signature).where(Signature.record_type == "escalation_decision",
                                                             Signature.record_id == str(escalated.id)))
    assert signature.meaning == "approved" and json.loads(signature.content)["reason"] == escalated.reason


def test_a_decision_made_on_a_ledger_another_decision_has_changed_is_refused(book, session):
    clara = book["clara"]
    _decide(session, clara, "DL1")
    with pytest.raises(AlreadyDone, match="was signed after the ledger you decided on was shown"):
        trial.decide(session, level="DL1", reason="", based_on=None, **_sign(clara))


def test_the_ledger_counts_evaluable_subjects_and_recommends_by_the_rule(book, session):
    clara, olivia = book["clara"], book["olivia"]
    _decide(session, clara, "DL1")
    subjects = [_subject(session, clara, f"S-0{n}", "DL1") for n in range(1, 4)]
    _infuse(session, subjects[0], olivia, days_ago=40)
    _infuse(session, subjects[1], olivia, days_ago=31)
    _infuse(session, subjects[2], olivia, days_ago=5)  # window open: not yet evaluable, never DLT-free
    ledger = trial.ledger(session)
    assert ledger.counts["DL1"] == trial.escalation.LevelCounts(2, 0, 1)
    assert ledger.recommendation.action == "wait"
    row = next(r for r in ledger.rows if r.subject.code == "S-03")
    assert row.status == "in window" and row.days_left == 25
    # a DLT makes the subject evaluable at once: 1 of 3 expands the level (3+3)
    with pytest.raises(ValidationFailed, match="before subject S-03's infusion"):
        trial.record_dlt(session, subjects[2], term="Febrile neutropenia", grade=3, attribution="possible",
                         onset_on=date.today() - timedelta(days=6), is_dlt=True, comment="", **_sign(clara))
    event = trial.record_dlt(session, subjects[2], term="Cytokine release syndrome", grade=3,
                             attribution="probable", onset_on=date.today() - timedelta(days=2), is_dlt=True,
                             comment="", **_sign(clara))
    assert trial.signatures.for_record(session, event)[0].meaning == "performed"
    ledger = trial.ledger(session)
    assert ledger.counts["DL1"] == trial.escalation.LevelCounts(3, 1, 0)
    assert (ledger.recommendation.action, ledger.recommendation.level) == ("expand", "DL1")
    session.commit()
    assert_audit_intact(session)


def test_an_event_of_a_subject_not_infused_is_refused(book, session):
    clara = book["clara"]
    _decide(session, clara, "DL1")
    subject = _subject(session, clara, "S-01", "DL1")
    with pytest.raises(ValidationFailed, match="has no infusion recorded at the bedside"):
        trial.record_dlt(session, subject, term="Nausea", grade=1, attribution="unlikely", onset_on=date.today(),
                         is_dlt=False, comment="", **_sign(clara))
    assert not session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
        AuditEntry.entity_type == "dlt_event"))


def test_a_level_with_two_dlts_is_closed_to_planning_to_batches_and_to_decisions(book, session):
    clara, olivia = book["clara"], book["olivia"]
    _decide(session, clara, "DL1")
    for n in range(1, 4):
        _infuse(session, _subject(session, clara, f"S-0{n}", "DL1"), olivia, days_ago=35)
    ledger = trial.ledger(session)
    assert (ledger.recommendation.action, ledger.recommendation.level) == ("escalate", "DL2")
    _decide(session, clara, "DL2")
    at_two = [_subject(session, clara, f"S-1{n}", "DL2") for n in range(1, 4)]
    for subject in at_two[:2]:
        _infuse(session, subject, olivia, days_ago=10)
        trial.record_dlt(session, subject, term="Hypotension", grade=4, attribution="probable",
                         onset_on=date.today() - timedelta(days=9), is_dlt=True, comment="", **_sign(clara))
    ledger = trial.ledger(session)
    assert ledger.closed == ["DL2", "DL3", "DL4"]
    assert (ledger.recommendation.action, ledger.recommendation.level) == ("MTD exceeded", "DL1")
    with pytest.raises(ValidationFailed, match="dose level DL2 of subject S-13 is closed"):
        starting.start_product_batch(session, subject=at_two[2], user=olivia)
    with pytest.raises(ValidationFailed, match="DL2 is closed: the cohort ledger shows the MTD exceeded at DL2"):
        _decide(session, clara, "DL2", reason="the review disagrees")
    back = _decide(session, clara, "DL1")
    assert (back.action, back.from_level, back.ledger) == (
        "de-escalate", "DL2", "DL1: 3 evaluable (0 with a DLT), 0 not yet evaluable; DL2: 2 evaluable (2 with a "
                              "DLT), 1 not yet evaluable; open: DL2; closed: DL2, DL3, DL4; 6 subjects")


def test_achieved_against_assigned_is_flagged_outside_the_tolerance(book, session):
    clara, olivia = book["clara"], book["olivia"]
    _decide(session, clara, "DL1")
    on = _subject(session, clara, "S-01", "DL1")  # 62.4 kg x 1e6/kg = 62.4e6 NK cells assigned
    off = _subject(session, clara, "S-02", "DL1")
    _infuse(session, on, olivia, days_ago=1, nk_cells=62_400_000)
    _infuse(session, off, olivia, days_ago=1, nk_cells=90_000_000)  # 44 % above
    rows = {r.subject.code: r for r in trial.ledger(session).rows}
    assert rows["S-01"].achieved_nk_per_kg == Decimal(1_000_000) and rows["S-01"].flags == []
    assert rows["S-02"].assigned_per_kg == 1_000_000
    assert rows["S-02"].flags == ["achieved NK dose 44 % from the assigned level (tolerance 20 %)"]


def test_a_subject_reassigned_keeps_one_place(book, session):
    clara = book["clara"]
    _decide(session, clara, "DL1")
    subject = _subject(session, clara, "S-01", "DL1")
    with pytest.raises(AlreadyDone):
        clinical.assign_dose_level(session, subject, level="DL1", **_sign(clara))
    assert session.scalar(sa.select(sa.func.count()).select_from(Subject).where(Subject.cohort == 1)) == 1


def test_a_boin_design_in_a_new_configuration_version_drives_the_recommendation(book, session, sops_dir, make_user):
    """The escalation design is the trial configuration's: version 6 with BOIN (target 0.25), approved, makes the
    ledger recommend by BOIN's boundaries (λe 0.197, λd 0.298): 1 DLT among 3 evaluable (0.333) de-escalates,
    where 3+3 would expand."""
    from mfg.services import sops

    v5 = (sops_dir / "trial" / "NK-TRIAL_v5.yaml").read_text()
    boin = v5.replace("version: 5\n", "version: 6\n").replace('rule: "3+3"', 'rule: "boin"\n  target_dlt_rate: 0.25')
    (sops_dir / "trial" / "NK-TRIAL_v6.yaml").write_text(boin)
    lou, quinn = make_user("lou", "qa"), make_user("quinn", "qa")  # before the session writes (SQLite's one writer)
    [version] = sops.load_directory(session, sops_dir, loader=session.merge(lou)).loaded
    sops.approve(session, version, site_timezone="UTC", signer=session.merge(quinn),
                 password=PASSWORD, username=None, require_username=False)
    clara, olivia = book["clara"], book["olivia"]
    _decide(session, clara, "DL1")
    _decide(session, clara, "DL2", reason="test: start the BOIN part at DL2")
    subjects = [_subject(session, clara, f"S-0{n}", "DL2") for n in range(1, 4)]
    for subject in subjects:
        _infuse(session, subject, olivia, days_ago=35)
    trial.record_dlt(session, subjects[0], term="Hypoxia", grade=3, attribution="possible",
                     onset_on=date.today() - timedelta(days=30), is_dlt=True, comment="", **_sign(clara))
    ledger = trial.ledger(session)
    assert (ledger.design.rule, ledger.design.target_dlt_rate) == ("boin", 0.25)
    assert ledger.counts["DL2"] == trial.escalation.LevelCounts(3, 1, 0)
    assert (ledger.recommendation.action, ledger.recommendation.level) == ("de-escalate", "DL1")
