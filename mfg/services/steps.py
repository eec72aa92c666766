"""Step commands: perform a step, verify it, correct a recorded value, sign a step again.

Each command asks its guard (``domain.guards``, through the ``guard_*`` functions here, which gather the
facts; the screens ask the same functions) and refuses with every reason before anything is written. Then
its first write is its *claim* (inserting the step execution, or bumping its row version), so that two
operators acting on the same step at once serialise on that row: one succeeds, the other gets
``StepConflict`` and the edge tells them who completed it and when. (Writing the claim first also keeps the
audit chain's head lock from being taken before it, which would deadlock on PostgreSQL.)
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from ..domain import calc, dose, guards, inputs, sequence, values, words
from ..domain.calc import referenced_names as calc_names
from ..domain.canonical import content_hash
from ..domain.errors import NotFound, StepConflict, ValidationFailed
from ..domain.signing import Meaning
from ..domain.sop_schema import Step, step_index
from ..models import Batch, RecordedValue, SignatureInvalidation, StepExecution, User, utcnow
from . import audit, bags, batches, deviations, evaluation, lifecycle, signatures

# --- guards: the facts each step command depends on ------------------------------------------------------

def guard_perform_step(session: Session, user: User, batch: Batch, position: int, step_id: str,
                       instance: int) -> list[guards.Refusal]:
    ref = sequence.StepRef(position, step_id)
    done, counts = batches.progress(session, batch)
    performed = any(s.instance == instance for s in done.get(ref, ()))
    opened = sequence.find_open(batches.records(batch), done, ref, instance, counts)
    return guards.perform_step(guards.person(user), lot=batch.lot, batch_status=batch.status, step_id=step_id,
                               instance=instance, performed=performed,
                               not_open=None if opened else sequence.not_open(ref, instance, done))


def guard_verify_step(session: Session, user: User, execution: StepExecution) -> list[guards.Refusal]:
    performers = batches.performers(session, execution) | {execution.performed_by_id}
    return guards.verify_step(guards.person(user), step_status=execution.status, performer_ids=performers)


def guard_resign_step(session: Session, user: User, execution: StepExecution) -> list[guards.Refusal]:
    return guards.resign_step(guards.person(user), step_status=execution.status)


def _divided_at(session: Session, batch: Batch, position: int, step: Step) -> str | None:
    """The dividing step, when the product is already divided into bags from values up to and including
    ``step`` (those values can no longer be corrected: the bags are filled and labelled); else None."""
    order = step_index(batches.records(batch)[position])
    dividing = [step_id for step_id, (_stage, candidate) in order.items() if candidate.divides_product]
    if not dividing or not bags.of_batch(session, batch):
        return None
    ids = list(order)
    return dividing[0] if ids.index(step.id) <= ids.index(dividing[0]) else None


def guard_correct_value(session: Session, user: User, execution: StepExecution,
                        field_id: str) -> list[guards.Refusal]:
    batch = execution.batch
    position, step = batches.step_of(batch, execution)
    target = next((f for f in step.fields if f.id == field_id), None)
    if target is None:
        return [guards.Refusal("state", f"step '{step.id}' has no field '{field_id}'")]
    return guards.correct_value(guards.person(user), lot=batch.lot, batch_status=batch.status,
                                field_label=target.label, calculated=target.type == "calculated",
                                divided_at=_divided_at(session, batch, position, step), step_id=step.id)


def correctable_fields(session: Session, user: User, execution: StepExecution) -> list[str]:
    """The recorded fields of the step whose correction the guard allows ``user`` now, in step order."""
    _position, step = batches.step_of(execution.batch, execution)
    recorded = execution.current_values()
    return [f.id for f in step.fields
            if f.id in recorded and not guard_correct_value(session, user, execution, f.id)]


def guard_correct_any(session: Session, user: User, execution: StepExecution) -> list[guards.Refusal]:
    """Whether any value of the step may be corrected (the screen's "Correct a value" dialog): the
    refusals of its first recorded field when none may."""
    _position, step = batches.step_of(execution.batch, execution)
    found: list[guards.Refusal] = []
    for f in step.fields:
        if f.id in execution.current_values():
            refusals = guard_correct_value(session, user, execution, f.id)
            if not refusals:
                return []
            found = found or refusals
    return found or [guards.Refusal("state", "nothing of this step was recorded")]


# --- perform -------------------------------------------------------------------------------------------------

def perform_step(session: Session, batch: Batch, *, position: int, step_id: str, instance: int,
                 entry: evaluation.StepInput, signer: User, password: str, username: str | None,
                 require_username: bool, tz: ZoneInfo) -> StepExecution:
    """Record a step's values and sign it "Performed by". Out-of-limit values and missed time windows
    are stored, flagged and open deviations; malformed input stores nothing."""
    with audit.reason_for(session, f"step {step_id} #{instance} performed"):
        return _perform(session, batch, position=position, step_id=step_id, instance=instance, entry=entry,
                        signer=signer, password=password, username=username, require_username=require_username,
                        tz=tz)


def _perform(session: Session, batch: Batch, *, position: int, step_id: str, instance: int,
             entry: evaluation.StepInput, signer: User, password: str, username: str | None, require_username: bool,
             tz: ZoneInfo) -> StepExecution:
    refusals = guard_perform_step(session, signer, batch, position, step_id, instance)
    if guards.only_done(refusals):
        raise StepConflict(batch.id, step_id, instance)  # someone else was first (the edge says who)
    guards.enforce(refusals)
    done, counts = batches.progress(session, batch)
    opened = sequence.require_open(batches.records(batch), done, sequence.StepRef(position, step_id), instance,
                                   counts)
    step = opened.step
    evaluated = evaluation.evaluate(session, batch, position, step, entry, tz, instance)
    planned_bags = _plan_bags(session, batch, position, step, evaluated)
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)  # before the first write
    now = utcnow()
    execution = StepExecution(batch_id=batch.id, sop_version_id=batch.master_records[position].sop_version_id,
                              stage_id=opened.stage.id, step_id=step.id, instance=instance,
                              definition_sha256=content_hash(step.model_dump(mode="json")),
                              status="awaiting_verification" if step.verification == "required" else "complete",
                              comment=inputs.text("comment", entry.comment) or None, performed_by_id=signer.id,
                              performed_at=now)
    session.add(execution)
    conflict = StepConflict(batch.id, step_id, instance)  # built now: after a failed flush nothing may load
    try:
        session.flush()  # the claim: the unique key refuses a second performer of this instance
    except IntegrityError:
        raise conflict from None
    for e in evaluated:
        session.add(_recorded(execution, e, entry, signer, now))
    if planned_bags is not None:
        bags.create(session, batch, execution, planned_bags)
    audit.flush(session)
    session.refresh(execution, ["values"])
    signature = signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.PERFORMED,
                                record=execution)
    execution.performed_signature_id = signature.id
    for e in evaluated:
        deviations.out_of_limit(session, batch, execution, step.title, e.limit_problems, signer)
    late = evaluation.time_window_problem(session, batch, position, step, evaluated)
    if late:
        deviations.open_deviation(session, batch, execution, "time_window", late, signer)
    _settle(session, batch)
    audit.flush(session)
    return execution


def _recorded(execution: StepExecution, e: evaluation.Evaluated, entry: evaluation.StepInput, signer: User,
              now: datetime, *, supersedes: RecordedValue | None = None, reason: str | None = None) -> RecordedValue:
    """The stored row of one evaluated value: flagged when out of limit, never dropped."""
    return RecordedValue(execution_id=execution.id, field_id=e.field_id, field_type=e.field_type, raw=e.raw,
                         text=e.parsed.text, number=e.parsed.number, moment=e.parsed.moment, unit=e.unit,
                         in_limits=not e.limit_problems, limit_message="; ".join(e.limit_problems) or None,
                         comment=inputs.text("comment", entry.field_comments.get(e.field_id)) or None,
                         entered_by_id=signer.id, entered_at=now,
                         supersedes_id=supersedes.id if supersedes is not None else None, correction_reason=reason)


def _plan_bags(session: Session, batch: Batch, position: int, step: Step,
               evaluated: list[evaluation.Evaluated]) -> list[dose.Bag] | None:
    """For a step that divides the product: the bags its recorded dose plan gives (``bags.plan``)."""
    division = step.divides_product
    if division is None:
        return None
    numbers = evaluation.inputs_from_batch(session, batch, position) | evaluation.context_numbers(session, batch)
    own = {e.field_id: calc.calculation_input(e.parsed.number, e.parsed.moment) for e in evaluated}
    numbers |= own | {f"{step.id}.{field_id}": number for field_id, number in own.items()}
    return bags.plan(batch, division, numbers,
                     evaluation.recorded_moment(session, batch, position, division.expires_from),
                     own.get(division.count))


def _settle(session: Session, batch: Batch) -> None:
    """After a step changed: in progress, or awaiting QA review once every stage is complete."""
    if batch.status in ("created", "awaiting_review"):
        lifecycle.move(batch, "in_progress")
    session.flush()  # the step's new status must be in the state read below
    if batch.status == "in_progress" and sequence.all_complete(batches.records(batch),
                                                               *batches.progress(session, batch)):
        lifecycle.move(batch, "awaiting_review")


# --- verify ---------------------------------------------------------------------------------------------------

def verify_step(session: Session, execution: StepExecution, *, signer: User, password: str,
                username: str | None, require_username: bool, expected_row_version: int | None = None) -> None:
    """A second operator signs "Verified by". The performer can never verify their own step."""
    with audit.reason_for(session, f"step {execution.step_id} #{execution.instance} verified"):
        guards.enforce(guard_verify_step(session, signer, execution))
        if expected_row_version is not None and execution.row_version != expected_row_version:
            raise StepConflict(execution.batch_id, execution.step_id, execution.instance)
        sequence.STEP_STATUS.check(execution.status, "complete")
        credentials = signatures.authenticate(signer, password=password, username=username,
                                              require_username=require_username)  # before the first write
        conflict = StepConflict(execution.batch_id, execution.step_id, execution.instance)
        execution.status = "complete"
        try:
            session.flush()  # the claim, checked against the row version
        except StaleDataError:
            raise conflict from None
        signature = signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.VERIFIED,
                                    record=execution)
        execution.verified_signature_id = signature.id
        _settle(session, execution.batch)
        audit.flush(session)


# --- correct --------------------------------------------------------------------------------------------------

def correct_value(session: Session, execution: StepExecution, *, field_id: str, raw: str, reason: str,
                  field_comment: str, signer: User, password: str, username: str | None,
                  require_username: bool, tz: ZoneInfo, expected_row_version: int | None = None) -> RecordedValue:
    """Correct one recorded value: the original stays, the new value supersedes it with a reason.

    The step's earlier signatures no longer stand (recorded as invalidations); the corrector signs the
    corrected step "Performed by" and, where the master record requires it, a different operator must
    verify it again. Calculated fields of the step are recomputed from the corrected inputs. (After a
    conditional release nothing is corrected: a pending result has its own entry, ``services.results``.)
    """
    if field_id not in execution.current_values():
        raise NotFound(f"step '{execution.step_id}' has no recorded field '{field_id}'")
    guards.enforce(guard_correct_value(session, signer, execution, field_id))
    reason = inputs.required("reason", reason, "A correction needs a reason.")
    with audit.reason_for(session, f"correction: {reason}"):
        return _correct(session, execution, field_id=field_id, raw=raw, reason=reason,
                        field_comment=field_comment, signer=signer, password=password, username=username,
                        require_username=require_username, tz=tz, expected_row_version=expected_row_version)


def _correct(session: Session, execution: StepExecution, *, field_id: str, raw: str, reason: str,
             field_comment: str, signer: User, password: str, username: str | None, require_username: bool,
             tz: ZoneInfo, expected_row_version: int | None) -> RecordedValue:
    batch = execution.batch
    if expected_row_version is not None and execution.row_version != expected_row_version:
        raise StepConflict(execution.batch_id, execution.step_id, execution.instance)
    position, step = batches.step_of(batch, execution)
    current = execution.current_values()
    entry = evaluation.StepInput(
        raw={fid: v.raw for fid, v in current.items()} | {field_id: raw},
        field_comments={fid: v.comment or "" for fid, v in current.items()} | {field_id: field_comment},
        comment=execution.comment or "")
    evaluated = {e.field_id: e for e in evaluation.evaluate(session, batch, position, step, entry, tz,
                                                             execution.instance)}
    changed = [e for fid, e in evaluated.items()
               if fid == field_id or (e.field_type == "calculated" and e.parsed.text != current[fid].text)]
    if evaluated[field_id].parsed.text == current[field_id].text:
        raise ValidationFailed("The corrected value is the same as the recorded one.")
    sequence.STEP_STATUS.check(execution.status, "needs_signature")
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)  # before the first write
    conflict = StepConflict(execution.batch_id, execution.step_id, execution.instance)
    execution.status = "needs_signature"
    try:
        session.flush()  # the claim, checked against the row version
    except StaleDataError:
        raise conflict from None
    now = utcnow()
    new_rows = [_recorded(execution, e, entry, signer, now, supersedes=current[e.field_id], reason=reason)
                for e in changed]
    session.add_all(new_rows)
    named = words.value_name(step, execution.instance, field_id)  # in the master record's words, never an id
    _invalidate(session, execution, signer, f"{named} corrected: {reason}", now)
    audit.flush(session)
    session.refresh(execution, ["values"])
    _recompute_dependents(session, batch, position, execution, {f"{step.id}.{e.field_id}" for e in changed},
                          signer=signer, why=f"recalculated after correction of {named}: {reason}")
    signature = signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.PERFORMED,
                                record=execution, comment=f"corrected {named}: {reason}")
    execution.performed_signature_id = signature.id
    execution.verified_signature_id = None
    signed_status = "awaiting_verification" if step.verification == "required" else "complete"
    sequence.STEP_STATUS.check(execution.status, signed_status)
    execution.status = signed_status
    for e in changed:
        deviations.out_of_limit(session, batch, execution, f"{step.title} (corrected)", e.limit_problems, signer)
    _settle(session, batch)
    audit.flush(session)
    return new_rows[0]


def _invalidate(session: Session, execution: StepExecution, signer: User, why: str, now: datetime) -> None:
    for signature_id in {execution.performed_signature_id, execution.verified_signature_id} - {None}:
        if session.get(SignatureInvalidation, signature_id) is None:
            session.add(SignatureInvalidation(signature_id=signature_id, invalidated_at=now,
                                              invalidated_by_id=signer.id, reason=why))


def _recompute_dependents(session: Session, batch: Batch, position: int, corrected: StepExecution,
                          changed_keys: set[str], *, signer: User, why: str) -> None:
    """Recalculate later steps whose calculations use a corrected value (and so on down the chain), in this
    record and in the batch's other records that name it (``RECORD.step.field``).

    A changed result is stored as a new value superseding the old one, the step's signatures no longer
    stand, and the step waits for a new "Performed by" signature (``resign_step``); an out-of-limit
    result opens a deviation. Nothing is silently left stale. A change that would reach a value the bags
    were made from is refused (nothing stored).
    """
    names = {pin.sop_version_id: (pin.position, calc.record_name(pin.sop_version.code))
             for pin in batch.master_records}
    changed = {f"{names[corrected.sop_version_id][1]}.{key}" for key in changed_keys}  # RECORD.step.field
    indexes: dict[int, dict] = {}
    for ex in batches.executions(session, batch):
        if ex.id == corrected.id or ex.sop_version_id not in names:
            continue
        where, record = names[ex.sop_version_id]
        index = indexes.setdefault(where, step_index(batches.records(batch)[where]))
        step = index[ex.step_id][1]
        calculated = [f for f in step.fields if f.type == "calculated"]
        uses = {name if name.count(".") == 2 else f"{record}.{name}"
                for f in calculated for name in calc_names(f.expression) if "." in name}
        if not calculated or not uses & changed:
            continue
        numbers = evaluation.inputs_from_batch(session, batch, where) | evaluation.context_numbers(session, batch)
        current = ex.current_values()
        numbers.update({fid: calc.calculation_input(v.number, v.moment) for fid, v in current.items()})
        now, rows, flagged = utcnow(), [], []
        for result in values.calculate(step.fields, numbers):
            f, parsed, problems = result.field, result.parsed, result.limit_problems
            if f.id in current and parsed.text != current[f.id].text:
                if result.refused:
                    raise ValidationFailed(*(f"REFUSED: this correction would make {step.title} {p}; the master "
                                             "record does not allow it. Nothing was stored." for p in problems))
                rows.append(RecordedValue(execution_id=ex.id, field_id=f.id, field_type=f.type, raw="",
                                          text=parsed.text, number=parsed.number, unit=f.unit,
                                          in_limits=not problems, limit_message="; ".join(problems) or None,
                                          entered_by_id=signer.id, entered_at=now, supersedes_id=current[f.id].id,
                                          correction_reason=why))
                flagged.append(problems)
        if not rows:
            continue
        if where != position and (dividing := _divided_at(session, batch, where, step)) is not None:
            raise ValidationFailed(
                f"REFUSED: this correction would change {step.title} ({names[ex.sop_version_id][1]}), from which "
                f"the bags were made at '{dividing}'; the product cannot be divided again. Nothing was stored.")
        for problems in flagged:
            deviations.out_of_limit(session, batch, ex, f"{step.title} (recalculated)", problems, signer)
        sequence.STEP_STATUS.check(ex.status, "needs_signature")
        ex.status = "needs_signature"
        session.add_all(rows)
        _invalidate(session, ex, signer, why, now)
        changed |= {f"{record}.{step.id}.{row.field_id}" for row in rows}
        audit.flush(session)
        session.refresh(ex, ["values"])


# --- sign again -----------------------------------------------------------------------------------------------

def resign_step(session: Session, execution: StepExecution, *, signer: User, password: str, username: str | None,
                require_username: bool, expected_row_version: int | None = None) -> None:
    """Sign a step again ("Performed by") after its values were recalculated from a correction."""
    guards.enforce(guard_resign_step(session, signer, execution))
    if expected_row_version is not None and execution.row_version != expected_row_version:
        raise StepConflict(execution.batch_id, execution.step_id, execution.instance)
    batch = execution.batch
    _position, step = batches.step_of(batch, execution)
    target = "awaiting_verification" if step.verification == "required" else "complete"
    with audit.reason_for(session, f"step {execution.step_id} #{execution.instance} signed again"):
        sequence.STEP_STATUS.check(execution.status, target)
        credentials = signatures.authenticate(signer, password=password, username=username,
                                              require_username=require_username)  # before the first write
        conflict = StepConflict(execution.batch_id, execution.step_id, execution.instance)
        execution.status = target
        try:
            session.flush()  # the claim
        except StaleDataError:
            raise conflict from None
        signature = signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.PERFORMED,
                                    record=execution, comment="signed again after recalculation")
        execution.performed_signature_id = signature.id
        execution.verified_signature_id = None
        _settle(session, batch)
        audit.flush(session)
