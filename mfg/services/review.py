"""QA: review by exception and the batch decision (deviations are ``services.deviations``).

Review by exception lists only what needs QA's eyes (:func:`exceptions`): values out of limit,
corrections, deviations, identity events, pending results, label reprints. Each must be marked reviewed
before a decision. The decision (:func:`decide`) is signed; its guard (``domain.lifecycle.decide``, with the
facts of :func:`decision_facts`) refuses a releaser who performed or verified a step of the batch, an open
deviation, an unreviewed item, an incomplete record, and a full release while a result is pending.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..domain import guards, inputs, lifecycle, sequence, words
from ..domain.errors import ConflictError, NotFound, ValidationFailed
from ..domain.signing import Meaning
from ..domain.sop_schema import ChoiceField, Step, step_index
from ..models import (
    AuditEntry,
    Batch,
    BatchDecision,
    Deviation,
    DocumentRevision,
    RecordedValue,
    ReviewMark,
    Signature,
    StepExecution,
    User,
    utcnow,
)
from . import audit, batches, deviations, results, rows, signatures
from . import lifecycle as batch_lifecycle

QA = guards.QA
# The meaning of QA's signature on each decision (lifecycle.DECISIONS).
MEANINGS = {"released": Meaning.RELEASED, "conditionally_released": Meaning.RELEASED, "rejected": Meaning.REJECTED,
            "under_investigation": Meaning.INVESTIGATION, "recalled": Meaning.RECALLED}


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


def _steps(batch: Batch) -> dict[tuple[int, str], Step]:
    """The steps of the batch's master records by (master record version, step id)."""
    found = {}
    for pin, record in zip(batch.master_records, batches.records(batch), strict=True):
        for _stage, step in step_index(record).values():
            found[(pin.sop_version_id, step.id)] = step
    return found


def exceptions(session: Session, batch: Batch) -> list[Exception_]:
    """Everything in the batch that needs QA's eyes, in record order; the rest is one click away."""
    items: list[Exception_] = []
    pending = _pending_answers(batch)
    steps = _steps(batch)
    for ex in batches.executions(session, batch):
        step = steps.get((ex.sop_version_id, ex.step_id))
        current = ex.current_values()
        for value in ex.values:
            name = words.value_name(step, ex.instance, value.field_id)
            if not value.in_limits:
                items.append(Exception_(f"value:{value.id}", "out of limit", f"{name} = {value.text}",
                                        value.limit_message or "", ex.id))
            if value.supersedes_id:
                original = session.get(RecordedValue, value.supersedes_id)
                assert original is not None  # supersedes_id is a foreign key
                items.append(Exception_(f"correction:{value.id}", "correction", name,
                                        f"{name}: {original.text} → {value.text} (reason: {value.correction_reason})",
                                        ex.id))
        for field_id, value in current.items():
            answers = pending.get((ex.sop_version_id, ex.step_id, field_id))
            if answers and value.text in answers:
                items.append(Exception_(f"pending:{value.id}", "pending result",
                                        words.value_name(step, ex.instance, field_id), f"recorded as {value.text}",
                                        ex.id))
    for deviation in deviations.of_batch(session, batch):
        items.append(Exception_(f"deviation:{deviation.id}", "deviation", f"{deviation.number} ({deviation.status})",
                                deviation.description, deviation.execution_id))
    for result in results.of_batch(session, batch):
        if result.status != "pending":
            flagged = "" if result.in_limits else f" OUT OF SPECIFICATION: {result.limit_message}"
            items.append(Exception_(f"result:{result.id}", "result entry", result.label,
                                    f"Pending → {result.result_text}{flagged}"
                                    + (f" ({result.comment})" if result.comment else ""), result.execution_id))
    for document in session.scalars(sa.select(DocumentRevision).where(
            DocumentRevision.batch_id == batch.id, DocumentRevision.kind == "labels", DocumentRevision.revision > 1)
            .order_by(DocumentRevision.revision)):
        items.append(Exception_(f"reprint:{document.id}", "label reprint", f"labels reprinted (revision "
                                f"{document.revision})", document.reason, None))
    for entry in session.scalars(sa.select(AuditEntry).where(
            AuditEntry.action == "identity.mismatch", AuditEntry.entity_type == "batch",
            AuditEntry.entity_id == str(batch.id)).order_by(AuditEntry.seq)):
        details = json.loads(entry.after) if entry.after else {}
        titles = {step_id: step.title for (_version, step_id), step in steps.items()}
        if "step" in details:
            details["step"] = titles.get(details["step"], words.plain(str(details["step"])))
        if "expected" in details:
            details["expected"] = words.reference(str(details["expected"]))
        items.append(Exception_(f"identity:{entry.seq}", "identity event", f"identity check failed by {entry.username}",
                                "; ".join(words.change(None, details, IDENTITY_WORDS)), None))
    return items


