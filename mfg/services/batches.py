"""Batch execution: start a batch under effective master records, perform, verify and correct steps.

Every service's first write is its *claim* (inserting the step execution, or bumping its row version),
so that two operators acting on the same step at once serialise on that row: one succeeds, the other
gets ``StepConflict`` and the edge tells them who completed it and when. (Writing the claim first also
keeps the audit chain's head lock from being taken before it, which would deadlock on PostgreSQL.)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from ..domain import isbt128, sequence, values
from ..domain.canonical import content_hash
from ..domain.errors import ConflictError, NotFound, PermissionDenied, ValidationFailed
from ..domain.signing import Meaning
from ..domain.calc import referenced_names as calc_names
from ..domain.sop_schema import MasterRecord, Step, parse_definition, step_index
from ..models import (Batch, BatchMasterRecord, Deviation, RecordedValue, Signature, SignatureInvalidation, Subject,
                      SopVersion, StepExecution, User, utcnow)
from . import audit, masterdata, sequences, signatures, sops

OPERATOR = "operator"
# Every date-time a step records is an event that has happened (received, fed, formulated...): a time
# later than now is impossible and refused; a few minutes are allowed for a wall clock a little ahead.
FUTURE_TOLERANCE = timedelta(minutes=5)


class StepConflict(ConflictError):
    """Someone else completed or changed this step first; nothing of this attempt was stored."""

    def __init__(self, batch_id: int, step_id: str, instance: int) -> None:
        super().__init__(f"step '{step_id}' #{instance} was completed or changed by someone else at the same "
                         "moment; nothing was stored")
        self.batch_id, self.step_id, self.instance = batch_id, step_id, instance


@lru_cache(maxsize=64)
def _parse(sha256: str, content: str, source: str) -> MasterRecord:
    return parse_definition(content, source)


def definition_of(version: SopVersion) -> MasterRecord:
    """The parsed master record of a stored version (cached by its sha256: versions are immutable)."""
    return _parse(version.sha256, version.content, version.source_name)


def records(batch: Batch) -> list[MasterRecord]:
    return [definition_of(pin.sop_version) for pin in batch.master_records]


def start_batch(session: Session, *, codes: list[str], user: User, lot: str | None = None) -> Batch:
    """Start a batch pinned to the effective version of each master record code, in the order given."""
    if not user.has_role(OPERATOR):
        raise PermissionDenied("starting a batch needs the operator role")
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
    batch = Batch(lot=lot, status="created", created_by_id=user.id)
    batch.master_records = [BatchMasterRecord(position=i, sop_version_id=v.id) for i, v in enumerate(versions)]
    session.add(batch)
    audit.flush(session, reason="batch started")
    return batch


NK_RECORDS = ("NK-INTAKE", "NK-EXPAND", "NK-RELEASE", "NK-FORMULATE")


def start_nk_batch(session: Session, *, subject: Subject, user: User, codes: tuple[str, ...] = NK_RECORDS) -> Batch:
    """Open the batch record for a subject's expected collection: pins the effective NK master records,
    allocates the collection's DIN (the label the collection bag will carry) and links the subject's
    chain-of-identity id. Refused for a donor not determined eligible or a subject without a signed
    dose level. At intake the bag's DIN and the subject's COI are scanned against this batch."""
    from . import clinical

    problems = []
    try:
        clinical.require_eligible(subject.donor)
    except ValidationFailed as exc:
        problems.extend(exc.problems)
    if not subject.dose_level or not subject.dose_signature_id:
        problems.append(f"subject {subject.code} has no signed dose level")
    if problems:
        raise ValidationFailed(*problems)
    config = sops.trial_configuration(session)
    din = clinical.allocate_din(session, config.facility_identification_number)
    batch = start_batch(session, codes=list(codes), user=user, lot=din.text)
    batch.din, batch.subject = din.text, subject
    audit.flush(session, reason=f"batch opened for subject {subject.code}")
    return batch


def get(session: Session, batch_id: int) -> Batch:
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise NotFound(f"no batch with id {batch_id}")
    return batch


def executions(session: Session, batch: Batch) -> list[StepExecution]:
    return list(session.scalars(sa.select(StepExecution).where(StepExecution.batch_id == batch.id)
                                .order_by(StepExecution.id)))


def _position(batch: Batch, sop_version_id: int) -> int:
    return next(p.position for p in batch.master_records if p.sop_version_id == sop_version_id)


def state(session: Session, batch: Batch) -> dict[sequence.StepRef, list[sequence.InstanceState]]:
    return progress(session, batch)[0]


def progress(session: Session, batch: Batch) -> tuple[dict[sequence.StepRef, list[sequence.InstanceState]],
                                                      dict[sequence.StepRef, int]]:
    """The performed instances of every step, and the recorded counts of steps with ``repeat.count``."""
    return _progress(batch, executions(session, batch))


def _progress(batch: Batch, found: list[StepExecution]) -> tuple[dict[sequence.StepRef, list[sequence.InstanceState]],
                                                                 dict[sequence.StepRef, int]]:
    """``progress`` from executions already loaded (with their values, for the counts)."""
    done: dict[sequence.StepRef, list[sequence.InstanceState]] = defaultdict(list)
    for ex in found:
        done[sequence.StepRef(_position(batch, ex.sop_version_id), ex.step_id)].append(
            sequence.InstanceState(ex.instance, ex.status))
    counts: dict[sequence.StepRef, int] = {}
    for position, record in enumerate(records(batch)):
        for _stage, step in step_index(record).values():
            if step.repeat is None or step.repeat.count is None:
                continue
            ref_step, ref_field = step.repeat.count.split(".")
            version_id = batch.master_records[position].sop_version_id
            for ex in found:
                if ex.sop_version_id == version_id and ex.step_id == ref_step:
                    value = ex.current_values().get(ref_field)
                    if value is not None and value.number is not None:
                        counts[sequence.StepRef(position, step.id)] = int(value.number)
    return done, counts


def open_steps(session: Session, batch: Batch) -> list[sequence.Open]:
    if batch.status not in ("created", "in_progress"):
        return []
    return sequence.open_steps(records(batch), *progress(session, batch))


@dataclass
class StepInput:
    """What the operator entered on a step screen: raw text per field, comments, the step comment."""

    raw: dict[str, str]
    field_comments: dict[str, str] = field(default_factory=dict)
    comment: str = ""


@dataclass(frozen=True)
class Evaluated:
    field_id: str
    field_type: str
    raw: str
    parsed: values.Parsed
    unit: str | None
    limit_problems: list[str]


def _inputs_from_batch(session: Session, batch: Batch, position: int) -> dict[str, Decimal | None]:
    """Current numeric values of earlier steps, as ``step_id.field_id`` for calculations."""
    found: dict[str, Decimal | None] = {}
    version_id = batch.master_records[position].sop_version_id
    for ex in executions(session, batch):
        if ex.sop_version_id == version_id:
            for field_id, value in ex.current_values().items():
                found[f"{ex.step_id}.{field_id}"] = value.number
    return found


class IdentityMismatch(ValidationFailed):
    """A scan that does not match the identity the batch expects: a hard stop. Nothing of the step is
    stored; the edge rolls back, then records the event in the audit trail and opens a deviation
    (``record_identity_mismatch``). There is no override."""

    def __init__(self, batch_id: int, step_id: str, label: str, expected_name: str, scanned: str) -> None:
        super().__init__(f"IDENTITY MISMATCH: {label}: the scanned identifier does not match the {expected_name} "
                         "of this batch. Stop: do not continue with this container. A deviation has been opened; "
                         "call QA.")
        self.batch_id, self.step_id, self.label = batch_id, step_id, label
        self.expected_name, self.scanned = expected_name, scanned


def _identity(batch: Batch, expected: str, scanned: str) -> tuple[str | None, str]:
    """(what the batch expects, the scanned identifier normalised the same way) for a scan field.

    DINs may be scanned (``=`` + DIN + flags) or typed with their check character; COI identifiers
    likewise. A malformed identifier raises ``ValidationFailed`` (a misread, not a mismatch).
    """
    if expected == "batch.din":
        din = isbt128.parse_din_barcode(scanned)[0] if scanned.startswith(isbt128.DIN_PREFIX) \
            else isbt128.parse_din_keyboard(scanned)
        return batch.din, din.text
    if expected == "subject.coi":
        return (batch.subject.coi if batch.subject else None), isbt128.parse_coi(scanned).text
    if expected == "batch.lot":
        return batch.lot, scanned
    if expected == "bag.product_code":
        from . import bags  # bags imports this module's neighbours; imported late to keep the cycle out

        return None, bags.normalise_scan(scanned)
    return None, scanned


def context_numbers(session: Session, batch: Batch) -> dict[str, Decimal | None]:
    """The subject and trial values a calculation may use (``sop_schema.CONTEXT_NAMES``): the subject's
    weight and signed dose level, and the trial configuration version that dose was assigned under."""
    subject = batch.subject
    if subject is None:
        return {}
    numbers: dict[str, Decimal | None] = {
        "subject.weight_kg": subject.weight_kg,
        "subject.dose_per_kg": Decimal(subject.dose_cells_per_kg) if subject.dose_cells_per_kg else None}
    if subject.trial_config_version_id:
        config = sops.definition(session.get(SopVersion, subject.trial_config_version_id))
        numbers |= {"trial.cd3_limit_per_kg": Decimal(config.cd3_limit_per_kg),
                    "trial.endotoxin_limit_eu_per_kg": Decimal(str(config.endotoxin_limit_eu_per_kg)),
                    "trial.max_bag_volume_ml": Decimal(str(config.max_bag_volume_ml)),
                    "trial.apheresis_hold_hours": Decimal(str(config.apheresis_hold_hours)),
                    "trial.shelf_life_hours": Decimal(str(config.shelf_life_hours))}
    return numbers


def record_identity_mismatch(session: Session, mismatch: IdentityMismatch, user: User) -> Deviation:
    """After the refused step was rolled back: the audit entry and the deviation of an identity stop."""
    batch = get(session, mismatch.batch_id)
    audit.record_event(session, "identity.mismatch", user=user, entity_type="batch", entity_id=batch.id,
                       details={"step": mismatch.step_id, "field": mismatch.label,
                                "expected": mismatch.expected_name, "scanned": mismatch.scanned[:200]},
                       reason="identity check failed: hard stop")
    deviation = _open_deviation(session, batch, None, "identity",
                                f"Identity mismatch at step '{mismatch.step_id}' ({mismatch.label}): scanned "
                                f"'{mismatch.scanned[:60]}' does not match the batch's {mismatch.expected_name}",
                                user)
    deviation.step_id = mismatch.step_id
    audit.flush(session, reason="identity check failed: hard stop")
    return deviation


def _bag_scan(session: Session, batch: Batch, position: int, step: Step, instance: int, f, scanned: str,
              raw: str) -> tuple[str | None, IdentityMismatch | None]:
    """A scan of one of the batch's bags: it must be one of them (else an identity stop), and each bag is
    scanned once in this step (a bag scanned in another instance is refused, nothing stored)."""
    from . import bags

    if f.expected != "bag.product_code":
        return f"{f.label}: the master record expects '{f.expected}', which this batch does not define", None
    known = bags.expected_codes(session, batch)
    if not known:
        return f"{f.label}: this batch has no bags yet to scan", None
    if scanned not in known:
        return None, IdentityMismatch(batch.id, step.id, f.label, "bags (product code and division)", raw)
    version_id = batch.master_records[position].sop_version_id
    for ex in executions(session, batch):
        if ex.sop_version_id == version_id and ex.step_id == step.id and ex.instance != instance:
            earlier = ex.current_values().get(f.id)
            if earlier is not None and bags.normalise_scan(earlier.text) == scanned:
                label = step.repeat.label if step.repeat else "instance"
                return (f"{f.label}: bag {known[scanned].division} was already scanned in {label} {ex.instance}; "
                        "scan the next bag. Nothing was stored."), None
    return None, None


def evaluate(session: Session, batch: Batch, position: int, step: Step, entry: StepInput,
             tz: ZoneInfo, instance: int = 1) -> list[Evaluated]:
    """Parse every field (collecting every malformed entry), compute calculations, judge limits.

    Raises ``ValidationFailed`` listing every problem when anything is malformed or a check refuses it;
    then nothing is stored.
    """
    problems: list[str] = []
    evaluated: list[Evaluated] = []
    numbers: dict[str, Decimal | None] = _inputs_from_batch(session, batch, position)
    numbers |= context_numbers(session, batch)
    mismatches: list[IdentityMismatch] = []
    today = utcnow().date()
    for f in step.fields:
        if f.type == "calculated":
            continue
        raw = (entry.raw.get(f.id) or "").strip()
        kind = values.KINDS[f.type]
        try:
            parsed = kind.parse(f, raw, tz=tz)
        except ValidationFailed as exc:
            problems.extend(exc.problems)
            continue
        numbers[f.id] = parsed.number
        if parsed.moment is not None and parsed.moment > utcnow() + FUTURE_TOLERANCE:
            problems.append(f"{f.label}: {raw} is in the future; record the time it happened")
            continue
        if parsed.text:
            if f.type == "equipment":
                problems.extend(masterdata.equipment_problems(session, parsed.text, f.equipment_type, today))
            elif f.type == "material":
                problems.extend(masterdata.lot_problems(session, f.material, parsed.text, today))
            elif f.type == "scan":
                try:
                    expected, scanned = _identity(batch, f.expected, parsed.text)
                except ValidationFailed as exc:
                    problems.extend(f"{f.label}: {p}" for p in exc.problems)
                    continue
                if f.expected.startswith("bag."):
                    problem, mismatch = _bag_scan(session, batch, position, step, instance, f, scanned, parsed.text)
                    problems.extend([problem] if problem else [])
                    mismatches.extend([mismatch] if mismatch else [])
                elif expected is None:
                    problems.append(f"{f.label}: the master record expects '{f.expected}', which this batch "
                                    "does not define")
                elif scanned != expected:
                    mismatches.append(IdentityMismatch(batch.id, step.id, f.label, f.expected, parsed.text))
        evaluated.append(Evaluated(f.id, f.type, raw, parsed, getattr(f, "unit", None),
                                   kind.limit_problems(f, parsed)))
    if mismatches:
        raise mismatches[0]  # the hard stop comes before any other problem
    if problems:
        raise ValidationFailed(*problems)
    refused: list[str] = []
    for f in step.fields:
        if f.type == "calculated":
            parsed = values.KINDS["calculated"].compute(f, numbers)
            numbers[f.id] = parsed.number
            limit_problems = values.KINDS["calculated"].limit_problems(f, parsed)
            if limit_problems and f.refuse_outside_limits:
                refused.extend(f"REFUSED: {p}. The master record does not allow this value; nothing was stored."
                               for p in limit_problems)
            evaluated.append(Evaluated(f.id, f.type, "", parsed, f.unit, limit_problems))
    if refused:
        raise ValidationFailed(*refused)
    labels = {f.id: f.label for f in step.fields}
    missing_comments = [f"{labels[e.field_id]}: an out-of-limit value needs a comment "
                        f"({'; '.join(e.limit_problems)})"
                        for e in evaluated if e.limit_problems and not entry.field_comments.get(e.field_id, "").strip()]
    if step.comment_required and not entry.comment.strip():
        missing_comments.append("This step needs a comment.")
    if missing_comments:
        raise ValidationFailed(*missing_comments)
    return evaluated


def _open_deviation(session: Session, batch: Batch, execution: StepExecution | None, origin: str,
                    description: str, user: User) -> Deviation:
    number = sequences.next_value(session, f"deviation:{utcnow().year}")
    deviation = Deviation(number=f"DEV-{utcnow().year}-{number:04d}", batch_id=batch.id,
                          execution_id=execution.id if execution else None,
                          step_id=execution.step_id if execution else None, origin=origin,
                          description=description, status="open", opened_by_id=user.id)
    session.add(deviation)
    return deviation


def _window_reference(session: Session, batch: Batch, position: int, step: Step):
    """The recorded date-time a step's time window counts from (its latest value), or None."""
    return _recorded_moment(session, batch, position, step.time_window.after)


