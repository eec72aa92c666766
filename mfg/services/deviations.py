"""Deviations: every way one opens, and QA's investigation and signed closure.

One function opens a deviation (:func:`open_deviation`); :func:`out_of_limit` is the rule "an out-of-limit
value opens a deviation", used wherever a value is stored (performed, corrected, recalculated);
:func:`record_identity_mismatch` is the record side of the identity hard stop (the unit of work calls it
after rolling the refused action back). QA classifies and investigates an open deviation and closes it
with an e-signature bound to its findings.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from ..domain import guards, inputs, words
from ..domain.errors import ConflictError, IdentityMismatch, ItemRefused, NotFound, ValidationFailed
from ..domain.runtime_names import runtime_words
from ..domain.signing import Meaning
from ..domain.status import TransitionTable
from ..models import Batch, Deviation, StepExecution, User, utcnow
from . import audit, batches, rows, sequences, signatures

CLASSIFICATIONS = guards.CLASSIFICATIONS
DEVIATION_STATUS = TransitionTable("A deviation", {"open": {"closed": "close"}, "closed": {}})


def open_deviation(session: Session, batch: Batch, execution: StepExecution | None, origin: str,
                   description: str, user: User) -> Deviation:
    """Open a deviation on ``batch`` (at ``execution``, if any), numbered DEV-<year>-<n>."""
    year = utcnow().year
    number = sequences.next_value(session, f"deviation:{year}")
    deviation = Deviation(number=f"DEV-{year}-{number:04d}", batch_id=batch.id,
                          execution_id=execution.id if execution else None,
                          step_id=execution.step_id if execution else None, origin=origin,
                          description=description, status="open", opened_by_id=user.id)
    session.add(deviation)
    return deviation


def out_of_limit(session: Session, batch: Batch, execution: StepExecution, what: str, problems: list[str],
                 user: User) -> Deviation | None:
    """The rule: a value stored outside its limits opens a deviation (``what`` names the step and how the
    value came: "<step>", "<step> (corrected)", "<step> (recalculated)"). None when within limits."""
    if not problems:
        return None
    return open_deviation(session, batch, execution, "out_of_limit", f"{what}: {'; '.join(problems)}", user)


def _where(batch: Batch, step_id: str) -> str:
    """Where a stop happened, in the master record's words: the step's title (or the hand-off, the bedside)."""
    title = words.step_title(step_id, batches.records(batch))
    return f"step '{title}'" if title and title != step_id else f"the {words.plain(step_id)}"


def record_identity_mismatch(session: Session, mismatch: IdentityMismatch, user: User) -> Deviation:
    """After the refused action was rolled back: the audit entry and the deviation of an identity stop."""
    batch = batches.get(session, mismatch.batch_id)
    audit.record_event(session, "identity.mismatch", user=user, entity_type="batch", entity_id=batch.id,
                       details={"step": mismatch.step_id, "field": mismatch.label,
                                "expected": mismatch.expected_name, "scanned": mismatch.scanned[:200]},
                       reason="identity check failed: hard stop")
    deviation = open_deviation(session, batch, None, "identity",
                               f"Identity mismatch at {_where(batch, mismatch.step_id)} ({mismatch.label}): scanned "
                               f"'{mismatch.scanned[:60]}' does not match the batch's "
                               f"{runtime_words(mismatch.expected_name)}",
                               user)
    deviation.step_id = mismatch.step_id
    audit.flush(session, reason="identity check failed: hard stop")
    return deviation


def record_refused_item(session: Session, refused: ItemRefused, user: User) -> Deviation:
    """After the refused step was rolled back: the audit entry and the deviation of an attempt to use
    equipment or a material lot that exists but may not be used (expired, quarantined, of another type...)."""
    batch = batches.get(session, refused.batch_id)
    audit.record_event(session, "item.refused", user=user, entity_type="batch", entity_id=batch.id,
                       details={"step": refused.step_id, "refused": [p[:200] for p in refused.refused]},
                       reason="unusable equipment or material entered")
    deviation = open_deviation(session, batch, None, "material",
                               f"Unusable equipment or material entered at step '{refused.step_id}': "
                               + "; ".join(refused.refused), user)
    deviation.step_id = refused.step_id
    audit.flush(session, reason="unusable equipment or material entered")
    return deviation


def of_batch(session: Session, batch: Batch) -> list[Deviation]:
    return list(session.scalars(sa.select(Deviation).where(Deviation.batch_id == batch.id).order_by(Deviation.id)))


def get(session: Session, deviation_id: int) -> Deviation:
    deviation = session.get(Deviation, deviation_id)
    if deviation is None:
        raise NotFound(f"no deviation with id {deviation_id}")
    return deviation


def guard_open(session: Session, user: User, batch: Batch) -> list[guards.Refusal]:
    return guards.open_deviation(guards.person(user))


def guard_investigate(session: Session, user: User, deviation: Deviation) -> list[guards.Refusal]:
    return guards.investigate_deviation(guards.person(user), deviation.status, deviation.number)


def guard_close(session: Session, user: User, deviation: Deviation) -> list[guards.Refusal]:
    return guards.close_deviation(guards.person(user), deviation.status, deviation.number,
                                  classified=bool(deviation.classification and deviation.root_cause))


def open_by_hand(session: Session, batch: Batch, *, description: str, user: User) -> Deviation:
    """Anyone working on the batch (operator or QA) may open a deviation by hand."""
    guards.enforce(guard_open(session, user, batch))
    description = inputs.required("description", description, "Describe the deviation.")
    deviation = open_deviation(session, batch, None, "manual", description, user)
    audit.flush(session, reason="deviation opened by hand")
    return deviation


def investigate(session: Session, deviation: Deviation, *, classification: str, investigation: str,
                root_cause: str, impact: str, capa_reference: str, user: User) -> Deviation:
    """QA records (or revises, while open) the classification and the investigation; every change is audited."""
    guards.enforce(guard_investigate(session, user, deviation))
    problems = guards.investigation_problems(classification, investigation, root_cause, impact, capa_reference)
    problems += inputs.problems({"investigation": investigation, "root_cause": root_cause, "impact": impact,
                                 "capa_reference": capa_reference})
    if problems:
        raise ValidationFailed(*problems)
    deviation.classification = classification
    deviation.investigation, deviation.root_cause = inputs.text("investigation", investigation), inputs.text(
        "root_cause", root_cause)
    deviation.impact = inputs.text("impact", impact)
    deviation.capa_reference = inputs.text("capa_reference", capa_reference) or None
    audit.flush(session, reason=f"deviation {deviation.number} investigated")
    return deviation


def close(session: Session, deviation: Deviation, *, signer: User, password: str, username: str | None,
          require_username: bool, expected_row_version: int | None = None) -> Deviation:
    """QA closes an investigated deviation with an e-signature bound to its classification and findings. Two
    closings run one after the other (its row lock); the second is told who closed it first."""
    rows.lock(session, deviation)
    if deviation.status == "closed":
        raise rows.already_done(session, f"deviation {deviation.number} was already closed",
                                user_id=deviation.closed_by_id, at=deviation.closed_at)
    if expected_row_version is not None and deviation.row_version != expected_row_version:
        raise ConflictError(f"deviation {deviation.number} was changed by someone else; nothing was stored")
    guards.enforce(guard_close(session, signer, deviation))
    DEVIATION_STATUS.check(deviation.status, "closed")
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)  # before the first write
    deviation.status, deviation.closed_at, deviation.closed_by_id = "closed", utcnow(), signer.id
    try:
        session.flush()
    except StaleDataError:
        raise ConflictError(f"deviation {deviation.number} was changed by someone else; nothing was stored") from None
    signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.APPROVED, record=deviation,
                    comment="deviation closed")
    audit.flush(session, reason=f"deviation {deviation.number} closed")
    return deviation

