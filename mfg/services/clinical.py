"""Subjects and donors (clinical coordinator), chain-of-identity identifiers and DIN allocation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain import donor_eligibility, eligibility, guards, inputs, isbt128
from ..domain.errors import ConflictError, NotFound, ValidationFailed
from ..domain.signing import Meaning
from ..domain.trial_config import DonorEligibility, SubjectEligibility, TrialConfiguration
from ..models import (
    Batch,
    Donor,
    DonorTest,
    ScreeningFinding,
    Signature,
    SignatureInvalidation,
    SopVersion,
    Subject,
    SubjectScreening,
    User,
    utcnow,
)
from . import audit, rows, sequences, signatures, sops, trial

CLINICAL = "clinical"
ELIGIBILITY = ("pending", "eligible", "ineligible")
RESULTS = donor_eligibility.RESULTS
ACCEPTABLE_RESULTS = donor_eligibility.ACCEPTABLE_RESULTS
ABO_RH = ("A+", "A-", "B+", "B-", "AB+", "AB-", "O+", "O-")
# The donor's infectious-disease panel (21 CFR 1271.85 for an allogeneic donor; DOMAIN.md section 2) of trial
# configurations that predate ``donor_eligibility`` (NK-TRIAL v1-v4; from v5 the configuration lists it:
# :func:`donor_panel`), entered in one form (:func:`record_donor_panel`); another test is recorded on its own
# (:func:`record_donor_test`).
DONOR_PANEL = ("HIV-1/2 Ab", "HBsAg", "anti-HBc", "anti-HCV", "HIV/HBV/HCV NAT", "WNV NAT", "HTLV-I/II Ab", "CMV Ab",
               "Syphilis")


def guard_subjects(session: Session | None, user: User) -> list[guards.Refusal]:
    return guards.manage_subjects(guards.person(user))


def _require_clinical(user: User) -> None:
    guards.enforce(guard_subjects(None, user))


def _code(value: str, rule: str) -> str:
    code = inputs.text(rule, value)
    if not code:
        raise ValidationFailed(f"{inputs.rule(rule).label}: enter the code")
    return code


def donor_rules(session: Session) -> DonorEligibility | None:
    """The donor eligibility rules of the effective trial configuration (its ``donor_eligibility``: the panel,
    the specimen's age, the relationships); None when no configuration is effective or the effective one
    predates them (NK-TRIAL v1-v4), which keep the rules of before (:data:`DONOR_PANEL`, any relationship
    unrecorded)."""
    if not session.scalar(sa.select(sa.exists().where(SopVersion.kind == sops.TRIAL_KIND,
                                                      SopVersion.status == "effective"))):
        return None
    return sops.trial_configuration(session).donor_eligibility


def donor_panel(session: Session) -> tuple[str, ...]:
    """The tests of the donor's infectious-disease panel: the effective configuration's, or :data:`DONOR_PANEL`
    under one that lists none."""
    rules = donor_rules(session)
    return tuple(rules.panel) if rules is not None else DONOR_PANEL


def donor_relationships(session: Session) -> list[tuple[str, str]]:
    """The relationships a donor may have to the subject, as (code, label); empty under a configuration that
    records none."""
    rules = donor_rules(session)
    return [(r.code, r.label) for r in rules.relationships] if rules is not None else []


def relationship_label(session: Session, donor: Donor) -> str:
    """The donor's relationship as people read it (the configuration's label, else the code; empty when none)."""
    if not donor.relationship:
        return ""
    return dict(donor_relationships(session)).get(donor.relationship, donor.relationship)


def register_donor(session: Session, *, code: str, abo_rh: str | None, user: User,
                   relationship: str | None = None) -> Donor:
    """Register a donor; under a configuration with ``donor_eligibility`` with the donor's relationship to the
    subject, one of its codes (``donor_eligibility.relationship_problems``). Under one without, no relationship
    is recorded (one given is refused: there is nothing to check it against)."""
    _require_clinical(user)
    code = _code(code, "donor_code")
    abo_rh = (abo_rh or "").strip() or None
    problems = []
    if abo_rh is not None and abo_rh not in ABO_RH:
        problems.append(f"ABO/Rh {abo_rh!r} is not a blood group: one of {', '.join(ABO_RH)}")
    rules = donor_rules(session)
    relationship = (relationship or "").strip() or None
    if rules is not None:
        problems += donor_eligibility.relationship_problems(rules, relationship)
    elif relationship is not None:
        problems.append("The trial configuration in force lists no donor relationships: none can be recorded.")
    if problems:
        raise ValidationFailed(*problems)
    if session.scalar(sa.select(Donor).where(Donor.code == code)):
        raise ConflictError(f"donor {code} is already registered")
    donor = Donor(code=code, abo_rh=abo_rh, eligibility="pending", relationship=relationship)
    session.add(donor)
    audit.flush(session, reason="donor registered")
    return donor


def record_donor_test(session: Session, donor: Donor, *, test: str, result: str, specimen_date: date,
                      user: User) -> DonorTest:
    _require_clinical(user)
    problems = inputs.problems({"test": test})
    problems += inputs.problems_of_day("specimen_date", specimen_date, today=date.today())
    if not (test or "").strip():
        problems.append("Name the test (e.g. HIV-1/2 Ab, HBsAg, anti-HCV, HIV/HBV/HCV NAT).")
    if result not in RESULTS:
        problems.append(f"Result must be one of {', '.join(RESULTS)}.")
    if problems:
        raise ValidationFailed(*problems)
    name = inputs.text("test", test)
    rows.lock(session, donor)  # the same result sent twice (two tabs, two people) is recorded once
    same = next((t for t in donor.tests if (t.test, t.result, t.specimen_date) == (name, result, specimen_date)), None)
    if same is not None:
        raise rows.already_done(session, f"{same.test} {same.result} of the specimen of {specimen_date.isoformat()} "
                                f"was already recorded for donor {donor.code}", user_id=same.recorded_by_id,
                                at=same.recorded_at)
    row = DonorTest(test=name, result=result, specimen_date=specimen_date, recorded_by_id=user.id)
    donor.tests.append(row)  # through the relationship, so the eligibility check sees it at once
    audit.flush(session, reason="donor test result recorded")
    return row


def record_donor_panel(session: Session, donor: Donor, *, results: dict[str, str], specimen_date: date | None,
                       user: User) -> list[DonorTest]:
    """The donor's whole infectious-disease panel (:func:`donor_panel`) from one specimen, in one action: a
    result for every test of the panel (an unanswered test is refused, never taken as negative), every
    problem at once, nothing stored unless all is right."""
    _require_clinical(user)
    panel = donor_panel(session)
    problems = [f"{test}: choose the result (one of {', '.join(RESULTS)})." for test in panel
                if results.get(test) not in RESULTS]
    problems += [f"{test} is not a test of the panel." for test in results if test not in panel]
    if specimen_date is None:
        problems.append("Enter the date the specimen was drawn.")
    else:
        problems += inputs.problems_of_day("specimen_date", specimen_date, today=date.today())
    if problems:
        raise ValidationFailed(*problems)
    assert specimen_date is not None
    return [record_donor_test(session, donor, test=test, result=results[test], specimen_date=specimen_date,
                              user=user) for test in panel]


def eligible_problems(session: Session, donor: Donor, *, on: date | None = None) -> list[str]:
    """Why ``donor`` cannot be determined eligible on day ``on`` (today by default), each problem naming its
    test; empty when it can. Under a configuration with ``donor_eligibility``: the complete panel, acceptable and
    fresh, and a recorded relationship (``domain.donor_eligibility``); under one without, the rule of before
    (some result, every result acceptable). ``determine_eligibility`` enforces it; the donor page shows it."""
    rules = donor_rules(session)
    if rules is None:
        problems = [] if donor.tests else ["A donor cannot be determined eligible without test results."]
        bad = [f"{t.test}: {t.result}" for t in donor.tests if t.result not in ACCEPTABLE_RESULTS]
        if bad:
            problems.append(f"A donor with these results cannot be determined eligible: {', '.join(bad)}")
        return problems
    problems = donor_eligibility.panel_problems(
        rules, [donor_eligibility.TestResult(t.test, t.result, t.specimen_date) for t in donor.tests],
        on=on or date.today())
    if donor_eligibility.relationship_problems(rules, donor.relationship):
        problems.append(f"Donor {donor.code} has no recorded relationship to the subject that the trial "
                        "configuration knows: the residual T-cell limit depends on it.")
    return problems


def determine_eligibility(session: Session, donor: Donor, *, eligible: bool, summary: str, user: User) -> None:
    """Record the donor eligibility determination with its summary of records (21 CFR 1271.50); "eligible" is
    refused while :func:`eligible_problems` finds any, naming every test that blocks it."""
    _require_clinical(user)
    problems = inputs.problems({"summary": summary})
    if not (summary or "").strip():
        problems.append("The determination needs a summary of the records it rests on.")
    if eligible:
        problems += eligible_problems(session, donor)
    if problems:
        raise ValidationFailed(*problems)
    donor.eligibility = "eligible" if eligible else "ineligible"
    donor.eligibility_summary = inputs.text("summary", summary)
    donor.determined_at = utcnow()
    donor.determined_by_id = user.id
    audit.flush(session, reason="donor eligibility determined")


def eligibility_problems(donor: Donor) -> list[str]:
    """Why a collection from ``donor`` may not be taken in (empty when the donor is determined eligible)."""
    if donor.eligibility != "eligible":
        return [f"donor {donor.code} is {donor.eligibility}, not determined eligible: intake refused"]
    return []


def require_eligible(donor: Donor) -> None:
    """Intake of a collection is refused for a donor not determined eligible."""
    problems = eligibility_problems(donor)
    if problems:
        raise ValidationFailed(*problems)




def allocate_coi(session: Session, fin: str) -> isbt128.CoiId:
    """A new chain-of-identity identifier: FIN, year, a sequence that is never reused."""
    year = utcnow().year % 100
    return isbt128.CoiId(fin, year, sequences.next_value(session, f"coi:{fin}:{year:02d}"))


def allocate_din(session: Session, fin: str) -> isbt128.Din:
    """A new DIN: FIN, year, a sequence that is never reused (safe under concurrency on both databases)."""
    year = utcnow().year % 100
    return isbt128.make_din(fin, year, sequences.next_value(session, f"din:{fin}:{year:02d}"))


def enrolled_count(session: Session) -> int:
    """Every subject enrolled so far (what the trial's ``escalation.max_subjects`` caps)."""
    return session.scalar(sa.select(sa.func.count()).select_from(Subject)) or 0


def guard_enrol_subject(session: Session, user: User, *,
                        eligibility_problems: Sequence[str] = ()) -> list[guards.Refusal]:
    """Whether ``user`` may enrol a subject now (the screen asks it without a screening: role and cap)."""
    try:
        config: TrialConfiguration | None = sops.trial_configuration(session)
    except ValidationFailed:
        config = None
    cap = config.escalation.max_subjects if config is not None and config.escalation is not None else None
    return guards.enrol_subject(guards.person(user), enrolled=enrolled_count(session) if cap is not None else 0,
                                max_subjects=cap, eligibility_problems=eligibility_problems)


def _screening_findings(criteria: SubjectEligibility, screening: eligibility.Screening) -> list[ScreeningFinding]:
    findings = [ScreeningFinding(code=c.code, label=c.label, unit=c.unit, value=lab.value, uln=lab.uln,
                                 measured_on=lab.measured_on)
                for c in criteria.labs if (lab := screening.labs.get(c.code)) is not None]
    findings += [ScreeningFinding(code=e.code, label=e.question, answer=screening.exclusions.get(e.code))
                 for e in criteria.exclusions]
    return findings


def enrol_subject(session: Session, *, code: str, donor: Donor, weight_kg: str, measured_on: date, user: User,
                  screening: eligibility.ScreeningEntry | None = None, password: str | None = None,
                  username: str | None = None, require_username: bool = True) -> Subject:
    """Enrol a subject with a new chain-of-identity id. When the effective trial configuration sets
    ``subject_eligibility`` (NK-TRIAL v5 on), the eligibility ``screening`` is required, checked
    (``guards.enrol_subject``: every criterion not met, named; the cap of ``escalation.max_subjects``) and
    stored with every finding, signed "Approved by" by ``user`` with ``password`` (the comment lists the
    criteria checked). Enrolments run one after the other (the configuration version's row lock), so two
    racing for the last place cannot both have it."""
    _require_clinical(user)
    today = date.today()
    code = _code(code, "subject_code")
    weight = inputs.number("weight_kg", weight_kg)
    inputs.day("measured_on", measured_on, today=today)
    version = sops.trial_configuration_version(session)
    config = sops.trial_configuration(session)
    criteria = config.subject_eligibility
    read: eligibility.Screening | None = None
    if criteria is not None:
        if screening is None:
            raise ValidationFailed(f"{config.code} v{config.version} sets subject eligibility: enter the screening "
                                   "(age, ECOG, first treatment date, lab values, exclusions)")
        read, malformed = eligibility.read(criteria, screening, today=today)
        if not password:
            malformed.append("Re-enter your password to sign the enrolment.")
        if malformed:
            raise ValidationFailed(*malformed)
        assert read is not None
    elif screening is not None:
        raise ValidationFailed(f"{config.code} v{config.version} sets no subject eligibility: no screening is "
                               "recorded")
    rows.lock(session, version)  # enrolments one after the other: the count below is the true one
    problems = eligibility.problems(criteria, read, today=today) if criteria is not None and read is not None else []
    guards.enforce(guard_enrol_subject(session, user, eligibility_problems=problems))
    credentials = None
    if criteria is not None:
        credentials = signatures.authenticate(user, password=password or "", username=username,
                                              require_username=require_username)  # before the first write
    if session.scalar(sa.select(Subject).where(Subject.code == code)):
        raise ConflictError(f"subject {code} is already enrolled")
    coi = allocate_coi(session, config.facility_identification_number)
    subject = Subject(code=code, coi=coi.text, donor_id=donor.id, weight_kg=weight, weight_measured_on=measured_on,
                      enrolled_by_id=user.id)
    session.add(subject)
    audit.flush(session, reason="subject enrolled")
    if criteria is not None and read is not None:
        record = SubjectScreening(subject_id=subject.id, trial_config_version_id=version.id,
                                  age_years=read.age_years, ecog=read.ecog,
                                  first_treatment_on=read.first_treatment_on, recorded_by_id=user.id,
                                  findings=_screening_findings(criteria, read))
        session.add(record)
        audit.flush(session, reason="subject eligibility screening recorded")
        signatures.sign(session, signer=user, credentials=credentials, meaning=Meaning.APPROVED, record=record,
                        comment=f"{config.code} v{config.version} {eligibility.criteria_checked(criteria)}")
        audit.flush(session, reason="subject eligibility screening signed")
    return subject


def screening_of(session: Session, subject: Subject) -> SubjectScreening | None:
    """The eligibility screening ``subject`` was enrolled on (None: enrolled under a configuration without
    subject eligibility)."""
    return session.scalar(sa.select(SubjectScreening).where(SubjectScreening.subject_id == subject.id))


def subject_batches(session: Session, subject: Subject) -> list[tuple[str, str]]:
    """Every batch made for ``subject``, as (lot, status), oldest first: the facts of the guards that
    count them (``guards.assign_dose_level``, ``guards.start_product_batch``)."""
    return [(lot, status) for lot, status in session.execute(
        sa.select(Batch.lot, Batch.status).where(Batch.subject_id == subject.id).order_by(Batch.id))]


def batches_of(session: Session, subject: Subject) -> list[Batch]:
    """The batches made for ``subject``, oldest first (the subject page links to each)."""
    return list(session.scalars(sa.select(Batch).where(Batch.subject_id == subject.id).order_by(Batch.id)))


def batches_by_subject(session: Session, subjects: list[Subject]) -> dict[int, list[Batch]]:
    """The batches of each of ``subjects`` (one query), oldest first: the subject list links to them."""
    found: dict[int, list[Batch]] = {subject.id: [] for subject in subjects}
    if found:
        for batch in session.scalars(sa.select(Batch).where(Batch.subject_id.in_(list(found))).order_by(Batch.id)):
            found[cast(int, batch.subject_id)].append(batch)
    return found


def lock_subject(session: Session, subject: Subject) -> None:
    """Reload ``subject`` holding its row until the commit (``rows.lock``), so that a dose assignment and a batch
    start for the same subject run one after the other, the second seeing what the first did."""
    rows.lock(session, subject)


def guard_assign_dose_level(session: Session, user: User, subject: Subject,
                            level: str | None = None) -> list[guards.Refusal]:
    """Assigning ``subject`` a dose level (``level``; None: the level open now, or any level without an
    escalation design): the subject's batches, and the level the latest signed escalation decision opened."""
    opened = trial.open_level(session, excluding=subject)
    if opened is not None and level is None:
        level = opened.level or ""
    return guards.assign_dose_level(guards.person(user), subject_code=subject.code,
                                    batches=subject_batches(session, subject), level=level, escalation=opened)


def assign_dose_level(session: Session, subject: Subject, *, level: str, signer: User, password: str,
                      username: str | None, require_username: bool) -> Subject:
    """Assign the dose level from the effective trial configuration, signed "Approved by". Refused while a
    batch of the subject is open: each batch keeps the dose pinned when it started, and a reassignment
    applies to later batches only. Under an escalation design the level must be the one the latest signed
    escalation decision opened, in a cohort with room (``guards.level_open``): the subject joins that cohort and
    names the decision (``Subject.cohort``, ``Subject.escalation_decision_id``)."""
    lock_subject(session, subject)
    if trial.design(session) is not None:
        trial.lock_trial(session)  # two subjects for a cohort's last place: one after the other
    opened = trial.open_level(session, excluding=subject)
    version = sops.trial_configuration_version(session)
    if subject.dose_level == level and subject.trial_config_version_id == version.id \
            and subject.dose_signature_id is not None \
            and (opened is None or subject.escalation_decision_id == opened.decision_id):
        # the same assignment, sent twice (two tabs, two people)
        signed = session.get(Signature, subject.dose_signature_id)
        raise rows.already_done(session, f"dose level {level} was already assigned to subject {subject.code}",
                                user_id=signed.user_id if signed else None, at=signed.signed_at if signed else None)
    guards.enforce(guard_assign_dose_level(session, signer, subject, level))
    config = sops.trial_configuration(session)
    try:
        dose = config.dose_level(level)
    except KeyError:
        raise ValidationFailed(f"unknown dose level {level!r}; the trial defines "
                               f"{', '.join(d.code for d in config.dose_levels)}") from None
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)  # before the first write
    if subject.dose_signature_id is not None:  # a reassignment: the earlier signed assignment no longer stands
        session.add(SignatureInvalidation(signature_id=subject.dose_signature_id, invalidated_at=utcnow(),
                                          invalidated_by_id=signer.id,
                                          reason=f"dose level reassigned from {subject.dose_level} to {dose.code}"))
    subject.dose_level = dose.code
    subject.dose_cells_per_kg = dose.cells_per_kg
    subject.trial_config_version_id = version.id
    if opened is not None:
        subject.cohort, subject.escalation_decision_id = opened.cohort, opened.decision_id
    audit.flush(session, reason=f"dose level {dose.code} assigned")
    cohort = f", cohort {subject.cohort} ({opened.decision})" if opened is not None else ""
    signature = signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.APPROVED,
                                record=subject, comment=f"dose level {dose.code}: {dose.cells_per_kg} NK cells/kg"
                                                        f"{cohort}")
    subject.dose_signature_id = signature.id
    audit.flush(session, reason=f"dose level {dose.code} assigned")
    return subject


def get_subject(session: Session, subject_id: int) -> Subject:
    subject = session.get(Subject, subject_id)
    if subject is None:
        raise NotFound(f"no subject with id {subject_id}")
    return subject


def get_donor(session: Session, donor_id: int) -> Donor:
    donor = session.get(Donor, donor_id)
    if donor is None:
        raise NotFound(f"no donor with id {donor_id}")
    return donor


def list_subjects(session: Session) -> list[Subject]:
    return list(session.scalars(sa.select(Subject).order_by(Subject.code)))


def list_donors(session: Session) -> list[Donor]:
    return list(session.scalars(sa.select(Donor).order_by(Donor.code)))
