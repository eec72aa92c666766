"""Evaluation of what an operator entered on a step: parse every field, compute the calculations, judge
the limits, check scans, equipment, material lots and time windows.

:func:`evaluate` collects every problem (a malformed entry, a refused calculation, a missing comment) and
raises them together, so nothing is stored and the operator sees all of them at once; an identity mismatch
(``services.identity``) is raised before anything else. What is out of limit is not refused: it is
returned with its problems, stored flagged, and opens a deviation (``deviations.out_of_limit``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain import calc, context, display, values, words
from ..domain.errors import IdentityMismatch, ItemRefused, ValidationFailed
from ..domain.result_time import too_early
from ..domain.sop_schema import (
    CalculatedField,
    EquipmentField,
    Field,
    MaterialField,
    ScanField,
    Step,
    not_before_references,
    step_index,
)
from ..domain.trial_config import TrialConfiguration
from ..models import Batch, RecordedValue, SopVersion, StepExecution, utcnow
from . import bags, batches, identity, masterdata, sops

# Every date-time a step records is an event that has happened (received, fed, formulated...): a time
# later than now is impossible and refused; a few minutes are allowed for a wall clock a little ahead.
FUTURE_TOLERANCE = timedelta(minutes=5)


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


def inputs_from_batch(session: Session, batch: Batch, position: int) -> dict[str, Decimal | None]:
    """Current numeric values of earlier steps, as ``step_id.field_id`` for calculations (a date-time as
    its POSIX seconds, for ``hours_between``/``days_between``: ``calc.calculation_input``), and of the
    batch's other master records as ``RECORD.step_id.field_id`` (``calc.record_name``): a value recorded
    in another record is named there, never typed again."""
    found: dict[str, Decimal | None] = {}
    version_id = batch.master_records[position].sop_version_id
    other = {pin.sop_version_id: calc.record_name(pin.sop_version.code)
             for pin in batch.master_records if pin.sop_version_id != version_id}
    for ex in batches.executions(session, batch):
        if ex.sop_version_id == version_id:
            prefix = ""
        elif ex.sop_version_id in other:
            prefix = other[ex.sop_version_id] + "."
        else:
            continue
        for field_id, value in ex.current_values().items():
            found[f"{prefix}{ex.step_id}.{field_id}"] = calc.calculation_input(value.number, value.moment)
    return found


def context_numbers(session: Session, batch: Batch) -> dict[str, Decimal | None]:
    """The subject and trial values a definition may use (``domain.context``), as pinned to the batch when
    it started (never the subject's current values): the weight and the signed dose level, and the fields
    of the trial configuration version that dose was assigned under. ``trial.cd3_limit_per_kg`` is the limit
    that applies to the product: the one the configuration sets for the relationship of the subject's donor
    (``TrialConfiguration.cd3_limit_for``; recorded when the donor was registered, before the batch started),
    else the trial's."""
    if batch.subject_id is None:
        return {}
    numbers: dict[str, Decimal | None] = {
        "subject.weight_kg": batch.weight_kg,
        "subject.dose_per_kg": Decimal(batch.dose_cells_per_kg) if batch.dose_cells_per_kg else None}
    config = _pinned_trial_configuration(session, batch)
    if config is not None:
        numbers |= {f"trial.{name}": Decimal(str(getattr(config, name))) for name in context.TRIAL_FIELDS}
        numbers["trial.cd3_limit_per_kg"] = Decimal(config.cd3_limit_for(_donor_relationship(batch)))
    return numbers


def _pinned_trial_configuration(session: Session, batch: Batch) -> TrialConfiguration | None:
    if not batch.trial_config_version_id:
        return None
    version = session.get(SopVersion, batch.trial_config_version_id)
    assert version is not None  # the batch's pinned trial configuration version (a foreign key)
    config = sops.definition(version)
    assert isinstance(config, TrialConfiguration)  # a batch pins a trial configuration version there
    return config


def _donor_relationship(batch: Batch) -> str | None:
    return batch.subject.donor.relationship if batch.subject is not None else None


def cd3_limit_source(session: Session, batch: Batch) -> str:
    """Where the batch's residual T-cell limit comes from, for people: the relationship of the subject's donor
    when the configuration sets a limit for it, else the trial."""
    config = _pinned_trial_configuration(session, batch)
    relationship = _donor_relationship(batch)
    if config is None or config.donor_eligibility is None or relationship is None:
        return "the trial's limit"
    try:
        own = config.donor_eligibility.relationship(relationship)
    except KeyError:
        return "the trial's limit"
    if own.cd3_limit_per_kg is None:
        return f"the trial's limit ({own.label} donor)"
    return f"the limit for a donor of relationship {own.label}"


def _scanned_before(session: Session, batch: Batch, position: int, step: Step, instance: int, f: ScanField,
                    scanned: str) -> str | None:
    """Each bag is scanned once in a step: a bag scanned in another instance of it is refused (nothing
    stored), and the operator scans the next bag."""
    version_id = batch.master_records[position].sop_version_id
    for ex in batches.executions(session, batch):
        if ex.sop_version_id == version_id and ex.step_id == step.id and ex.instance != instance:
            earlier = ex.current_values().get(f.id)
            if earlier is not None and identity.normalise(f.expected, earlier.text) == scanned:
                division = bags.expected_codes(session, batch)[scanned].division
                label = step.repeat.label if step.repeat else "instance"
                return (f"{f.label}: bag {division} was already scanned in {label} {ex.instance}; "
                        "scan the next bag. Nothing was stored.")
    return None


def _item_problems(session: Session, f: Field, code: str, today: date) -> tuple[str | None, list[str]]:
    """An equipment or material field's code: (not found: scan again, or None; why the item that exists
    may not be used)."""
    if isinstance(f, EquipmentField):
        missing = masterdata.equipment_not_found(session, code)
        return missing, [] if missing else masterdata.equipment_problems(session, code, f.equipment_type, today)
    assert isinstance(f, MaterialField)  # the caller passes equipment and material fields only
    missing = masterdata.lot_not_found(session, f.material, code)
    return missing, [] if missing else masterdata.lot_problems(session, f.material, code, today)


def misread(session: Session, f: Field, scanned: str) -> list[str]:
    """What a scan just read into ``f`` (before anything is signed) tells the operator to scan again for: a
    malformed identifier or a check character that does not match (``identity.misread``), a lot or equipment
    code that does not exist. Never whether a scan matches the batch, nor whether an item may be used: those
    are decided on signing, with their hard stop and deviation."""
    if not (scanned or "").strip() or not isinstance(f, ScanField | EquipmentField | MaterialField):
        return []
    try:
        code = values.KINDS[f.type].parse(f, scanned, tz=ZoneInfo("UTC")).text
    except ValidationFailed as exc:
        return exc.problems
    if isinstance(f, ScanField):
        return [f"{f.label}: {problem}: scan again" for problem in identity.misread(f.expected, code)]
    missing = _item_problems(session, f, code, utcnow().date())[0]
    return [f"{f.label}: {missing}"] if missing else []


def evaluate(session: Session, batch: Batch, position: int, step: Step, entry: StepInput,
             tz: ZoneInfo, instance: int = 1) -> list[Evaluated]:
    """Parse every field (collecting every malformed entry), compute calculations, judge limits.

    Raises ``ValidationFailed`` listing every problem when anything is malformed or a check refuses it;
    then nothing is stored.
    """
    problems: list[str] = []
    evaluated: list[Evaluated] = []
    numbers: dict[str, Decimal | None] = inputs_from_batch(session, batch, position)
    numbers |= context_numbers(session, batch)
    mismatches: list[IdentityMismatch] = []
    refused: list[str] = []  # equipment or lots that exist but may not be used: a deviation
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
        numbers[f.id] = calc.calculation_input(parsed.number, parsed.moment)
        if parsed.moment is not None and parsed.moment > utcnow() + FUTURE_TOLERANCE:
            problems.append(f"{f.label}: {raw} is in the future; record the time it happened")
            continue
        if parsed.text:
            if f.type in ("equipment", "material"):
                missing, unusable = _item_problems(session, f, parsed.text, today)
                problems.extend([f"{f.label}: {missing}"] if missing else [])
                refused.extend(f"{f.label}: {problem}" for problem in unusable)
            elif isinstance(f, ScanField):
                try:
                    scanned = identity.check(session, batch, where=step.id, label=f.label, expected=f.expected,
                                             scanned=parsed.text)
                except IdentityMismatch as mismatch:
                    mismatch.fields = (f.id,)
                    mismatches.append(mismatch)
                    continue
                except ValidationFailed as exc:
                    problems.extend(exc.problems)
                    continue
                if f.expected == "bag.product_code":
                    again = _scanned_before(session, batch, position, step, instance, f, scanned)
                    problems.extend([again] if again else [])
        evaluated.append(Evaluated(f.id, f.type, raw, parsed, getattr(f, "unit", None),
                                   kind.limit_problems(f, parsed, numbers)))
    if mismatches:  # the hard stop comes before any other problem, naming every scan that did not match
        mismatches[0].fields = tuple(field_id for mismatch in mismatches for field_id in mismatch.fields)
        raise mismatches[0]
    if refused:
        raise ItemRefused(batch.id, step.id, refused, problems)  # the attempt is a deviation, with every problem
    if not problems:
        problems.extend(order_problems(session, batch, position, step, evaluated, tz, instance))
        entered_at = utcnow()
        for f in step.fields:
            problem = result_time_problem(session, batch, position, step, f.id, entered_at, evaluated, tz, instance)
            problems.extend([problem] if problem else [])
    if problems:
        raise ValidationFailed(*problems)
    refusing: list[str] = []
    for result in values.calculate(step.fields, numbers):
        refusing.extend(result.refused)
        evaluated.append(Evaluated(result.field.id, "calculated", "", result.parsed, result.field.unit,
                                   result.limit_problems))
    if refusing:
        raise ValidationFailed(*refusing)
    labels = {f.id: f.label for f in step.fields}
    missing_comments = [f"{labels[e.field_id]}: an out-of-limit value needs a comment "
                        f"({'; '.join(e.limit_problems)})"
                        for e in evaluated if e.limit_problems and not entry.field_comments.get(e.field_id, "").strip()]
    if step.comment_required and not entry.comment.strip():
        missing_comments.append("This step needs a comment.")
    if missing_comments:
        raise ValidationFailed(*missing_comments)
    return evaluated


def local_text(moment: datetime, tz: ZoneInfo) -> str:
    """A moment as screens show it: the site's local time with its zone (``2026-03-29 10:30 CEST``). The
    one way the product writes a moment for a person (the screens' ``local`` filter, every message)."""
    return display.local(moment, tz)


def _moment_of(session: Session, batch: Batch, position: int, step: Step, reference: str,
               evaluated: list[Evaluated], instance: int) -> datetime | None:
    """A recorded date-time named as in a master record: ``field_id`` of this step (the value being
    entered, else the one recorded in this instance) or ``<step_id>.<field_id>`` of an earlier step."""
    if "." in reference:
        return recorded_moment(session, batch, position, reference)
    entered = next((e for e in evaluated if e.field_id == reference), None)
    if entered is not None:
        return entered.parsed.moment
    version_id = batch.master_records[position].sop_version_id
    return session.scalar(
        sa.select(RecordedValue.moment).join(StepExecution)
        .where(StepExecution.batch_id == batch.id, StepExecution.sop_version_id == version_id,
               StepExecution.step_id == step.id, StepExecution.instance == instance,
               RecordedValue.field_id == reference)
        .order_by(RecordedValue.id.desc()).limit(1))


def order_problems(session: Session, batch: Batch, position: int, step: Step, evaluated: list[Evaluated],
                   tz: ZoneInfo, instance: int = 1) -> list[str]:
    """A date-time entered earlier than a recorded date-time it depends on (``not_before``, or the sample
    of a result of the same step: ``sop_schema.not_before_references``) is refused, naming both times."""
    found = []
    labels = {f.id: f.label for f in step.fields}
    for e in evaluated:
        for reference in not_before_references(step).get(e.field_id, []):
            earliest = _moment_of(session, batch, position, step, reference, evaluated, instance)
            if e.parsed.moment is None or earliest is None or e.parsed.moment >= earliest:
                continue
            found.append(f"{labels[e.field_id]}: {local_text(e.parsed.moment, tz)} is before {reference} "
                         f"({local_text(earliest, tz)}); it cannot have happened before it. Nothing was stored.")
    return found


def result_time_problem(session: Session, batch: Batch, position: int, step: Step, field_id: str,
                        entered_at: datetime, evaluated: list[Evaluated], tz: ZoneInfo,
                        instance: int = 1) -> str | None:
    """Why the result entered for ``field_id`` at ``entered_at`` cannot exist yet (``domain.result_time``:
    before its sample time plus the method's minimum duration), naming the earliest allowed time in the
    site's local time; None when it may, when the field has no ``result_time``, when nothing or one of
    the field's ``pending`` answers is entered, or a failing result (reported when found). The sample time
    is the value of this step being entered
    (``evaluated``) or recorded in this ``instance``, or the recorded date-time of an earlier step.

    ``evaluate`` asks it when a step is performed or corrected (a pending result given its value later is
    judged against the time of that entry); an action entering a result alone asks it the same way."""
    f = next((f for f in step.fields if f.id == field_id), None)
    result_time = getattr(f, "result_time", None)
    entered = next((e for e in evaluated if e.field_id == field_id), None)
    if f is None or result_time is None or entered is None or entered.parsed.is_empty:
        return None
    if entered.parsed.text in getattr(f, "pending", []):
        return None
    if entered.limit_problems:  # a failing result is reported as soon as it is found (domain.result_time)
        return None
    sampled_at = _moment_of(session, batch, position, step, result_time.sample, evaluated, instance)
    return too_early(f.label, result_time, sampled_at, entered_at, lambda moment: local_text(moment, tz))


def window_reference(session: Session, batch: Batch, position: int, step: Step) -> datetime | None:
    """The recorded date-time a step's time window counts from (its latest value), or None."""
    assert step.time_window is not None  # callers pass only steps with a time window
    return recorded_moment(session, batch, position, step.time_window.after)


def recorded_moment(session: Session, batch: Batch, position: int, reference: str) -> datetime | None:
    """The latest recorded date-time of ``<step_id>.<field_id>`` in the record at ``position``, or None."""
    ref_step, ref_field = reference.split(".")
    version_id = batch.master_records[position].sop_version_id
    return session.scalar(
        sa.select(RecordedValue.moment).join(StepExecution)
        .where(StepExecution.batch_id == batch.id, StepExecution.sop_version_id == version_id,
               StepExecution.step_id == ref_step, RecordedValue.field_id == ref_field)
        .order_by(RecordedValue.id.desc()).limit(1))


def window_hours(session: Session, batch: Batch, hours: float | str) -> Decimal | None:
    """A time window's hours: a number in the master record, or a context name such as the trial
    configuration's ``trial.apheresis_hold_hours`` (None when the batch has no such context)."""
    if isinstance(hours, str):
        return context_numbers(session, batch).get(hours)
    return Decimal(str(hours))


def time_window_problem(session: Session, batch: Batch, position: int, step: Step,
                         evaluated: list[Evaluated]) -> str | None:
    """Outside its window: the time recorded in the step's ``at`` field (when it really happened), or the
    time it is signed, is not within the master record's hours of the reference time."""
    window = step.time_window
    if window is None:
        return None
    reference = window_reference(session, batch, position, step)
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


# --------------------------------------------------------------------------------------------------
# See what you sign: the values of a step as the server will record them, before signing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """One value as a person reads it on the step screen: ``name`` as the master record writes it (a field
    id, ``step.field``, ``RECORD.step.field`` or a context name), its label and its text with its unit
    ("" when not recorded or entered yet)."""

    name: str
    label: str
    text: str


@dataclass(frozen=True)
class PreviewField:
    """A field of the step as it would be recorded now: a typed field parsed (``problems``: why the entry is
    malformed), a calculated field computed by ``values.calculate`` (``problems``: why it cannot be yet),
    with the inputs it came from."""

    field_id: str
    label: str
    calculated: bool
    text: str
    problems: tuple[str, ...] = ()
    limit_problems: tuple[str, ...] = ()
    inputs: tuple[Shown, ...] = ()


@dataclass(frozen=True)
class PlannedBag:
    """A bag of the dose plan before it is filled (``bags.planned``)."""

    index: int
    volume_ml: Decimal
    nk_cells: int
    viable_cells: int
    expires_at: datetime | None


@dataclass(frozen=True)
class Preview:
    fields: list[PreviewField]
    dose: list[Shown]
    """The batch's pinned dose (weight and its date, dose level): on the steps that calculate from it."""
    bags: list[PlannedBag]
    """The bags the values give, on the step that divides the product and the step its volume comes from."""
    bag_note: str = ""
    """Why the bags cannot be shown yet, for a person; empty: not until the volume is calculated."""