# The keys of an identity stop's audit entry (``deviations.record_identity_mismatch``), in words.
IDENTITY_WORDS = {"step": "step", "field": "scanned into", "expected": "expected", "scanned": "scanned"}


def pending_results(session: Session, batch: Batch) -> list[Exception_]:
    return [item for item in exceptions(session, batch) if item.kind == "pending result"]


def marks(session: Session, batch: Batch) -> dict[str, ReviewMark]:
    return {m.item_key: m for m in session.scalars(sa.select(ReviewMark).where(ReviewMark.batch_id == batch.id))}


def guard_review(session: Session, user: User, batch: Batch) -> list[guards.Refusal]:
    return guards.review_batch(guards.person(user))


def mark_reviewed(session: Session, batch: Batch, key: str, *, user: User, comment: str = "") -> ReviewMark:
    guards.enforce(guard_review(session, user, batch))
    item = next((item for item in exceptions(session, batch) if item.key == key), None)
    if item is None:
        raise NotFound(f"batch {batch.lot} has no review item {key!r}")
    mark = ReviewMark(batch_id=batch.id, item_key=key, reviewed_by_id=user.id, reviewed_at=utcnow(),
                      comment=inputs.text("comment", comment) or None)
    session.add(mark)
    try:
        audit.flush(session, reason=f"review: {item.kind} {item.title} reviewed")
    except IntegrityError:
        raise ConflictError(f"{key} was already marked reviewed") from None
    return mark


def participants(session: Session, batch: Batch) -> set[int]:
    """Everyone who signed a step of the batch "Performed by" or "Verified by"."""
    ids = sa.select(sa.cast(StepExecution.id, sa.String)).where(StepExecution.batch_id == batch.id)
    return set(session.scalars(sa.select(Signature.user_id).where(
        Signature.record_type == StepExecution.__tablename__, Signature.record_id.in_(ids),
        Signature.meaning.in_((Meaning.PERFORMED.value, Meaning.VERIFIED.value))))) \
        | results.participants(session, batch)


def decision_facts(session: Session, batch: Batch, user: User) -> lifecycle.DecisionFacts:
    """Before the conditional release the pending results are the recorded pending answers; after it, the
    pending result records not yet entered and verified."""
    reviewed = marks(session, batch)
    if lifecycle.results_open(batch.status) or batch.status == "released":
        found = results.of_batch(session, batch)
        pending, failed = results.unsettled(found), results.failed(found)
    else:
        pending, failed = tuple(p.title for p in pending_results(session, batch)), ()
    return lifecycle.DecisionFacts(
        lot=batch.lot, status=batch.status, participant=user.id in participants(session, batch),
        open_deviations=tuple(d.number for d in deviations.of_batch(session, batch) if d.status != "closed"),
        unreviewed=sum(1 for item in exceptions(session, batch) if item.key not in reviewed),
        all_complete=sequence.all_complete(batches.records(batch), *batches.progress(session, batch)),
        pending=pending, failed=failed)


def guard_decide(session: Session, user: User, batch: Batch, decision: str) -> list[guards.Refusal]:
    """Why ``user`` may not record ``decision`` for ``batch`` now (empty when they may)."""
    return lifecycle.decide(guards.person(user), decision, decision_facts(session, batch, user))


def decision_problems(session: Session, batch: Batch, decision: str, user: User) -> list[str]:
    return guards.texts(guard_decide(session, user, batch, decision))


