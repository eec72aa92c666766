"""QA: deviations (classify, investigate, close with a signature), review by exception and the batch decision.

Review by exception lists only what needs QA's eyes (:func:`exceptions`): values out of limit,
corrections, deviations, identity events, pending results. Each must be marked reviewed before a
decision. The decision (:func:`decide`) is signed; the service enforces that the releaser performed and
verified no step of the batch and that no deviation is open (a rejection needs neither).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from ..domain import sequence
from ..domain.errors import ConflictError, NotFound, PermissionDenied, ValidationFailed
from ..domain.signing import Meaning
from ..domain.sop_schema import ChoiceField, step_index
from ..domain.status import TransitionTable
from ..models import (AuditEntry, Batch, BatchDecision, Deviation, DocumentRevision, RecordedValue, ReviewMark, Signature,
                      StepExecution, User, utcnow)
from . import audit, batches, signatures

QA = "qa"
CLASSIFICATIONS = ("minor", "major", "critical")
DEVIATION_STATUS = TransitionTable("A deviation", {"open": {"closed": "close"}, "closed": {}})
DECISIONS = {"released": Meaning.RELEASED, "conditionally_released": Meaning.RELEASED, "rejected": Meaning.REJECTED}


def _require_qa(user: User, what: str) -> None:
    if not user.has_role(QA):
        raise PermissionDenied(f"{what} needs the QA role")


def get_deviation(session: Session, deviation_id: int) -> Deviation:
    deviation = session.get(Deviation, deviation_id)
    if deviation is None:
        raise NotFound(f"no deviation with id {deviation_id}")
    return deviation


def open_by_hand(session: Session, batch: Batch, *, description: str, user: User) -> Deviation:
    """Anyone working on the batch (operator or QA) may open a deviation by hand."""
    if not user.has_role("operator", QA):
        raise PermissionDenied("opening a deviation needs the operator or QA role")
    if not description.strip():
        raise ValidationFailed("Describe the deviation.")
    deviation = batches._open_deviation(session, batch, None, "manual", description.strip(), user)
    audit.flush(session, reason="deviation opened by hand")
    return deviation


def investigate(session: Session, deviation: Deviation, *, classification: str, investigation: str,
                root_cause: str, impact: str, capa_reference: str, user: User) -> Deviation:
    """QA records (or revises, while open) the classification and the investigation; every change is audited."""
    _require_qa(user, "investigating a deviation")
    if deviation.status != "open":
        raise ValidationFailed(f"deviation {deviation.number} is closed")
    problems = []
    if classification not in CLASSIFICATIONS:
        problems.append(f"Classification must be one of {', '.join(CLASSIFICATIONS)}.")
    for label, text in (("Investigation", investigation), ("Root cause", root_cause),
                        ("Impact on this and other batches", impact)):
        if not (text or "").strip():
            problems.append(f"{label} is required.")
    if classification in ("major", "critical") and not (capa_reference or "").strip():
        problems.append(f"A {classification} deviation needs a CAPA reference.")
    if problems:
        raise ValidationFailed(*problems)
    deviation.classification = classification
    deviation.investigation, deviation.root_cause = investigation.strip(), root_cause.strip()
    deviation.impact, deviation.capa_reference = impact.strip(), (capa_reference or "").strip() or None
    audit.flush(session, reason=f"deviation {deviation.number} investigated")
    return deviation


def close(session: Session, deviation: Deviation, *, signer: User, password: str, username: str | None,
          require_username: bool, expected_row_version: int | None = None) -> Deviation:
    """QA closes an investigated deviation with an e-signature bound to its classification and findings."""
    _require_qa(signer, "closing a deviation")
    if not deviation.classification or not deviation.root_cause:
        raise ValidationFailed(f"deviation {deviation.number} must be classified and investigated before it closes")
    if expected_row_version is not None and deviation.row_version != expected_row_version:
        raise ConflictError(f"deviation {deviation.number} was changed by someone else; nothing was stored")
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


# --- review by exception ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Exception_:
    """One thing in a batch that QA must look at."""

    key: str  # stable: what a ReviewMark names
    kind: str  # out of limit, correction, deviation, identity event, pending result
    title: str
    detail: str
    execution_id: int | None = None


def _pending_answers(batch: Batch) -> dict[tuple[int, str, str], list[str]]:
    found = {}
    for position, record in enumerate(batches.records(batch)):
        for _stage, step in step_index(record).values():
            for f in step.fields:
                if isinstance(f, ChoiceField) and f.pending:
                    found[(batch.master_records[position].sop_version_id, step.id, f.id)] = f.pending
    return found


def exceptions(session: Session, batch: Batch) -> list[Exception_]:
    """Everything in the batch that needs QA's eyes, in record order; the rest is one click away."""
    items: list[Exception_] = []
    pending = _pending_answers(batch)
    for ex in batches.executions(session, batch):
        where = f"{ex.step_id} #{ex.instance}"
        current = ex.current_values()
        for value in ex.values:
            if not value.in_limits:
                items.append(Exception_(f"value:{value.id}", "out of limit", f"{where}: {value.field_id} = {value.text}",
                                        value.limit_message or "", ex.id))
            if value.supersedes_id:
                original = session.get(RecordedValue, value.supersedes_id)
                items.append(Exception_(f"correction:{value.id}", "correction", f"{where}: {value.field_id}",
                                        f"{original.text} -> {value.text}: {value.correction_reason}", ex.id))
        for field_id, value in current.items():
            answers = pending.get((ex.sop_version_id, ex.step_id, field_id))
            if answers and value.text in answers:
                items.append(Exception_(f"pending:{value.id}", "pending result", f"{where}: {field_id}",
                                        f"recorded as {value.text}", ex.id))
    for deviation in batches.deviations(session, batch):
        items.append(Exception_(f"deviation:{deviation.id}", "deviation", f"{deviation.number} ({deviation.status})",
                                deviation.description, deviation.execution_id))
    for document in session.scalars(sa.select(DocumentRevision).where(
            DocumentRevision.batch_id == batch.id, DocumentRevision.kind == "labels", DocumentRevision.revision > 1)
            .order_by(DocumentRevision.revision)):
        items.append(Exception_(f"reprint:{document.id}", "label reprint", f"labels reprinted (revision "
                                f"{document.revision})", document.reason, None))
    for entry in session.scalars(sa.select(AuditEntry).where(
            AuditEntry.action == "identity.mismatch", AuditEntry.entity_type == "batch",
            AuditEntry.entity_id == str(batch.id)).order_by(AuditEntry.seq)):
        items.append(Exception_(f"identity:{entry.seq}", "identity event", f"identity check failed by {entry.username}",
                                str(entry.after or ""), None))
    return items