def _shown_text(f: Any, text: str, tz: ZoneInfo) -> str:
    """A value as people read it (``values.display``, large numbers grouped by ``display.grouped``)."""
    if not text:
        return ""
    if f.type in ("number", "integer", "calculated"):
        return values.display(f, display.grouped(text), tz=tz)
    return values.display(f, text, tz=tz)


def _context_shown(session: Session, batch: Batch) -> dict[str, Shown]:
    """The context names a definition may use, with the batch's pinned values, as people read them."""
    found: dict[str, Shown] = {}
    if batch.weight_kg is not None:
        measured = f" (measured {batch.weight_measured_on:%Y-%m-%d})" if batch.weight_measured_on else ""
        found["subject.weight_kg"] = Shown("subject.weight_kg", "Subject weight, pinned to the batch",
                                           f"{batch.weight_kg} kg{measured}")
    if batch.dose_cells_per_kg:
        level = f"{batch.dose_level}{f' ({batch.dose_label})' if batch.dose_label else ''}: "
        found["subject.dose_per_kg"] = Shown("subject.dose_per_kg", "Assigned dose level, pinned to the batch",
                                             f"{level}{display.cells(batch.dose_cells_per_kg)} NK cells/kg")
    for name, number in context_numbers(session, batch).items():
        if name.startswith("trial.") and number is not None:
            label = f"Trial configuration: {name.removeprefix('trial.').replace('_', ' ')}"
            if name == "trial.cd3_limit_per_kg":
                label += f", {cd3_limit_source(session, batch)}"
            found[name] = Shown(name, label, display.grouped(f"{number}"))
    return found