def _recorded_moment(session: Session, batch: Batch, position: int, reference: str):
    """The latest recorded date-time of ``<step_id>.<field_id>`` in the record at ``position``, or None."""
    ref_step, ref_field = reference.split(".")
    version_id = batch.master_records[position].sop_version_id
    return session.scalar(
        sa.select(RecordedValue.moment).join(StepExecution)
        .where(StepExecution.batch_id == batch.id, StepExecution.sop_version_id == version_id,
               StepExecution.step_id == ref_step, RecordedValue.field_id == ref_field)
        .order_by(RecordedValue.id.desc()).limit(1))


@dataclass(frozen=True)
class Deadline:
    """An open step whose time window is running: what the batch page counts down to."""

    step_title: str
    window: str
    due_at: object  # aware UTC datetime
    overdue: bool
    remaining_minutes: int


def deadlines(session: Session, batch: Batch) -> list[Deadline]:
    """Countdowns for every open step with a time window whose reference time is recorded (the hold
    time from end of collection, for example), soonest first. Derived from the master records only."""
    now = utcnow()
    found = []
    for item in open_steps(session, batch):
        window = item.step.time_window
        if window is None:
            continue
        reference = _window_reference(session, batch, item.ref.position, item.step)
        hours = window_hours(session, batch, window.max_hours)
        if reference is None or hours is None:
            continue
        due = reference + timedelta(hours=float(hours))
        found.append(Deadline(item.step.title, f"at most {float(hours):g} h after {window.after}", due,
                              due < now, int((due - now).total_seconds() // 60)))
    if batch.status not in ("rejected",):
        from . import bags

        made = bags.of_batch(session, batch)
        if made:
            due = min(bag.expires_at for bag in made)
            found.append(Deadline("Product expiry", f"{len(made)} bag{'s' if len(made) != 1 else ''}, shelf life "
                                  "from formulation (trial configuration)", due, due < now,
                                  int((due - now).total_seconds() // 60)))
    return sorted(found, key=lambda d: d.due_at)


def window_hours(session: Session, batch: Batch, hours: float | str) -> Decimal | None:
    """A time window's hours: a number in the master record, or a context name such as the trial
    configuration's ``trial.apheresis_hold_hours`` (None when the batch has no such context)."""
    if isinstance(hours, str):
        return context_numbers(session, batch).get(hours)
    return Decimal(str(hours))


def _time_window_problem(session: Session, batch: Batch, position: int, step: Step,
                         evaluated: list[Evaluated]) -> str | None:
    """Outside its window: the time recorded in the step's ``at`` field (when it really happened), or the
    time it is signed, is not within the master record's hours of the reference time."""
    window = step.time_window
    if window is None:
        return None
    reference = _window_reference(session, batch, position, step)
    if reference is None:
        return None
    max_hours = window_hours(session, batch, window.max_hours)
    if max_hours is None:
        return (f"step '{step.id}' has a time window of {window.max_hours}, which this batch does not define; "
                "the window could not be checked")
    happened = next((e.parsed.moment for e in evaluated if e.field_id == window.at), None) or utcnow()
    elapsed = happened - reference
    if elapsed > timedelta(hours=float(max_hours)) or elapsed < timedelta(hours=window.min_hours):
        hours = elapsed.total_seconds() / 3600
        what = f"'{step.id}.{window.at}' is" if window.at else f"step '{step.id}' performed"
        return (f"{what} {hours:.2f} h after {window.after}; the master record allows "
                f"{window.min_hours:g}-{float(max_hours):g} h")
    return None


def perform_step(session: Session, batch: Batch, *, position: int, step_id: str, instance: int,
                 entry: StepInput, signer: User, password: str, username: str | None, require_username: bool,
                 tz: ZoneInfo) -> StepExecution:
    """Record a step's values and sign it "Performed by". Out-of-limit values and missed time windows
    are stored, flagged and open deviations; malformed input stores nothing."""
    with audit.reason_for(session, f"step {step_id} #{instance} performed"):
        return _perform(session, batch, position=position, step_id=step_id, instance=instance, entry=entry,
                        signer=signer, password=password, username=username, require_username=require_username,
                        tz=tz)


def _perform(session: Session, batch: Batch, *, position: int, step_id: str, instance: int, entry: StepInput,
             signer: User, password: str, username: str | None, require_username: bool,
             tz: ZoneInfo) -> StepExecution:
    if not signer.has_role(OPERATOR):
        raise PermissionDenied("performing a step needs the operator role")
    if batch.status not in ("created", "in_progress"):
        raise ValidationFailed(f"batch {batch.lot} is {batch.status.replace('_', ' ')}: no step can be performed")
    if find_execution(session, batch, position, step_id, instance) is not None:
        raise StepConflict(batch.id, step_id, instance)  # someone else was first (the edge says who)
    definitions = records(batch)
    opened = sequence.require_open(definitions, state(session, batch), sequence.StepRef(position, step_id),
                                   instance)
    step = opened.step
    evaluated = evaluate(session, batch, position, step, entry, tz, instance)
    planned_bags = _plan_bags(session, batch, position, step, evaluated)
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)  # before the first write
    now = utcnow()
    execution = StepExecution(batch_id=batch.id, sop_version_id=batch.master_records[position].sop_version_id,
                              stage_id=opened.stage.id, step_id=step.id, instance=instance,
                              definition_sha256=content_hash(step.model_dump(mode="json")),
                              status="awaiting_verification" if step.verification == "required" else "complete",
                              comment=entry.comment.strip() or None, performed_by_id=signer.id, performed_at=now)
    session.add(execution)
    conflict = StepConflict(batch.id, step_id, instance)  # built now: after a failed flush nothing may load
    try:
        session.flush()  # the claim: the unique key refuses a second performer of this instance
    except IntegrityError:
        raise conflict from None
    for e in evaluated:
        session.add(RecordedValue(execution_id=execution.id, field_id=e.field_id, field_type=e.field_type,
                                  raw=e.raw, text=e.parsed.text, number=e.parsed.number, moment=e.parsed.moment,
                                  unit=e.unit, in_limits=not e.limit_problems,
                                  limit_message="; ".join(e.limit_problems) or None,
                                  comment=entry.field_comments.get(e.field_id, "").strip() or None,
                                  entered_by_id=signer.id, entered_at=now))
    if planned_bags is not None:
        from . import bags

        bags.create(session, batch, execution, planned_bags)
    audit.flush(session)
    session.refresh(execution, ["values"])
    signature = signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.PERFORMED,
                                record=execution)
    execution.performed_signature_id = signature.id
    for e in evaluated:
        if e.limit_problems:
            _open_deviation(session, batch, execution, "out_of_limit",
                            f"{step.title}: {'; '.join(e.limit_problems)}", signer)
    late = _time_window_problem(session, batch, position, step, evaluated)
    if late:
        _open_deviation(session, batch, execution, "time_window", late, signer)
    _settle(session, batch)
    audit.flush(session)
    return execution


def _plan_bags(session: Session, batch: Batch, position: int, step: Step, evaluated: list[Evaluated]):
    """For a step that divides the product: the bags its recorded dose plan gives (``bags.plan``)."""
    division = step.divides_product
    if division is None:
        return None
    from . import bags

    numbers = _inputs_from_batch(session, batch, position) | context_numbers(session, batch)
    own = {e.field_id: e.parsed.number for e in evaluated}
    numbers |= own | {f"{step.id}.{field_id}": number for field_id, number in own.items()}
    return bags.plan(batch, division, numbers, _recorded_moment(session, batch, position, division.expires_from),
                     own.get(division.count))


def _move(batch: Batch, target: str) -> None:
    """Every batch status change goes through the one transition table."""
    if batch.status != target:
        sequence.BATCH_STATUS.check(batch.status, target)
        batch.status = target


def _settle(session: Session, batch: Batch) -> None:
    """After a step changed: in progress, or awaiting QA review once every stage is complete."""
    if batch.status in ("created", "awaiting_review"):
        _move(batch, "in_progress")
    session.flush()  # the step's new status must be in the state read below
    # a conditionally released batch stays so while its pending result is entered and verified
    if batch.status == "in_progress" and sequence.all_complete(records(batch), *progress(session, batch)):
        _move(batch, "awaiting_review")


def verify_step(session: Session, execution: StepExecution, *, signer: User, password: str,
                username: str | None, require_username: bool, expected_row_version: int | None = None) -> None:
    """A second operator signs "Verified by". The performer can never verify their own step."""
    with audit.reason_for(session, f"step {execution.step_id} #{execution.instance} verified"):
        _verify(session, execution, signer=signer, password=password, username=username,
                require_username=require_username, expected_row_version=expected_row_version)


def _verify(session: Session, execution: StepExecution, *, signer: User, password: str, username: str | None,
            require_username: bool, expected_row_version: int | None) -> None:
    if not signer.has_role(OPERATOR):
        raise PermissionDenied("verifying a step needs the operator role")
    if signer.id == execution.performed_by_id or signer.id in performers(session, execution):
        raise PermissionDenied("You performed this step: a different operator must verify it.")
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


def _step_definition(batch: Batch, execution: StepExecution) -> tuple[int, Step]:
    position = _position(batch, execution.sop_version_id)
    return position, step_index(records(batch)[position])[execution.step_id][1]


def correct_value(session: Session, execution: StepExecution, *, field_id: str, raw: str, reason: str,
                  field_comment: str, signer: User, password: str, username: str | None,
                  require_username: bool, tz: ZoneInfo, expected_row_version: int | None = None) -> RecordedValue:
    """Correct one recorded value: the original stays, the new value supersedes it with a reason.

    The step's earlier signatures no longer stand (recorded as invalidations); the corrector signs the
    corrected step "Performed by" and, where the master record requires it, a different operator must
    verify it again. Calculated fields of the step are recomputed from the corrected inputs.
    """
    if not signer.has_role(OPERATOR):
        raise PermissionDenied("correcting a step needs the operator role")
    if not reason.strip():
        raise ValidationFailed("A correction needs a reason.")
    with audit.reason_for(session, f"correction: {reason.strip()}"):
        return _correct(session, execution, field_id=field_id, raw=raw, reason=reason, field_comment=field_comment,
                        signer=signer, password=password, username=username, require_username=require_username,
                        tz=tz, expected_row_version=expected_row_version)


def _correct(session: Session, execution: StepExecution, *, field_id: str, raw: str, reason: str,
             field_comment: str, signer: User, password: str, username: str | None, require_username: bool,
             tz: ZoneInfo, expected_row_version: int | None) -> RecordedValue:
    batch = execution.batch
    if batch.status == "conditionally_released" and not _pending_value(batch, execution, field_id):
        raise ValidationFailed(f"batch {batch.lot} is conditionally released: only a pending result may be "
                               "entered (as a correction of its 'pending' value)")
    if batch.status not in ("created", "in_progress", "awaiting_review", "conditionally_released"):
        raise ValidationFailed(f"batch {batch.lot} is {batch.status.replace('_', ' ')}: its record is closed")
    if expected_row_version is not None and execution.row_version != expected_row_version:
        raise StepConflict(execution.batch_id, execution.step_id, execution.instance)
    position, step = _step_definition(batch, execution)
    _refuse_after_division(session, batch, position, step)
    current = execution.current_values()
    if field_id not in current:
        raise NotFound(f"step '{step.id}' has no recorded field '{field_id}'")
    target = next(f for f in step.fields if f.id == field_id)
    if target.type == "calculated":
        raise ValidationFailed("A calculated value is corrected by correcting its inputs.")
    entry = StepInput(raw={fid: v.raw for fid, v in current.items()} | {field_id: raw},
                      field_comments={fid: v.comment or "" for fid, v in current.items()} | {field_id: field_comment},
                      comment=execution.comment or "")
    evaluated = {e.field_id: e for e in evaluate(session, batch, position, step, entry, tz, execution.instance)}
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
    new_rows = []
    for e in changed:
        row = RecordedValue(execution_id=execution.id, field_id=e.field_id, field_type=e.field_type, raw=e.raw,
                            text=e.parsed.text, number=e.parsed.number, moment=e.parsed.moment, unit=e.unit,
                            in_limits=not e.limit_problems, limit_message="; ".join(e.limit_problems) or None,
                            comment=entry.field_comments.get(e.field_id, "").strip() or None,
                            entered_by_id=signer.id, entered_at=now, supersedes_id=current[e.field_id].id,
                            correction_reason=reason.strip())
        session.add(row)
        new_rows.append(row)
    _invalidate(session, execution, signer, f"value '{field_id}' corrected: {reason.strip()}", now)
    audit.flush(session)
    session.refresh(execution, ["values"])
    _recompute_dependents(session, batch, position, execution, {f"{step.id}.{e.field_id}" for e in changed},
                          signer=signer, why=f"recalculated after correction of {step.id}.{field_id}: "
                                             f"{reason.strip()}")
    signature = signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.PERFORMED,
                                record=execution, comment=f"corrected {field_id}: {reason.strip()}")
    execution.performed_signature_id = signature.id
    execution.verified_signature_id = None
    signed_status = "awaiting_verification" if step.verification == "required" else "complete"
    sequence.STEP_STATUS.check(execution.status, signed_status)
    execution.status = signed_status
    for e in changed:
        if e.limit_problems:
            _open_deviation(session, batch, execution, "out_of_limit",
                            f"{step.title} (corrected): {'; '.join(e.limit_problems)}", signer)
    _settle(session, batch)
    audit.flush(session)
    return new_rows[0]


def _pending_value(batch: Batch, execution: StepExecution, field_id: str) -> bool:
    """The field's current value is one of its master record's ``pending`` answers (a result to come)."""
    _position_, step = _step_definition(batch, execution)
    target = next((f for f in step.fields if f.id == field_id), None)
    current = execution.current_values().get(field_id)
    return bool(target is not None and getattr(target, "pending", None) and current is not None
                and current.text in target.pending)


def _refuse_after_division(session: Session, batch: Batch, position: int, step: Step) -> None:
    """Once the product is divided into bags, the values the bags were made from (the dividing step and
    every step before it in its record) can no longer be corrected: the bags are filled and labelled."""
    from . import bags

    order = step_index(records(batch)[position])
    dividing = [step_id for step_id, (_stage, candidate) in order.items() if candidate.divides_product]
    if not dividing or not bags.of_batch(session, batch):
        return
    ids = list(order)
    if ids.index(step.id) <= ids.index(dividing[0]):
        raise ValidationFailed(
            f"The product was divided into bags from the values up to step '{dividing[0]}'; correcting "
            f"'{step.id}' would change bags already filled. Nothing was stored: report it to QA as a deviation.")


def _invalidate(session: Session, execution: StepExecution, signer: User, why: str, now) -> None:
    for signature_id in {execution.performed_signature_id, execution.verified_signature_id} - {None}:
        if session.get(SignatureInvalidation, signature_id) is None:
            session.add(SignatureInvalidation(signature_id=signature_id, invalidated_at=now,
                                              invalidated_by_id=signer.id, reason=why))


def _recompute_dependents(session: Session, batch: Batch, position: int, corrected: StepExecution,
                          changed_keys: set[str], *, signer: User, why: str) -> None:
    """Recalculate later steps whose calculations use a corrected value (and so on down the chain).

    A changed result is stored as a new value superseding the old one, the step's signatures no longer
    stand, and the step waits for a new "Performed by" signature (``resign_step``); an out-of-limit
    result opens a deviation. Nothing is silently left stale.
    """
    index = step_index(records(batch)[position])
    version_id = batch.master_records[position].sop_version_id
    for ex in executions(session, batch):
        if ex.id == corrected.id or ex.sop_version_id != version_id:
            continue
        step = index[ex.step_id][1]
        calculated = [f for f in step.fields if f.type == "calculated"]
        uses = {name for f in calculated for name in calc_names(f.expression)}
        if not calculated or not uses & changed_keys:
            continue
        numbers = _inputs_from_batch(session, batch, position)
        current = ex.current_values()
        numbers.update({fid: v.number for fid, v in current.items()})
        now, rows = utcnow(), []
        for f in calculated:
            parsed = values.KINDS["calculated"].compute(f, numbers)
            numbers[f.id] = parsed.number
            if f.id in current and parsed.text != current[f.id].text:
                problems = values.KINDS["calculated"].limit_problems(f, parsed)
                if problems and f.refuse_outside_limits:
                    raise ValidationFailed(*(f"REFUSED: this correction would make {step.title} {p}; the master "
                                             "record does not allow it. Nothing was stored." for p in problems))
                rows.append(RecordedValue(execution_id=ex.id, field_id=f.id, field_type=f.type, raw="",
                                          text=parsed.text, number=parsed.number, unit=f.unit,
                                          in_limits=not problems, limit_message="; ".join(problems) or None,
                                          entered_by_id=signer.id, entered_at=now, supersedes_id=current[f.id].id,
                                          correction_reason=why))
                if problems:
                    _open_deviation(session, batch, ex, "out_of_limit",
                                    f"{step.title} (recalculated): {'; '.join(problems)}", signer)
        if not rows:
            continue
        sequence.STEP_STATUS.check(ex.status, "needs_signature")
        ex.status = "needs_signature"
        session.add_all(rows)
        _invalidate(session, ex, signer, why, now)
        changed_keys |= {f"{step.id}.{row.field_id}" for row in rows}
        audit.flush(session)
        session.refresh(ex, ["values"])


def resign_step(session: Session, execution: StepExecution, *, signer: User, password: str, username: str | None,
                require_username: bool, expected_row_version: int | None = None) -> None:
    """Sign a step again ("Performed by") after its values were recalculated from a correction."""
    if not signer.has_role(OPERATOR):
        raise PermissionDenied("signing a step needs the operator role")
    if execution.status != "needs_signature":
        raise ValidationFailed("This step does not need a new signature.")
    if expected_row_version is not None and execution.row_version != expected_row_version:
        raise StepConflict(execution.batch_id, execution.step_id, execution.instance)
    batch = execution.batch
    _position_, step = _step_definition(batch, execution)
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


def performers(session: Session, execution: StepExecution) -> set[int]:
    """Everyone who ever signed this step "Performed by" (original or after a correction)."""
    return set(session.scalars(sa.select(Signature.user_id).where(
        Signature.record_type == StepExecution.__tablename__, Signature.record_id == str(execution.id),
        Signature.meaning == Meaning.PERFORMED.value)))


def deviations(session: Session, batch: Batch) -> list[Deviation]:
    return list(session.scalars(sa.select(Deviation).where(Deviation.batch_id == batch.id).order_by(Deviation.id)))


def find_execution(session: Session, batch: Batch, position: int, step_id: str, instance: int) -> StepExecution | None:
    return session.scalar(sa.select(StepExecution).where(
        StepExecution.batch_id == batch.id,
        StepExecution.sop_version_id == batch.master_records[position].sop_version_id,
        StepExecution.step_id == step_id, StepExecution.instance == instance))


def get_execution(session: Session, batch: Batch, execution_id: int) -> StepExecution:
    execution = session.get(StepExecution, execution_id)
    if execution is None or execution.batch_id != batch.id:
        raise NotFound(f"no step execution {execution_id} in batch {batch.lot}")
    return execution


ACTIVE = ("created", "in_progress", "awaiting_review")


def active_batches(session: Session) -> list[Batch]:
    """Batches not yet decided, with what their screens show loaded up front (a fixed number of queries
    however many batches there are)."""
    return list(session.scalars(
        sa.select(Batch).where(Batch.status.in_(ACTIVE)).order_by(Batch.id)
        .options(so.selectinload(Batch.master_records).selectinload(BatchMasterRecord.sop_version),
                 so.joinedload(Batch.subject), so.joinedload(Batch.created_by))))


def decided_batches(session: Session, *, before_id: int | None = None,
                    limit: int = 50) -> tuple[list[Batch], int | None]:
    """Decided batches (released, conditionally released, rejected), newest first, keyset-paginated on the
    id: the page (with subjects and starters, in the same query) and the cursor of the next one."""
    query = sa.select(Batch).where(Batch.status.not_in(ACTIVE))
    if before_id is not None:
        query = query.where(Batch.id < before_id)
    found = list(session.scalars(query.order_by(Batch.id.desc()).limit(limit + 1)
                                 .options(so.joinedload(Batch.subject), so.joinedload(Batch.created_by))))
    return found[:limit], (found[limit - 1].id if len(found) > limit else None)


def _counted_steps(batches_: list[Batch]) -> set[tuple[int, str]]:
    """(master record version, step id) of the steps whose recorded value sets how often another step
    repeats (``repeat.count``): the only values ``_progress`` reads."""
    counted = set()
    for batch in batches_:
        for pin, record in zip(batch.master_records, records(batch)):
            for _stage, step in step_index(record).values():
                if step.repeat is not None and step.repeat.count is not None:
                    counted.add((pin.sop_version_id, step.repeat.count.split(".")[0]))
    return counted


def _executions_of(session: Session, batches_: list[Batch], *,
                   all_values: bool = False) -> dict[int, list[StepExecution | sa.Row]]:
    """The executions of these batches, by batch, in id order.

    With ``all_values``: every execution with every value (two queries), for a page that shows them. Without:
    for lists of batches, plain rows (id, batch_id, sop_version_id, step_id, instance, status: what the
    queue and ``_progress`` read), except the executions of steps that set how often another step repeats
    (``repeat.count``), loaded with their values because ``_progress`` reads them; two queries, and no ORM
    object per execution (thousands of them for a few dozen active batches, each request).
    """
    found: dict[int, list[StepExecution | sa.Row]] = {batch.id: [] for batch in batches_}
    if not batches_:
        return found
    of_batches = StepExecution.batch_id.in_(list(found))
    if all_values:
        for ex in session.scalars(sa.select(StepExecution).where(of_batches).order_by(StepExecution.id)
                                  .options(so.selectinload(StepExecution.values))):
            found[ex.batch_id].append(ex)
        return found
    rows = session.execute(sa.select(StepExecution.id, StepExecution.batch_id, StepExecution.sop_version_id,
                                     StepExecution.step_id, StepExecution.instance, StepExecution.status)
                           .where(of_batches).order_by(StepExecution.id)).all()
    counted = _counted_steps(batches_)
    needed = [row.id for row in rows if (row.sop_version_id, row.step_id) in counted]
    loaded = {ex.id: ex for ex in session.scalars(
        sa.select(StepExecution).where(StepExecution.id.in_(needed))
        .options(so.joinedload(StepExecution.values))).unique()} if needed else {}
    for row in rows:
        found[row.batch_id].append(loaded.get(row.id, row))
    return found


def _performers_of(session: Session, executions_: list[StepExecution | sa.Row]) -> dict[int, set[int]]:
    """``performers`` of many executions in one query."""
    found: dict[int, set[int]] = {ex.id: set() for ex in executions_}
    if executions_:
        for record_id, user_id in session.execute(sa.select(Signature.record_id, Signature.user_id).where(
                Signature.record_type == StepExecution.__tablename__, Signature.meaning == Meaning.PERFORMED.value,
                Signature.record_id.in_([str(ex.id) for ex in executions_]))):
            found[int(record_id)].add(user_id)
    return found


def _open_of(batch: Batch, found: list[StepExecution | sa.Row]) -> list[sequence.Open]:
    """``open_steps`` from executions already loaded."""
    if batch.status not in ("created", "in_progress"):
        return []
    return sequence.open_steps(records(batch), *_progress(batch, found))


def _furthest_stage(batch: Batch, opened: list[sequence.Open]) -> str:
    """The stage a batch has reached: its furthest open step's, or its status."""
    return opened[-1].stage.title if opened else batch.status.replace("_", " ")


@dataclass(frozen=True)
class QueueItem:
    batch: Batch
    kind: str  # "perform", "verify" or "sign"
    title: str
    url_args: dict
    stage: str = ""


@dataclass(frozen=True)
class Overview:
    """The work queue screen: the user's next steps and the active batches with the stage each has reached."""

    queue: list[QueueItem]
    active: list[Batch]  # NK batches by subject, then the rest
    stages: dict[int, str]  # batch id -> stage reached


def overview(session: Session, user: User) -> Overview:
    """The user's next steps across the active batches (steps open to perform, and steps waiting for a
    verification this user may give: not their own) and those batches with their stages, in a fixed
    number of queries however many batches there are, decided ones never read."""
    active = sorted(active_batches(session), key=lambda b: (b.subject is None, b.subject.code if b.subject else "",
                                                            b.id))
    found = _executions_of(session, active)
    opened = {batch.id: _open_of(batch, found[batch.id]) for batch in active}
    waiting = [ex for batch in active for ex in found[batch.id] if ex.status == "awaiting_verification"]
    performed_by = _performers_of(session, waiting)
    items: list[QueueItem] = []
    for batch in sorted(active, key=lambda b: b.id):
        for item in opened[batch.id]:
            title = item.step.title + (f" ({item.step.repeat.label} {item.instance})" if item.step.repeat else "")
            items.append(QueueItem(batch, "perform", title, {"batch_id": batch.id, "position": item.ref.position,
                                                             "step_id": item.ref.step_id,
                                                             "instance": item.instance}, item.stage.title))
        for ex in found[batch.id]:
            if ex.status in ("awaiting_verification", "needs_signature"):
                step = step_index(records(batch)[_position(batch, ex.sop_version_id)])[ex.step_id][1]
                title = step.title + (f" ({step.repeat.label} {ex.instance})" if step.repeat else "")
                if ex.status == "needs_signature":
                    items.append(QueueItem(batch, "sign", f"Sign again: {title}",
                                           {"batch_id": batch.id, "execution_id": ex.id}))
                elif user.id not in performed_by[ex.id]:
                    items.append(QueueItem(batch, "verify", f"Verify: {title}",
                                           {"batch_id": batch.id, "execution_id": ex.id}))
    return Overview(items, active, {batch.id: _furthest_stage(batch, opened[batch.id]) for batch in active})


@dataclass(frozen=True)
class BatchPage:
    """What the batch page shows."""

    records: list[MasterRecord]
    by_step: dict[tuple[int, str], list[StepExecution]]  # (position, step id) -> its executions
    open_refs: dict[tuple[int, str], int]  # (position, step id) -> the instance open now
    progress: dict[tuple[int, str], tuple[int, int]]  # (position, stage id) -> (steps complete, steps)
    deadlines: list[Deadline]
    deviations: list[Deviation]
    bags: list
    charts: list


def batch_page(session: Session, batch: Batch) -> BatchPage:
    """The batch page in a fixed number of queries however many steps were recorded: the executions and
    all their values are loaded in two queries first, so the readers below find them in the session."""
    from . import bags, growth  # they import this module

    # its pinned records (two queries, not one per pinned record), subject and starter (joined)
    session.scalars(sa.select(Batch).where(Batch.id == batch.id).options(
        so.selectinload(Batch.master_records).selectinload(BatchMasterRecord.sop_version),
        so.joinedload(Batch.subject), so.joinedload(Batch.created_by))).one()
    loaded = _executions_of(session, [batch], all_values=True)[batch.id]
    records_ = records(batch)
    by_step: dict[tuple[int, str], list[StepExecution]] = {}
    for ex in loaded:
        by_step.setdefault((_position(batch, ex.sop_version_id), ex.step_id), []).append(ex)
    progress_ = {(position, stage.id): (sum(1 for st in stage.steps if by_step.get((position, st.id)) and all(
        ex.status == "complete" for ex in by_step[(position, st.id)])), len(stage.steps))
        for position, record in enumerate(records_) for stage in record.stages}
    return BatchPage(records_, by_step, {(o.ref.position, o.ref.step_id): o.instance for o in _open_of(batch, loaded)},
                     progress_, deadlines(session, batch), deviations(session, batch), bags.of_batch(session, batch),
                     growth.charts(session, batch))


def invalidated_signature_ids(session: Session, batch: Batch) -> set[int]:
    return set(session.scalars(sa.select(SignatureInvalidation.signature_id).join(
        Signature, Signature.id == SignatureInvalidation.signature_id).join(
        StepExecution, sa.cast(StepExecution.id, sa.String) == Signature.record_id).where(
        Signature.record_type == StepExecution.__tablename__, StepExecution.batch_id == batch.id)))