def pending_results(session: Session, batch: Batch) -> list[Exception_]:
    return [item for item in exceptions(session, batch) if item.kind == "pending result"]


def marks(session: Session, batch: Batch) -> dict[str, ReviewMark]:
    return {m.item_key: m for m in session.scalars(sa.select(ReviewMark).where(ReviewMark.batch_id == batch.id))}


def mark_reviewed(session: Session, batch: Batch, key: str, *, user: User, comment: str = "") -> ReviewMark:
    _require_qa(user, "reviewing a batch")
    if key not in {item.key for item in exceptions(session, batch)}:
        raise NotFound(f"batch {batch.lot} has no review item {key!r}")
    mark = ReviewMark(batch_id=batch.id, item_key=key, reviewed_by_id=user.id, reviewed_at=utcnow(),
                      comment=comment.strip() or None)
    session.add(mark)
    try:
        audit.flush(session, reason=f"review: {key} reviewed")
    except IntegrityError:
        raise ConflictError(f"{key} was already marked reviewed") from None
    return mark


def participants(session: Session, batch: Batch) -> set[int]:
    """Everyone who signed a step of the batch "Performed by" or "Verified by"."""
    ids = sa.select(sa.cast(StepExecution.id, sa.String)).where(StepExecution.batch_id == batch.id)
    return set(session.scalars(sa.select(Signature.user_id).where(
        Signature.record_type == StepExecution.__tablename__, Signature.record_id.in_(ids),
        Signature.meaning.in_((Meaning.PERFORMED.value, Meaning.VERIFIED.value)))))


