"""Starting a batch: pinned to the effective versions of its master records; a product batch is also
opened for a subject's expected collection, with the collection's DIN, the subject's COI and the subject's
dose (level, cells per kg, weight with its date, the signature that assigned the level), pinned for good."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy.orm import Session

from ..domain import guards
from ..domain.errors import ValidationFailed
from ..domain.trial_config import TrialConfiguration
from ..models import Batch, BatchMasterRecord, SopVersion, Subject, User, utcnow
from . import audit, clinical, sequences, sops, trial


def subject_records(session: Session) -> tuple[str, ...]:
    """The master records made for a subject: the effective trial configuration's ``product_master_records``
    (none without an effective configuration)."""
    try:
        return tuple(sops.trial_configuration(session).product_master_records)
    except ValidationFailed:
        return ()


def guard_start_batch(session: Session, user: User, code: str | None = None) -> list[guards.Refusal]:
    """Starting a stand-alone batch of ``code`` (None: whether this user may start any)."""
    return guards.start_batch(guards.person(user), code=code,
                              subject_records=subject_records(session) if code is not None else ())


def startable_codes(session: Session, user: User) -> list[str]:
    """The effective master records this user may start stand-alone (the work queue's list), each asked of its
    guard."""
    person, records = guards.person(user), subject_records(session)
    return [code for code in sops.effective_codes(session, kind="master_batch_record")
            if not guards.start_batch(person, code=code, subject_records=records)]


def guard_start_product_batch(session: Session, user: User, subject: Subject) -> list[guards.Refusal]:
    try:
        infusions: int | None = sops.trial_configuration(session).infusions_per_subject
    except ValidationFailed:  # no effective trial configuration: start_product_batch refuses it
        infusions = None
    book = trial.ledger(session)
    return guards.start_product_batch(guards.person(user), subject_code=subject.code,
                                      donor_problems=clinical.eligibility_problems(subject.donor),
                                      dose_signed=bool(subject.dose_level and subject.dose_signature_id),
                                      batches=clinical.subject_batches(session, subject),
                                      infusions_per_subject=infusions) + (
        guards.level_closed(subject_code=subject.code, level=subject.dose_level, closed=book.closed)
        if book is not None else [])


def pinned_dose(session: Session, subject: Subject) -> dict[str, Any]:
    """The subject's signed dose as a batch pins it (``Batch`` columns): the level, its cells per kg and
    the trial configuration's wording of it, the weight with its date, the assigning signature and the trial
    configuration version the level was assigned under, and the signed escalation decision that opened the level
    (None under a configuration without an escalation design)."""
    version = session.get(SopVersion, subject.trial_config_version_id)
    assert version is not None  # a signed dose level names its trial configuration version (a foreign key)
    config = sops.definition(version)
    assert isinstance(config, TrialConfiguration)
    assert subject.dose_level is not None  # start_product_batch's guard refuses an unsigned dose level
    return {"dose_level": subject.dose_level, "dose_cells_per_kg": subject.dose_cells_per_kg,
            "dose_label": config.dose_level(subject.dose_level).label or None,
            "weight_kg": subject.weight_kg, "weight_measured_on": subject.weight_measured_on,
            "dose_signature_id": subject.dose_signature_id, "trial_config_version_id": version.id,
            "escalation_decision_id": subject.escalation_decision_id}


def start_batch(session: Session, *, codes: list[str], user: User, lot: str | None = None,
                dose: dict[str, Any] | None = None) -> Batch:
    """Start a batch pinned to the effective version of each master record code, in the order given, and
    to ``dose`` (:func:`pinned_dose`; the database refuses any later change to it). A record made for a subject
    is refused here: :func:`start_product_batch` opens it."""
    guards.enforce(guard_start_batch(session, user))
    for code in codes:
        guards.enforce(guard_start_batch(session, user, code))
    return _start(session, codes=codes, user=user, lot=lot, dose=dose)


def _start(session: Session, *, codes: list[str], user: User, lot: str | None, dose: dict[str, Any] | None) -> Batch:
    versions, problems = [], []
    for code in codes:
        version = sops.effective(session, code)
        if version is None:
            problems.append(f"master record {code} has no effective version")
        versions.append(version)
    if problems or not versions:
        raise ValidationFailed(*(problems or ["name at least one master record"]))
    if lot is None:
        year = utcnow().year
        lot = f"{codes[0]}-{year}-{sequences.next_value(session, f'lot:{codes[0]}:{year}'):04d}"
    batch = Batch(lot=lot, status="created", created_by_id=user.id, **(dose or {}))
    # no problems: every code has an effective version
    batch.master_records = [BatchMasterRecord(position=i, sop_version_id=v.id)
                            for i, v in enumerate(cast(list[SopVersion], versions))]
    session.add(batch)
    audit.flush(session, reason="batch started")
    return batch


def start_product_batch(session: Session, *, subject: Subject, user: User) -> Batch:
    """Open the batch record for a subject's expected collection: pins the effective versions of the master
    records the trial configuration names (``product_master_records``, in order), allocates the
    collection's DIN (the label the collection bag will carry), links the subject's chain-of-identity id and
    pins the subject's signed dose and weight (:func:`pinned_dose`), which every calculation, label and
    record of the batch uses from then on. Refused for a donor not determined eligible, a subject without a
    signed dose level, or a subject with as many batches as the trial allows infusions. At intake the bag's
    DIN and the subject's COI are scanned against this batch."""
    clinical.lock_subject(session, subject)  # two starts, or a start and a reassignment, one after the other
    guards.enforce(guard_start_product_batch(session, user, subject))
    config = sops.trial_configuration(session)
    if not config.product_master_records:
        raise ValidationFailed(f"the trial configuration {config.code} v{config.version} names no master records "
                               "for the product (product_master_records): QA must approve one that does")
    din = clinical.allocate_din(session, config.facility_identification_number)
    batch = _start(session, codes=list(config.product_master_records), user=user, lot=din.text,
                   dose=pinned_dose(session, subject))
    batch.din, batch.subject = din.text, subject
    audit.flush(session, reason=f"batch opened for subject {subject.code}")
    return batch