def decide(session: Session, batch: Batch, *, decision: str, comment: str, signer: User, password: str,
           username: str | None, require_username: bool, tz: ZoneInfo | None = None) -> BatchDecision:
    """Record QA's signed decision (``domain.lifecycle``): released (the final release, after a conditional
    one), conditionally released (each pending result becomes a record with its due time), rejected,
    under investigation (after a complaint: bags not yet infused blocked, the clinic alerted) or recalled.
    A rejection, investigation or recall needs a reason. Two decisions on the batch run one after the other (its
    row lock); the same decision sent again is told who made it first."""
    rows.lock(session, batch)
    last = session.scalars(sa.select(BatchDecision).where(BatchDecision.batch_id == batch.id)
                           .order_by(BatchDecision.id.desc()).limit(1)).first()
    if last is not None and last.decision == decision:
        raise rows.already_done(session, f"batch {batch.lot} was already {decision.replace('_', ' ')}",
                                user_id=last.decided_by_id, at=last.decided_at)
    guards.enforce(guard_decide(session, signer, batch, decision))
    comment = inputs.text("comment", comment)
    if decision in lifecycle.NEEDS_REASON and not comment:
        raise ValidationFailed(f"A decision '{decision.replace('_', ' ')}' needs a reason.")
    pending = "; ".join(f"{p.title} ({p.detail})" for p in pending_results(session, batch)) \
        if decision == "conditionally_released" else None
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)  # before the first write
    previous = batch.status
    if decision != "under_investigation":  # protect_patients moves it, with everything that goes with it
        batch_lifecycle.move(batch, decision)
        batch_lifecycle.claim(session, batch)  # two QA users cannot both decide
    record = BatchDecision(batch_id=batch.id, decision=decision, pending=pending, comment=comment or None,
                           decided_by_id=signer.id, decided_at=utcnow())
    session.add(record)
    audit.flush(session, reason=f"batch {decision.replace('_', ' ')}")
    if decision == "conditionally_released":
        results.open_pending(session, batch, record)
    if decision == "under_investigation":
        batch_lifecycle.protect_patients(session, batch, finding=f"placed under investigation by QA: {comment}",
                                         user=signer, tz=tz or ZoneInfo("UTC"))
    what = "final release" if decision == "released" and previous == "conditionally_released" else \
        decision.replace("_", " ")
    signatures.sign(session, signer=signer, credentials=credentials, meaning=MEANINGS[decision], record=record,
                    comment=f"batch {what}" + (f"; pending: {pending}" if pending else "")
                    + (f": {comment}" if decision in lifecycle.NEEDS_REASON else ""))
    return record


def decisions(session: Session, batch: Batch) -> list[BatchDecision]:
    return list(session.scalars(sa.select(BatchDecision).where(BatchDecision.batch_id == batch.id)
                                .order_by(BatchDecision.id)))


REVIEW_STATUSES = lifecycle.QA_WORK


@dataclass(frozen=True)
class Queue:
    """The QA review queue: the batches waiting for QA, with (open deviations, unreviewed items) of each, and
    every open deviation with its batch."""

    batches: list[Batch]
    counts: dict[int, tuple[int, int]]
    open_deviations: list[Deviation]
    batch_of: dict[int, Batch]


def queue(session: Session) -> Queue:
    """Open deviations in one query; the unreviewed items are counted per waiting batch (a handful)."""
    waiting = list(session.scalars(sa.select(Batch).where(Batch.status.in_(REVIEW_STATUSES)).order_by(Batch.id)))
    open_deviations = list(session.scalars(sa.select(Deviation).where(Deviation.status != "closed")
                                           .order_by(Deviation.id)))
    ids = {d.batch_id for d in open_deviations}
    batch_of = {b.id: b for b in session.scalars(sa.select(Batch).where(Batch.id.in_(ids)))} if ids else {}
    open_by_batch: dict[int, int] = {}
    for deviation in open_deviations:
        open_by_batch[deviation.batch_id] = open_by_batch.get(deviation.batch_id, 0) + 1
    counts = {}
    for batch in waiting:
        reviewed = marks(session, batch)
        counts[batch.id] = (open_by_batch.get(batch.id, 0),
                            sum(1 for item in exceptions(session, batch) if item.key not in reviewed))
    return Queue(waiting, counts, open_deviations, batch_of)