def _personal_problems(session: Session, batch: Batch, user: User) -> list[str]:
    problems = []
    if not user.has_role(QA):
        problems.append("Only QA decides on a batch.")
    if user.id in participants(session, batch):
        problems.append(f"{user.full_name} performed or verified a step of this batch and may not decide on it.")
    return problems


def decision_problems(session: Session, batch: Batch, decision: str, user: User) -> list[str]:
    """Why ``user`` may not record ``decision`` for ``batch`` now (empty when they may)."""
    problems = []
    if decision not in DECISIONS:
        return [f"unknown decision {decision!r}"]
    problems.extend(_personal_problems(session, batch, user))
    target = decision
    allowed = sequence.BATCH_STATUS.allowed.get(batch.status, {})
    if target not in allowed:
        problems.append(f"batch {batch.lot} is {batch.status.replace('_', ' ')}: it cannot be {target.replace('_', ' ')}")
    if decision != "rejected":
        open_deviations = [d.number for d in batches.deviations(session, batch) if d.status != "closed"]
        if open_deviations:
            problems.append(f"Deviations still open: {', '.join(open_deviations)}. Close them before release.")
        reviewed = marks(session, batch)
        unreviewed = [item.title for item in exceptions(session, batch) if item.key not in reviewed]
        if unreviewed:
            problems.append(f"{len(unreviewed)} review item(s) not yet marked reviewed.")
        if not sequence.all_complete(batches.records(batch), *batches.progress(session, batch)):
            problems.append("Not every step is complete and verified.")
        pending = pending_results(session, batch)
        if decision == "released" and pending:
            problems.append("Results are still pending (" + "; ".join(p.title for p in pending)
                            + "): release conditionally, naming them, or wait for the final results.")
        if decision == "conditionally_released" and not pending:
            problems.append("Nothing is pending: release the batch without conditions.")
    return problems


def decide(session: Session, batch: Batch, *, decision: str, comment: str, signer: User, password: str,
           username: str | None, require_username: bool) -> BatchDecision:
    """Record QA's signed decision: released, conditionally released (the pending results named in the
    record) or rejected (a reason is required)."""
    personal = _personal_problems(session, batch, signer)
    if personal:
        raise PermissionDenied(*personal)
    problems = decision_problems(session, batch, decision, signer)
    if decision == "rejected" and not comment.strip():
        problems.append("A rejection needs a reason.")
    if problems:
        raise ValidationFailed(*problems)
    pending = "; ".join(f"{p.title} ({p.detail})" for p in pending_results(session, batch)) \
        if decision == "conditionally_released" else None
    sequence.BATCH_STATUS.check(batch.status, decision)
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)  # before the first write
    batch.status = decision
    try:
        session.flush()  # the claim on the batch's row version: two QA users cannot both decide
    except StaleDataError:
        raise ConflictError(f"batch {batch.lot} was changed by someone else; nothing was stored") from None
    record = BatchDecision(batch_id=batch.id, decision=decision, pending=pending, comment=comment.strip() or None,
                           decided_by_id=signer.id, decided_at=utcnow())
    session.add(record)
    audit.flush(session, reason=f"batch {decision.replace('_', ' ')}")
    signatures.sign(session, signer=signer, credentials=credentials, meaning=DECISIONS[decision], record=record,
                    comment=f"batch {decision.replace('_', ' ')}" + (f"; pending: {pending}" if pending else ""))
    return record


def decisions(session: Session, batch: Batch) -> list[BatchDecision]:
    return list(session.scalars(sa.select(BatchDecision).where(BatchDecision.batch_id == batch.id)
                                .order_by(BatchDecision.id)))
