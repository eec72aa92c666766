"""Pending results: a test the specification allowed to be pending at release becomes, at the conditional
release, a record of its own (:func:`open_pending`) with its due time (sample time + the method's duration,
``domain.result_time``). It is on QA's queue and on the operators' home page, overdue ones highlighted
(:func:`due`).

Entering it is its own signed action (:func:`enter_result`, "Performed by"), evaluated against the field
of the master record version the batch was tested under, refused before the sample time plus the method's
minimum duration; a second operator verifies it (:func:`verify_result`). The "pending" value stays in the
step's record. A result outside its specification opens a critical deviation and protects patients at once
(``lifecycle.protect_patients``: the batch under investigation, bags not yet infused blocked, the clinic
alerted), without waiting for the verification.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from ..domain import guards, inputs, result_time, values
from ..domain.errors import ConflictError, NotFound, ValidationFailed
from ..domain.signing import Meaning
from ..domain.sop_schema import ChoiceField, Field
from ..models import Batch, BatchDecision, PendingResult, StepExecution, User, utcnow
from . import audit, batches, deviations, evaluation, lifecycle, signatures


def _field(batch: Batch, execution: StepExecution, field_id: str) -> tuple[int, Field]:
    position, step = batches.step_of(batch, execution)
    found = next((f for f in step.fields if f.id == field_id), None)
    if found is None:
        raise NotFound(f"step '{step.id}' has no field '{field_id}'")
    return position, found


def _sampled_at(session: Session, batch: Batch, position: int, execution: StepExecution,
                field: Field) -> datetime | None:
    timing = getattr(field, "result_time", None)
    if timing is None:
        return None
    if "." in timing.sample:
        return evaluation.recorded_moment(session, batch, position, timing.sample)
    own = execution.current_values().get(timing.sample)
    return own.moment if own is not None else None


def open_pending(session: Session, batch: Batch, decision: BatchDecision) -> list[PendingResult]:
    """At the conditional release: every recorded answer that is a ``pending`` answer of its field becomes a
    pending result, with its method, sample time and due time."""
    opened = []
    now = utcnow()
    for execution in batches.executions(session, batch):
        position, step = batches.step_of(batch, execution)
        for field_id, value in execution.current_values().items():
            field = next((f for f in step.fields if f.id == field_id), None)
            if not isinstance(field, ChoiceField) or value.text not in field.pending:
                continue
            sampled = _sampled_at(session, batch, position, execution, field)
            timing = field.result_time
            pending = PendingResult(
                batch_id=batch.id, execution_id=execution.id, field_id=field_id, pending_value_id=value.id,
                label=f"{step.title}: {field.label}", method=timing.method if timing else None, sampled_at=sampled,
                due_at=result_time.due(timing, sampled) if timing and sampled else None, decision_id=decision.id,
                created_at=now, status="pending")
            session.add(pending)
            opened.append(pending)
    audit.flush(session, reason="pending results opened at the conditional release")
    return opened


def of_batch(session: Session, batch: Batch) -> list[PendingResult]:
    return list(session.scalars(sa.select(PendingResult).where(PendingResult.batch_id == batch.id)
                                .order_by(PendingResult.id)))


def get(session: Session, pending_id: int) -> PendingResult:
    found = session.get(PendingResult, pending_id)
    if found is None:
        raise NotFound(f"no pending result with id {pending_id}")
    return found


def unsettled(found: list[PendingResult]) -> tuple[str, ...]:
    """Titles of the results not yet entered and verified."""
    return tuple(p.label for p in found if p.status != "complete")


def failed(found: list[PendingResult]) -> tuple[str, ...]:
    """Titles of the results entered outside their specification."""
    return tuple(f"{p.label} = {p.result_text}" for p in found if p.in_limits is False)


@dataclass(frozen=True)
class Due:
    """One result the QC laboratory owes: pending or waiting for verification, with its batch."""

    result: PendingResult
    batch: Batch
    overdue: bool


def due(session: Session) -> list[Due]:
    """Every result still owed, soonest due first (those without a due time last); overdue ones flagged."""
    now = utcnow()
    rows = session.execute(sa.select(PendingResult, Batch).join(Batch, Batch.id == PendingResult.batch_id)
                           .where(PendingResult.status != "complete")
                           .order_by(PendingResult.due_at.is_(None), PendingResult.due_at, PendingResult.id))
    return [Due(result, batch, result.status == "pending" and result.due_at is not None and result.due_at < now)
            for result, batch in rows]


def answers(field: Field) -> list[str] | None:
    """The answers a result entry may give (a choice field's choices that are not pending), or None when the
    result is typed."""
    if isinstance(field, ChoiceField):
        return [c for c in field.choices if c not in field.pending]
    return None


# --- result entry -------------------------------------------------------------------------------------------

def guard_enter(session: Session, user: User, pending: PendingResult) -> list[guards.Refusal]:
    batch = batches.get(session, pending.batch_id)
    return guards.enter_result(guards.person(user), lot=batch.lot, batch_status=batch.status, label=pending.label,
                               status=pending.status)


def field_of(session: Session, pending: PendingResult) -> Field:
    batch = batches.get(session, pending.batch_id)
    return _field(batch, batches.get_execution(session, batch, pending.execution_id), pending.field_id)[1]


def enter_result(session: Session, pending: PendingResult, *, raw: str, comment: str, signer: User, password: str,
                 username: str | None, require_username: bool, tz: ZoneInfo) -> PendingResult:
    """Enter the final result of a pending test, signed "Performed by". Refused (nothing stored) when
    malformed, still a pending answer, or (within specification) earlier than the sample time plus the method's
    minimum duration;
    outside its specification it is stored, flagged, needs a comment and protects patients at once."""
    guards.enforce(guard_enter(session, signer, pending))
    batch = batches.get(session, pending.batch_id)
    execution = batches.get_execution(session, batch, pending.execution_id)
    _position, field = _field(batch, execution, pending.field_id)
    kind = values.KINDS[field.type]
    parsed = kind.parse(field, (raw or "").strip(), tz=tz)
    if isinstance(field, ChoiceField) and parsed.text in field.pending:
        raise ValidationFailed(f"{pending.label}: '{parsed.text}' is still pending; enter the result when it is known.")
    now = utcnow()
    problems = kind.limit_problems(field, parsed, {})
    position, step = batches.step_of(batch, execution)
    entered = evaluation.Evaluated(field.id, field.type, (raw or "").strip(), parsed, getattr(field, "unit", None),
                                   problems)
    early = evaluation.result_time_problem(session, batch, position, step, field.id, now, [entered], tz,
                                           execution.instance)
    if early:  # within specification only: a failing result is reported when found (domain.result_time)
        raise ValidationFailed(early)
    comment = inputs.text("comment", comment)
    if problems and not comment:
        raise ValidationFailed(f"{pending.label}: an out-of-specification result needs a comment "
                               f"({'; '.join(problems)})")
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)  # before the first write
    pending.status, pending.result_text = "awaiting_verification", parsed.text
    pending.in_limits, pending.limit_message = not problems, "; ".join(problems) or None
    pending.comment, pending.entered_by_id, pending.entered_at = (comment or "").strip() or None, signer.id, now
    try:
        session.flush()
    except StaleDataError:
        raise ConflictError(f"{pending.label}: the result was entered by someone else at the same moment; "
                            "nothing was stored") from None
    audit.flush(session, reason=f"result entry: {pending.label}")
    signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.PERFORMED, record=pending,
                    comment=f"result entry: {pending.label} = {parsed.text}")
    if problems:
        finding = f"{pending.label}: {parsed.text} ({'; '.join(problems)})"
        deviation = deviations.open_deviation(session, batch, execution, "result",
                                               f"Result after the conditional release out of specification: "
                                               f"{finding}", signer)
        if batch.status == "conditionally_released":
            lifecycle.protect_patients(session, batch, finding=finding, user=signer, tz=tz, deviation=deviation)
        else:  # already under investigation: the bags are blocked; the clinic is told of the new finding
            lifecycle.alert_clinic(session, batch, finding=finding, deviation=deviation, tz=tz)
    audit.flush(session, reason=f"result entry: {pending.label}")
    return pending


def guard_verify(session: Session, user: User, pending: PendingResult) -> list[guards.Refusal]:
    return guards.verify_result(guards.person(user), label=pending.label, status=pending.status,
                                entered_by_id=pending.entered_by_id)


def verify_result(session: Session, pending: PendingResult, *, signer: User, password: str, username: str | None,
                  require_username: bool) -> PendingResult:
    """A second operator verifies the entered result against its source (the culture report), signed
    "Verified by"."""
    guards.enforce(guard_verify(session, signer, pending))
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)  # before the first write
    pending.status, pending.verified_by_id, pending.verified_at = "complete", signer.id, utcnow()
    try:
        session.flush()
    except StaleDataError:
        raise ConflictError(f"{pending.label}: verified by someone else at the same moment; nothing was stored") \
            from None
    signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.VERIFIED, record=pending,
                    comment=f"result entry verified: {pending.label} = {pending.result_text}")
    audit.flush(session, reason=f"result entry verified: {pending.label}")
    return pending


def participants(session: Session, batch: Batch) -> set[int]:
    """Everyone who entered or verified a pending result of the batch."""
    return {uid for p in of_batch(session, batch) for uid in (p.entered_by_id, p.verified_by_id) if uid is not None}