def _recorded_shown(session: Session, batch: Batch, position: int, tz: ZoneInfo) -> dict[str, Shown]:
    """Every value recorded in the batch, by the name an expression of the record at ``position`` gives it
    (``step.field`` in the record, ``RECORD.step.field`` in another record of the batch)."""
    by_version = {pin.sop_version_id: (pin.position, pin.sop_version.code) for pin in batch.master_records}
    indexes = {pin.sop_version_id: step_index(batches.definition_of(pin.sop_version))
               for pin in batch.master_records}
    found: dict[str, Shown] = {}
    for ex in batches.executions(session, batch):
        if ex.sop_version_id not in by_version:
            continue
        where, code = by_version[ex.sop_version_id]
        step_def = indexes[ex.sop_version_id].get(ex.step_id)
        if step_def is None:
            continue
        fields = {f.id: f for f in step_def[1].fields}
        prefix = "" if where == position else calc.record_name(code) + "."
        for field_id, value in ex.current_values().items():
            f = fields.get(field_id)
            if f is None:
                continue
            label = f"{f.label} ({step_def[1].title})" if where == position else \
                f"{f.label} ({code}, {step_def[1].title})"
            found[f"{prefix}{ex.step_id}.{field_id}"] = Shown(f"{prefix}{ex.step_id}.{field_id}", label,
                                                              _shown_text(f, value.text, tz))
    return found


def preview(session: Session, batch: Batch, position: int, step: Step, entry: StepInput, tz: ZoneInfo,
            instance: int = 1) -> Preview:
    """What signing ``entry`` now would record, for the screen: every typed field parsed by its kind and
    every calculated field computed with ``values.calculate`` from the same inputs as :func:`evaluate`
    (the numbers of earlier steps and other records, the batch's pinned context), with the inputs each came
    from. Nothing is checked against master data or identities and nothing is written: it is a view of
    the arithmetic, so that the operator sees the values they sign; signing evaluates everything again."""
    numbers: dict[str, Decimal | None] = inputs_from_batch(session, batch, position)
    numbers |= context_numbers(session, batch)
    known = _recorded_shown(session, batch, position, tz) | _context_shown(session, batch)
    own: dict[str, Shown] = {}
    found: list[PreviewField] = []
    records = batches.records(batch)
    for f in step.fields:
        if f.type == "calculated":
            continue
        raw = (entry.raw.get(f.id) or "").strip()
        try:
            parsed = values.KINDS[f.type].parse(f, raw, tz=tz)
        except ValidationFailed as exc:
            found.append(PreviewField(f.id, f.label, False, "", tuple(exc.problems) if raw else ()))
            continue
        numbers[f.id] = calc.calculation_input(parsed.number, parsed.moment)
        text = _shown_text(f, parsed.text, tz)
        own[f.id] = Shown(f.id, f.label, text)
        found.append(PreviewField(f.id, f.label, False, text,
                                  limit_problems=tuple(values.KINDS[f.type].limit_problems(f, parsed, numbers))))
    for f in step.fields:
        if f.type != "calculated":
            continue
        references, _problems = calc.inspect_expression(f.expression)
        names = list(dict.fromkeys(str(reference) for reference in references))
        try:
            result = values.calculate([f], numbers)[0]  # the engine's calculation (adds the result to numbers)
        except ValidationFailed as exc:
            numbers[f.id] = None
            problems: tuple[str, ...] = tuple(words.names_in(p, records, step) for p in exc.problems)
            text, limit = "", tuple[str, ...]()
        else:
            problems, text = (), _shown_text(f, result.parsed.text, tz)
            limit = tuple(result.limit_problems)
        inputs = tuple(own.get(name) or known.get(name) or Shown(name, words.reference(name, records, step), "")
                       for name in names)
        own[f.id] = Shown(f.id, f.label, text)
        found.append(PreviewField(f.id, f.label, True, text, problems, limit, inputs))
    uses_dose = any(isinstance(f, CalculatedField) and any(
        str(r) in context.SUBJECT_NAMES for r in calc.inspect_expression(f.expression)[0]) for f in step.fields)
    dose = [known[name] for name in ("subject.weight_kg", "subject.dose_per_kg") if uses_dose and name in known]
    planned, note = _planned_bags(session, batch, position, step, numbers)
    return Preview(found, dose, planned, note)


def _planned_bags(session: Session, batch: Batch, position: int, step: Step,
                  numbers: dict[str, Decimal | None]) -> tuple[list[PlannedBag], str]:
    """The bags of the dose plan as the values give them now (``bags.planned``, as signing the dividing step
    plans them), on the dividing step and on the step the divided volume comes from."""
    record = batches.records(batch)[position]
    dividing = next((s for _stage, s in step_index(record).values() if s.divides_product), None)
    if dividing is None or dividing.divides_product is None:
        return [], ""
    division = dividing.divides_product
    sources = {reference.step for reference in calc.inspect_expression(division.volume_ml)[0]}
    if step.id != dividing.id and step.id not in sources:
        return [], ""
    if step.id != dividing.id:
        numbers = numbers | {f"{step.id}.{f.id}": numbers.get(f.id) for f in step.fields}
    expires_from = recorded_moment(session, batch, position, division.expires_from)
    try:
        made = bags.planned(batch, division, numbers, expires_from or utcnow())
    except ValidationFailed:
        return [], ""  # not yet: the volume to infuse is calculated once its inputs are entered
    return ([PlannedBag(b.index, b.volume_ml, b.nk_cells, b.viable_cells, b.expires_at if expires_from else None)
             for b in made], "")
