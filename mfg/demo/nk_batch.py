"""Demo and validation data for one complete NK batch, driven through the real services with real signatures.

This module is longer than 600 lines because most of it is data: the values an operator types at every step
of the four NK records (DEMO_VALUES), kept in one place so that they read as one batch record.

* :func:`seed_nk_master_data`: two calibrated pieces of equipment of every equipment type and two
  QC-released lots of every material the effective NK master records name (read from the records, so
  it stays in step with them).
* :func:`seed_demo_subject`: an eligible donor and subject ``NK-001`` (62.4 kg, dose level DL2 signed by
  the clinical coordinator).
* :data:`DEMO_VALUES` and :func:`entry_for`: what the operator types at every step of the four NK records,
  after DOMAIN.md section 10 ("A plausible batch"). Scans, equipment, material lots and ticks are not
  listed there: :func:`entry_for` fills them from each field's definition (the expected identifier, the
  seeded master data, "confirmed").
* :func:`run_nk_batch`: opens the subject's batch and performs every step in order, one operator
  signing "Performed by" and a second "Verified by" where the record requires it. It flushes; the
  caller commits.

Decisions worth knowing when reading a demo batch:

* **Time.** A demo batch is recorded in one sitting, but its date-times are those of the real process:
  every date-time is computed back from ``now`` so that the 14-day culture takes 14 days of recorded time
  (NK-EXPAND v2 calculates each culture day from the recorded seeding and the step's own date-time, and
  refuses a date-time before the seeding; a result cannot be entered before its method allows). The
  collection ended about 14 days 19 h before ``now``, was received 3 h 35 min later (DOMAIN: 06:40 ->
  10:15) and processed 45 min after receipt (the hold times judge these recorded times); the culture was
  seeded 5 h after selection started; feeds on days 3, 5, 7, 9 and 11, a count on day 7, the harvest on
  day 14 at :data:`HARVESTED` minutes before ``now``; the pre-wash samples, the formulation and the
  final-product samples follow (formulation about 4 h 45 min before ``now``, so the bags' 48 h shelf life
  runs from then). Every time is in the past and in process order.
* **Result times.** No result is entered before its sample time plus its method's minimum duration (the
  master records' ``result_time``): the pre-wash mycoplasma sample (qPCR, 3 h) is taken 5 h and the
  final-product samples (potency, 4 h, the longest) 4 h 30 min before ``now``, so every release result
  entered now can exist. The 14-day sterility culture and the 48-72 h preliminary read cannot exist yet:
  they stay **Pending** (conditional release). ``now`` may be given (``run_nk_batch(now=...)``): the
  ``final`` scenario runs the batch 15 days back, so that its 14-day result can be entered today.
* **Selection input.** DOMAIN's 1.9 x 10^8 NK cells after selection from the whole collection
  (2264 x 10^6 viable NK cells at intake) would be an 8.4 % recovery, below the record's 15 % alert limit
  (DOMAIN's "recovery 82 %" cannot come from its own numbers). The record allows processing part of the
  collection; the demo processes :data:`SELECTION_VOLUME_ML` of the 185 mL (NK cells in that part
  transcribed, as the record says), giving a recovery of 19.4 %, close to McKenna 2018's 19 %.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session, object_session

from ..domain import dose, isbt128, sequence
from ..domain.calc import round_half_up
from ..domain.eligibility import ScreeningEntry
from ..domain.errors import ValidationFailed
from ..domain.sop_schema import MasterRecord, ScanField, Step, step_index
from ..domain.trial_config import SubjectEligibility
from ..models import Batch, Donor, Equipment, MaterialLot, RecordedValue, Subject, User, utcnow
from ..services import audit, batches, clinical, evaluation, masterdata, sops, starting, steps, trial
from ..services import bags as bag_service

__all__ = [
    "DEMO_COMMENTS",
    "DEMO_VALUES",
    "DemoContext",
    "PlannedStep",
    "continue_nk_batch",
    "eligible_screening",
    "entry_for",
    "equipment_identifier",
    "lot_number",
    "named_master_data",
    "next_step",
    "planned_instances",
    "run_nk_batch",
    "seed_demo_subject",
    "seed_nk_master_data",
]

# --------------------------------------------------------------------------------------------------
# Master data: equipment and material lots the NK records name
# --------------------------------------------------------------------------------------------------

DEMO_ITEMS_PER_KIND = 2
CALIBRATION_DAYS = 365
LOT_SHELF_LIFE_DAYS = 365

EQUIPMENT_PREFIXES: dict[str, str] = {
    "biosafety cabinet": "BSC",
    "cell counter": "CNT",
    "flow cytometer": "FCM",
    "CO2 incubator": "INC",
    "CliniMACS Prodigy": "PRODIGY",
    "centrifuge": "CFG",
    "endotoxin reader": "LAL",
    "label printer": "PRN",
}
"""Short identifiers for equipment types the demo knows; any other type gets a slug of its name."""


def _slug(text: str, length: int) -> str:
    return re.sub(r"[^A-Z0-9]+", "-", text.upper()).strip("-")[:length].rstrip("-")


def equipment_identifier(equipment_type: str, n: int) -> str:
    """``BSC-01``, ``BSC-02`` for a known type; ``NEW-TYPE-01`` (a slug) for any other."""
    return f"{EQUIPMENT_PREFIXES.get(equipment_type) or _slug(equipment_type, 50)}-{n:02d}"


def lot_number(material: str, n: int) -> str:
    """``HUMAN-SERUM-ALBUMIN-DEMO-1``: the material's name as a slug, marked DEMO."""
    return f"{_slug(material, 40)}-DEMO-{n}"


def _product_records(session: Session) -> list[str]:
    """The master records the effective trial configuration names for the product (none without one)."""
    try:
        return list(sops.trial_configuration(session).product_master_records)
    except ValidationFailed:
        return []


def named_master_data(session: Session, codes: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """(equipment types, materials) named by the effective versions of ``codes`` (default: the product's
    master records, from the trial configuration), in record order. A code without an effective version
    names nothing."""
    codes = _product_records(session) if codes is None else codes
    types: dict[str, None] = {}
    materials: dict[str, None] = {}
    for code in codes:
        version = sops.effective(session, code)
        if version is None:
            continue
        for _stage, step in step_index(batches.definition_of(version)).values():
            for f in step.fields:
                if f.type == "equipment":
                    types.setdefault(f.equipment_type)
                elif f.type == "material":
                    materials.setdefault(f.material)
    return list(types), list(materials)


def seed_nk_master_data(session: Session, codes: Iterable[str] | None = None) -> list[str]:
    """Create what is missing of: two in-service pieces of equipment, calibrated for a year, of every
    equipment type, and two QC-released lots, expiring in a year, of every material that the effective
    master records ``codes`` name. Returns the identifiers and lot numbers created (empty when nothing
    was missing, or when none of the records is effective yet)."""
    types, materials = named_master_data(session, codes)
    today = date.today()
    created = []
    for equipment_type in types:
        for n in range(1, DEMO_ITEMS_PER_KIND + 1):
            identifier = equipment_identifier(equipment_type, n)
            if session.scalar(sa.select(Equipment.id).where(Equipment.identifier == identifier)) is None:
                masterdata.add_equipment(session, identifier=identifier, equipment_type=equipment_type,
                                         calibration_due=today + timedelta(days=CALIBRATION_DAYS),
                                         description="demo")
                created.append(identifier)
    for material in materials:
        for n in range(1, DEMO_ITEMS_PER_KIND + 1):
            lot = lot_number(material, n)
            if session.scalar(sa.select(MaterialLot.id).where(MaterialLot.material == material,
                                                              MaterialLot.lot_number == lot)) is None:
                masterdata.receive_lot(session, material=material, lot_number=lot,
                                       expiry=today + timedelta(days=LOT_SHELF_LIFE_DAYS), qc_status="released")
                created.append(lot)
    return created


# --------------------------------------------------------------------------------------------------
# The demo donor and subject
# --------------------------------------------------------------------------------------------------

DEMO_DONOR = "NK-DONOR-001"
DEMO_DONOR_ABO_RH = "A+"
DEMO_DONOR_RELATIONSHIP = "transplant_donor"
DEMO_SUBJECT = "NK-001"
DEMO_WEIGHT_KG = "62.4"
DEMO_DOSE_LEVEL = "DL2"
SPECIMEN_DAYS_BEFORE = 18
"""Donor test specimens drawn 18 days before today: 3 days before the collection (about 15 days before
today, see the timeline below), within the 7 days before collection that 21 CFR 1271.80 (DOMAIN section 2)
allows, and within NK-TRIAL v5's specimen age (30 days) when eligibility is determined today. A demo run back in
time (``seed_demo_subject(today=...)``) keeps the specimen 18 days before the real today: its donor is determined
eligible today, on a panel fresh today."""
DONOR_TESTS: tuple[tuple[str, str], ...] = (
    ("HIV-1/2 Ab", "non-reactive"),
    ("HBsAg", "non-reactive"),
    ("anti-HBc", "non-reactive"),
    ("anti-HCV", "non-reactive"),
    ("HIV/HBV/HCV NAT", "negative"),
    ("WNV NAT", "negative"),
    ("HTLV-I/II Ab", "non-reactive"),
    ("CMV Ab", "non-reactive"),
    ("Syphilis", "non-reactive"),
)
"""The infectious-disease panel of DOMAIN section 2, every result negative."""


@contextmanager
def _acting_as(session: Session, user: User) -> Iterator[None]:
    """Audit entries written inside the block name ``user``; the caller's actor is restored after."""
    previous = session.info.get(audit.ACTOR_KEY)
    audit.set_actor(session, user)
    try:
        yield
    finally:
        if previous is None:
            session.info.pop(audit.ACTOR_KEY, None)
        else:
            session.info[audit.ACTOR_KEY] = previous


# The demo subject's screening (DEMO values): lab value and the laboratory's ULN (empty for an absolute limit).
DEMO_LABS = {"anc": ("3.2", ""), "haemoglobin": ("11.8", ""), "platelets": ("180", ""), "alt": ("32", "40"),
             "ast": ("28", "40"), "bilirubin": ("12", "21"), "inr": ("1.0", "1.2"), "creatinine": ("80", "110"),
             "creatinine_clearance": ("95", ""), "corrected_calcium": ("2.35", ""), "lvef": ("60", "")}
DEMO_AGE_YEARS, DEMO_ECOG = "54", "1"


def eligible_screening(config: SubjectEligibility, today: date) -> ScreeningEntry:
    """A screening that meets ``config`` on ``today``: every lab measured the day before, the first treatment
    the day after, every exclusion answered "no" (DEMO values; a criterion the demo does not know gets a value
    well inside its limit)."""
    labs: dict[str, tuple[str, str, date | str | None]] = {}
    for criterion in config.labs:
        value, uln = DEMO_LABS.get(criterion.code, ("", ""))
        if not value:
            limit = Decimal(str(criterion.min if criterion.min is not None else criterion.max))
            value = str(limit * 2 if criterion.min is not None else limit / 2)
            uln = "1" if criterion.uln else ""
        labs[criterion.code] = (value, uln, today - timedelta(days=1))
    return ScreeningEntry(age_years=DEMO_AGE_YEARS, ecog=DEMO_ECOG, first_treatment_on=today + timedelta(days=1),
                          labs=labs, exclusions={e.code: False for e in config.exclusions})


def seed_demo_subject(session: Session, clinical_user: User, password: str, *, code: str = DEMO_SUBJECT,
                      dose_level: str | None = DEMO_DOSE_LEVEL, today: date | None = None) -> Subject:
    """The eligible demo donor and subject ``code`` (``NK-001`` by default: 62.4 kg, dose level DL2 signed by
    ``clinical_user`` with ``password``, after the escalation decisions that open it: ``open_dose_level``;
    ``dose_level`` None: enrolled without a level); only what is missing is created, so calling it again changes
    nothing."""
    with _acting_as(session, clinical_user):
        donor = session.scalar(sa.select(Donor).where(Donor.code == DEMO_DONOR))
        if donor is None:
            # the original transplant donor, under a configuration that records the relationship (NK-TRIAL v5)
            relationship = DEMO_DONOR_RELATIONSHIP if clinical.donor_relationships(session) else None
            donor = clinical.register_donor(session, code=DEMO_DONOR, abo_rh=DEMO_DONOR_ABO_RH, user=clinical_user,
                                            relationship=relationship)
        if not donor.tests:
            # before the real today, whatever ``today`` says: the determination below is recorded today, and its
            # panel must be fresh then (NK-TRIAL v5: at most 30 days old)
            drawn = date.today() - timedelta(days=SPECIMEN_DAYS_BEFORE)
            for test, result in DONOR_TESTS:
                clinical.record_donor_test(session, donor, test=test, result=result, specimen_date=drawn,
                                           user=clinical_user)
        if donor.eligibility == "pending":
            clinical.determine_eligibility(
                session, donor, eligible=True, user=clinical_user,
                summary=("DEMO donor: screening questionnaire and physical examination without findings; "
                         f"infectious-disease panel ({', '.join(t for t, _ in DONOR_TESTS)}) negative on a "
                         "specimen drawn within 7 days before collection."))
        subject = session.scalar(sa.select(Subject).where(Subject.code == code))
        if subject is None:
            criteria = sops.trial_configuration(session).subject_eligibility
            subject = clinical.enrol_subject(
                session, code=code, donor=donor, weight_kg=DEMO_WEIGHT_KG, measured_on=today or date.today(),
                user=clinical_user, password=password, username=clinical_user.username, require_username=True,
                screening=eligible_screening(criteria, date.today()) if criteria is not None else None)
        if dose_level is not None and (subject.dose_level != dose_level or subject.dose_signature_id is None):
            open_dose_level(session, clinical_user, password, dose_level)
            clinical.assign_dose_level(session, subject, level=dose_level, signer=clinical_user,
                                       password=password, username=clinical_user.username, require_username=True)
    return subject


def open_dose_level(session: Session, clinical_user: User, password: str, level: str) -> None:
    """DEMO and tests: sign escalation decisions (as ``clinical_user``) until ``level`` is open with room in its
    cohort: the start level first, then one level at a time (levels are never skipped), or a new cohort at the
    same level when its cohort is full. A decision that departs from the rule's recommendation says so in its
    reason. Nothing under a trial configuration without an escalation design."""
    with _acting_as(session, clinical_user):
        while True:
            book = trial.ledger(session)
            if book is None or (book.open.level == level and book.open.assigned < book.open.cohort_size):
                return
            levels, current = book.levels, book.open.level
            if current is None:
                step = book.design.start_level if not book.decisions else levels[0]
            elif levels.index(level) > levels.index(current):
                step = levels[levels.index(current) + 1]
            else:
                step = level
            reason = "" if step == book.recommendation.level else (
                f"DEMO: the demonstration opens {step} to show a subject at {level}; the rule recommended "
                f"{book.recommendation.action} ({book.recommendation.level or 'no level'})")
            trial.decide(session, level=step, reason=reason,
                         based_on=book.decisions[-1][0].id if book.decisions else None, signer=clinical_user,
                         password=password, username=clinical_user.username, require_username=True)


# --------------------------------------------------------------------------------------------------
# What the operator enters
# --------------------------------------------------------------------------------------------------

# The timeline, in minutes before ``now`` (see the module docstring): the real culture, ending before now.
MINUTES_PER_DAY = 24 * 60
HARVESTED = 330  # day 14, 5 h 30 min before now; the pre-wash samples, formulation and final-product samples follow
CULTURE_DAY_0 = HARVESTED + 14 * MINUTES_PER_DAY
SELECTION_STARTED = CULTURE_DAY_0 + 5 * 60  # CD3 depletion and CD56 enrichment take about 5 h
RECEIVED = SELECTION_STARTED + 45
COLLECTION_ENDED = RECEIVED + 3 * 60 + 35  # 3 h 35 min from end of collection to receipt (DOMAIN section 10)
COUNTED_AFTER_FEED = 30  # the day 7 count, 30 min after the day 7 feed
# NK-FORMULATE v3 and NK-RELEASE v3: every result entered now is at least its method's minimum after its sample
PRE_WASH_SAMPLED = 300  # mycoplasma qPCR (3 h), in-process flow (1 h) and endotoxin (15 min)
FORMULATED = 285
SAMPLED = 270  # the final-product QC sample, after the fill: potency (4 h) is the longest method
CULTURES_INOCULATED = 265

SELECTION_VOLUME_ML = 80
"""Millilitres of the 185 mL collection put into selection (see the module docstring)."""


@dataclass(frozen=True)
class DemoContext:
    """What a demo value may depend on: the batch so far, its subject, the bags made, the clock."""

    session: Session
    batch: Batch
    subject: Subject
    bags: Sequence[Any]
    instance: int
    now: datetime
    tz: ZoneInfo

    def local(self, minutes_before_now: int) -> str:
        """``now`` less some minutes, as the operator types it: site time, ``YYYY-MM-DD HH:MM``."""
        moment = (self.now - timedelta(minutes=minutes_before_now)).astimezone(self.tz)
        if moment.replace(fold=0).utcoffset() != moment.replace(fold=1).utcoffset():
            moment = (moment - timedelta(hours=1)).astimezone(self.tz)  # an hour that occurs twice: step back
        return self.typed(moment)

    def typed(self, moment: datetime) -> str:
        """A moment as the operator types it: site time, ``YYYY-MM-DD HH:MM``."""
        return moment.astimezone(self.tz).strftime("%Y-%m-%d %H:%M")

    def recorded(self, code: str, step_id: str, field_id: str) -> RecordedValue:
        """The current value of ``field_id`` recorded at ``step_id`` of record ``code`` in this batch."""
        version_id = next(pin.sop_version_id for pin in self.batch.master_records if pin.sop_version.code == code)
        found = [ex for ex in batches.executions(self.session, self.batch)
                 if ex.sop_version_id == version_id and ex.step_id == step_id]
        if not found or field_id not in found[-1].current_values():
            raise ValidationFailed(f"demo data: {code} {step_id}.{field_id} is not recorded yet")
        return found[-1].current_values()[field_id]

    @property
    def bag(self) -> Any:
        """The bag this instance of a per-bag step handles."""
        if len(self.bags) < self.instance:
            raise ValidationFailed(f"demo data: no bag {self.instance} (the batch has {len(self.bags)})")
        return self.bags[self.instance - 1]


Value = str | Callable[[DemoContext], str]
Entry = Mapping[str, Value]


def _at(minutes_before_now: int) -> Callable[[DemoContext], str]:
    return lambda ctx: ctx.local(minutes_before_now)


def _day(culture_day: int, extra_minutes: int = 0) -> Callable[[DemoContext], str]:
    """The date-time of a culture day (day 0 = seeding), as the operator types it."""
    return _at(CULTURE_DAY_0 - culture_day * MINUTES_PER_DAY - extra_minutes)


def _copy(code: str, step_id: str, field_id: str) -> Callable[[DemoContext], str]:
    """A value transcribed from an earlier step of the batch, as the operator copies it (a date-time in
    site time, as it was typed)."""
    def copied(ctx: DemoContext) -> str:
        value = ctx.recorded(code, step_id, field_id)
        return ctx.typed(value.moment) if value.moment is not None else value.text

    return copied


def _abo_rh(ctx: DemoContext) -> str:
    """The donor's ABO/Rh as the intake record's choice: ``A+`` -> ``A Rh positive``."""
    text = (ctx.subject.donor.abo_rh or "").replace(" ", "")
    if not re.fullmatch(r"(A|B|AB|O)[+-]", text):
        raise ValidationFailed(f"demo data: donor ABO/Rh {ctx.subject.donor.abo_rh!r} is not like 'A+'")
    return f"{text[:-1]} Rh {'positive' if text[-1] == '+' else 'negative'}"


def _eligibility(ctx: DemoContext) -> str:
    return {"eligible": "Eligible", "ineligible": "Ineligible"}.get(ctx.subject.donor.eligibility, "Not determined")


def _selection_input(ctx: DemoContext) -> str:
    """Viable NK cells in the part of the collection processed (10^6 cells), from the intake record."""
    at_intake = ctx.recorded("NK-INTAKE", "intake_counts", "nk_cells_total").number
    volume = ctx.recorded("NK-INTAKE", "label_data", "volume_ml").number
    assert at_intake is not None and volume is not None
    return f"{round_half_up(at_intake * SELECTION_VOLUME_ML / volume, 0):f}"


def _planned_bags(ctx: DemoContext) -> list[dose.Bag]:
    """The bags the recorded dose plan gives (what the operator fills), as the dividing step will make them."""
    position, step = next((p, s) for p, record in enumerate(batches.records(ctx.batch))
                          for _stage, s in step_index(record).values() if s.divides_product is not None)
    division = step.divides_product
    assert division is not None
    numbers = evaluation.inputs_from_batch(ctx.session, ctx.batch, position)
    numbers |= evaluation.context_numbers(ctx.session, ctx.batch)
    return bag_service.planned(ctx.batch, division, numbers,
                               evaluation.recorded_moment(ctx.session, ctx.batch, position, division.expires_from))


def _bag_volume(ctx: DemoContext) -> str:
    return f"{Decimal(ctx.bag.volume_ml):.1f}"


FEED_DAYS = (3, 5, 7, 9, 11)
COUNT_DAYS = (7,)
CULTURE_DAYS: dict[tuple[str, str], tuple[int, ...]] = {
    ("NK-EXPAND", "feed"): FEED_DAYS,
    ("NK-EXPAND", "in_process_count"): COUNT_DAYS,
}
"""The culture day of each instance of a repeated culture step: when the demo records it (the record
calculates the culture day from the recorded date-times) and the order the demo does the steps in."""


def _feed(culture_day: int, medium_added_ml: int) -> Entry:
    return {"fed_at": _day(culture_day), "medium_added_ml": str(medium_added_ml), "il2_concentration": "100"}


DEMO_VALUES: dict[tuple[str, str], tuple[Entry, ...]] = {
    # ---- NK-INTAKE: apheresis 185 mL, 2.1 x 10^10 TNC, 98 % viable, 11 % NK, 58 % CD3+, 9 % CD19+ ----
    ("NK-INTAKE", "identify_bag"): ({
        "donor_code": lambda ctx: ctx.subject.donor.code,
        "product_name": "Apheresis, mononuclear cells (non-mobilized)",
        "collection_facility": "DEMO apheresis unit",
        "collection_end": _at(COLLECTION_ENDED),
    },),
    ("NK-INTAKE", "transport_receipt"): ({
        "received_at": _at(RECEIVED),
        "courier": "DEMO medical courier",
        "container_sealed": "Sealed",
        "transport_temperature": "4.5",
        "logger_id": "TL-DEMO-0001",
    },),
    ("NK-INTAKE", "label_data"): ({
        "volume_ml": "185",
        "anticoagulant": "ACD-A",
        "anticoagulant_volume_ml": "18",
        "donor_abo_rh": _abo_rh,
        "donor_eligibility": _eligibility,
    },),
    ("NK-INTAKE", "visual_inspection"): ({
        "bag_integrity": "Intact",
        "clots": "No clots",
        "haemolysis": "No haemolysis",
        "label_legible": "Legible and complete",
    },),
    ("NK-INTAKE", "intake_counts"): ({
        "tnc_concentration": "113.5",  # 2.1 x 10^10 / 185 mL = 113.5 x 10^6/mL -> TNC 20998 x 10^6
        "viability": "98.0",
        "nk_pct": "11.0",
        "cd3_pct": "58.0",
        "cd19_pct": "9.0",
    },),
    ("NK-INTAKE", "sterility_sample"): ({
        "culture_bottle_ids": lambda ctx: f"{ctx.batch.lot}-AE, {ctx.batch.lot}-AN",
    },),
    ("NK-INTAKE", "accept_material"): ({
        "decision": "Accepted",
        "remarks": "All acceptance criteria met; sterility culture result to follow.",
    },),
    # ---- NK-EXPAND: 1.9 x 10^8 NK cells at 91 %, 0.4 % CD3+; feeds days 3-11; day 7 and day 14 counts ----
    ("NK-EXPAND", "identify_container"): ({},),
    ("NK-EXPAND", "selection_input"): ({
        "collection_end": _copy("NK-INTAKE", "identify_bag", "collection_end"),
        "input_volume_ml": str(SELECTION_VOLUME_ML),
        "input_nk_cells": _selection_input,
    },),
    ("NK-EXPAND", "cd3_depletion"): ({
        "started_at": _at(SELECTION_STARTED),
    },),
    ("NK-EXPAND", "cd56_enrichment"): ({},),
    ("NK-EXPAND", "post_selection_count"): ({
        "volume_ml": "20.0",
        "viable_concentration": "10.44",  # 20.0 mL x 10.44 = 209 x 10^6 viable; x 91 % = 190 x 10^6 NK
        "viability": "95.0",
        "nk_purity": "91.0",
        "cd3_pct": "0.40",
    },),
    ("NK-EXPAND", "culture_initiation"): ({
        "seeded_at": _day(0),
        "il2_concentration": "100",
        "seeded_nk_cells": _copy("NK-EXPAND", "post_selection_count", "nk_cells"),
        "feeder_cells": "380",  # 2 feeder cells per NK cell
    },),
    ("NK-EXPAND", "feed"): tuple(_feed(day, ml) for day, ml in zip(FEED_DAYS, (100, 200, 400, 500, 500), strict=True)),
    ("NK-EXPAND", "in_process_count"): ({
        "counted_at": _day(COUNT_DAYS[0], extra_minutes=COUNTED_AFTER_FEED),
        "culture_volume_ml": "400",
        "viable_concentration": "6.50",  # 400 mL x 6.50 = 2600 x 10^6 viable (2.6 x 10^9)
        "viability": "95.0",
        "nk_purity": "92.0",
    },),
    ("NK-EXPAND", "harvest_culture"): ({
        "harvested_at": _day(14),
        "volume_ml": "250.0",
        "viable_concentration": "54.00",  # 250 mL x 54.00 = 13500 x 10^6 viable (1.35 x 10^10)
        "viability": "93.0",
        "nk_purity": "93.0",
        "cd3_pct": "0.25",
    },),
    # ---- NK-FORMULATE v4: pre-wash sampling; 15 x 10^6 viable cells/mL; 62.4 kg at DL2 -> 13.4 mL in one bag ----
    ("NK-FORMULATE", "identify_product"): ({},),
    ("NK-FORMULATE", "pre_wash_sampling"): ({
        "sampled_at": _at(PRE_WASH_SAMPLED),
        "mycoplasma_sample_id": lambda ctx: f"{ctx.batch.lot}-MYC",
    },),
    ("NK-FORMULATE", "in_process_tests"): ({
        # NK-FORMULATE v4: the NK and CD3+ fractions are the harvest's, named by the dose plan, not typed
        "endotoxin_eu_per_ml": "0.20",  # unwashed cells in culture medium: above the final product's 0.12
    },),
    ("NK-FORMULATE", "formulate"): ({"formulated_at": _at(FORMULATED)},),
    ("NK-FORMULATE", "dose_plan"): ({
        "viable_concentration": "15.00",
    },),
    ("NK-FORMULATE", "bag_preparation"): ({
        "bag_count": lambda ctx: str(len(_planned_bags(ctx))),
        "qc_sample_volume_ml": "8.0",
    },),
    ("NK-FORMULATE", "print_labels"): ({
        "labels_printed": _copy("NK-FORMULATE", "bag_preparation", "bag_count"),
    },),
    ("NK-FORMULATE", "scan_back"): ({
        "label_volume_ml": _bag_volume,
    },),
    ("NK-FORMULATE", "final_inspection"): ({
        "bag_integrity": "All intact",
        "contents": "No clumps or foreign matter",
        "labels": "Attached and legible on every bag",
    },),
    # ---- NK-RELEASE v3: the final product's NK-SPEC v2 results of DOMAIN section 10, sterility pending ----
    ("NK-RELEASE", "identify_container"): ({},),
    ("NK-RELEASE", "sampling"): ({
        "sampled_at": _at(SAMPLED),
        "sample_volume_ml": "6.0",
    },),
    ("NK-RELEASE", "sterility"): ({
        "inoculated_at": _at(CULTURES_INOCULATED),
        "result": "Pending",
    },),
    ("NK-RELEASE", "sterility_preliminary"): ({
        "inoculated_at": _at(CULTURES_INOCULATED),
        "result": "Pending",
    },),
    ("NK-RELEASE", "gram_stain"): ({"result": "No organisms seen"},),
    ("NK-RELEASE", "endotoxin"): ({
        "endotoxin_eu_per_ml": "0.12",
        "spike_recovery": "96",
    },),
    ("NK-RELEASE", "mycoplasma"): ({
        "sampled_at": _copy("NK-FORMULATE", "pre_wash_sampling", "sampled_at"),
        "result": "Not detected",
    },),
    ("NK-RELEASE", "cell_count"): ({
        "viable_concentration": "15.00",  # the final product: 1.5 x 10^7/mL (DOMAIN section 10)
        "viability": "92.0",
    },),
    ("NK-RELEASE", "flow_cytometry"): ({
        "nk_purity": "93.0",
        "cd3_pct": "0.25",
        "residual_feeder_pct": "0.02",
    },),
    ("NK-RELEASE", "hla_identity"): ({
        "result": "Matches donor",
        "report_id": lambda ctx: f"HLA-{ctx.batch.lot}",
    },),
    ("NK-RELEASE", "potency"): ({"lysis_pct": "48.0"},),
    ("NK-RELEASE", "dose_limits"): ({
        "filled_volume_ml": _copy("NK-FORMULATE", "dose_plan", "volume_ml"),
    },),
    ("NK-RELEASE", "results_review"): ({
        "outcome": "All available results meet the specification; sterility pending",
    },),
}
"""The operator's typed entries for every step of the four NK records, by (record code, step id); one
entry per instance of a repeated step, or one for every bag of a step that handles bags one at a time."""

DEMO_COMMENTS: dict[tuple[str, str], str] = {
    ("NK-EXPAND", "selection_input"): (
        f"Part of the collection processed: {SELECTION_VOLUME_ML} mL of the 185 mL. Viable NK cells in that part "
        f"= viable NK cells at intake x {SELECTION_VOLUME_ML} / 185."),
}
"""Step comments of the demo batch, by (record code, step id)."""


def _per_bag(step: Step) -> bool:
    """A step done once per bag: it scans a bag (an expected identifier of the bag being handled)."""
    return any(f.type == "scan" and f.expected.startswith("bag.") for f in step.fields)


def planned_instances(code: str, step: Step, bags: Sequence[Any]) -> int:
    """How many instances of ``step`` the demo performs: one per bag for a per-bag step, else one per
    entry of :data:`DEMO_VALUES`."""
    if _per_bag(step):
        return len(bags)
    return len(DEMO_VALUES.get((code, step.id), ({},)))


def _scan(ctx: DemoContext, f: ScanField) -> str:
    """What the operator scans for a scan field: the barcode of the identifier it expects."""
    expected = f.expected
    if expected in ("batch.din", "bag.din"):
        assert ctx.batch.din is not None
        return isbt128.din_from_text(ctx.batch.din).barcode("00")
    if expected == "subject.coi":
        return isbt128.parse_coi(isbt128.COI_PREFIX + ctx.subject.coi).barcode()
    if expected in ("batch.product_code", "bag.product_code"):
        return ctx.bag.product_code_barcode
    if expected == "batch.lot":
        return ctx.batch.lot
    raise ValidationFailed(f"demo data: no scan for a field expecting {expected!r}")


def _usable_equipment(session: Session, equipment_type: str) -> str:
    today = date.today()
    for identifier in session.scalars(sa.select(Equipment.identifier).where(Equipment.equipment_type == equipment_type)
                                      .order_by(Equipment.identifier)):
        if not masterdata.equipment_problems(session, identifier, equipment_type, today):
            return identifier
    raise ValidationFailed(f"demo data: no usable {equipment_type}; run seed_nk_master_data first")


def _usable_lot(session: Session, material: str) -> str:
    today = date.today()
    for lot in session.scalars(sa.select(MaterialLot.lot_number).where(MaterialLot.material == material)
                               .order_by(MaterialLot.lot_number)):
        if not masterdata.lot_problems(session, material, lot, today):
            return lot
    raise ValidationFailed(f"demo data: no usable lot of {material}; run seed_nk_master_data first")


def _record(batch: Batch, code: str) -> MasterRecord:
    for record in batches.records(batch):
        if record.code == code:
            return record
    raise ValidationFailed(f"batch {batch.lot} has no master record {code}")


def entry_for(code: str, step_id: str, instance: int, *, batch: Batch, subject: Subject, bags: Sequence[Any],
              now: datetime, tz: ZoneInfo) -> evaluation.StepInput:
    """The operator's entry for instance ``instance`` of step ``step_id`` of record ``code`` in ``batch``.

    Typed values come from :data:`DEMO_VALUES`; scans, equipment, material lots and ticks of required
    fields from the field's definition. A required field the demo data does not cover is refused, so a
    change to a master record shows up here rather than as a half-filled step.
    """
    session = object_session(batch)
    assert session is not None
    step = step_index(_record(batch, code))[step_id][1]
    entries = DEMO_VALUES.get((code, step_id))
    if entries is None:
        raise ValidationFailed(f"demo data: no entries for {code} step {step_id!r}")
    given = entries[0] if _per_bag(step) else entries[instance - 1] if instance <= len(entries) else None
    if given is None:
        raise ValidationFailed(f"demo data: {code} step {step_id!r} has {len(entries)} instance(s), not {instance}")
    ctx = DemoContext(session, batch, subject, bags, instance, now, tz)
    raw: dict[str, str] = {}
    for f in step.fields:
        if f.type == "calculated":
            continue
        value = given.get(f.id)
        if value is not None:
            raw[f.id] = value(ctx) if callable(value) else value
        elif not f.required:
            continue
        elif f.type == "scan":
            raw[f.id] = _scan(ctx, f)
        elif f.type == "equipment":
            raw[f.id] = _usable_equipment(session, f.equipment_type)
        elif f.type == "material":
            raw[f.id] = _usable_lot(session, f.material)
        elif f.type == "confirmation":
            raw[f.id] = "yes"
        else:
            raise ValidationFailed(f"demo data: no value for {code} {step_id}.{f.id} ({f.type})")
    unknown = set(given) - {f.id for f in step.fields}
    if unknown:
        raise ValidationFailed(f"demo data: {code} step {step_id!r} has no field {', '.join(sorted(unknown))}")
    return evaluation.StepInput(raw=raw, comment=DEMO_COMMENTS.get((code, step_id), ""))


# --------------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------------


def _order(records: Sequence[MasterRecord], codes: Sequence[str], item: sequence.Open) -> tuple[int, ...]:
    """The order the demo does open steps in: record, stage and step order, except that the instances of
    repeated steps go by their culture day (the feeds of days 3, 5 and 7 before the day 7 count, the
    feeds of days 9 and 11 after it)."""
    stages = [stage.id for stage in records[item.ref.position].stages]
    steps = [step.id for step in item.stage.steps]
    days = CULTURE_DAYS.get((codes[item.ref.position], item.step.id), ())
    day = days[item.instance - 1] if item.instance <= len(days) else 0
    return (item.ref.position, stages.index(item.stage.id), day, steps.index(item.step.id), item.instance)


def run_nk_batch(session: Session, *, subject: Subject, performer: User, verifier: User, password: str,
                 tz: ZoneInfo, until: tuple[str, str] | None = None, now: datetime | None = None) -> Batch:
    """Open the NK batch of ``subject`` and perform its steps with the demo entries, in order.

    ``performer`` signs every step "Performed by", ``verifier`` signs "Verified by" every step that needs
    it (both with user name and ``password``). Repeated steps are done as often as the demo data says
    (five feeds, one in-process count, one scan-back per bag). Stops before performing the step
    ``until`` = (record code, step id), or when no step the demo performs is open. Flushes, never commits.
    """
    with _acting_as(session, performer):  # the audit trail names who opened the batch record, as on screen
        batch = starting.start_product_batch(session, subject=subject, user=performer)
    return continue_nk_batch(session, batch, performer=performer, verifier=verifier, password=password, tz=tz,
                             until=until, now=now)


def continue_nk_batch(session: Session, batch: Batch, *, performer: User, verifier: User, password: str,
                      tz: ZoneInfo, until: tuple[str, str] | None = None, now: datetime | None = None) -> Batch:
    """Perform the open steps of ``batch`` with the demo entries, in order, as :func:`run_nk_batch` does
    (a batch stopped with ``until``, or whose step was performed by hand, carries on from where it is).
    ``now``: the moment the demo timeline ends (the real time by default; earlier to record a batch whose
    14-day result can be entered today). Signatures always carry the real time."""
    subject = batch.subject
    now = (now or utcnow()).replace(second=0, microsecond=0)
    records = batches.records(batch)
    codes = [record.code for record in records]
    bags: list[Any] = []
    while True:
        wanted = []
        for item in batches.open_steps(session, batch):
            code = codes[item.ref.position]
            if _per_bag(item.step) and not bags:
                bags = bag_service.of_batch(session, batch)
            if item.instance <= planned_instances(code, item.step, bags):
                wanted.append((_order(records, codes, item), code, item))
        if not wanted:
            return batch
        _key, code, item = min(wanted, key=lambda w: w[0])
        if until == (code, item.step.id):
            return batch
        assert subject is not None  # an NK batch is made for a subject (starting.start_product_batch)
        entry = entry_for(code, item.step.id, item.instance, batch=batch, subject=subject, bags=bags, now=now, tz=tz)
        with _acting_as(session, performer):
            execution = steps.perform_step(session, batch, position=item.ref.position, step_id=item.step.id,
                                             instance=item.instance, entry=entry, signer=performer,
                                             password=password, username=performer.username,
                                             require_username=True, tz=tz)
        if item.step.verification == "required":
            with _acting_as(session, verifier):
                steps.verify_step(session, execution, signer=verifier, password=password,
                                    username=verifier.username, require_username=True)


@dataclass(frozen=True)
class PlannedStep:
    """The step the demo performs next in a batch, as a person does it on screen (see :func:`next_step`)."""

    code: str  # the master record's code
    position: int  # the record's position in the batch
    step: Step
    instance: int
    heading: str  # as the step screen, the batch page and the work queue name it
    entry: evaluation.StepInput

    @property
    def verify(self) -> bool:
        return self.step.verification == "required"


def next_step(session: Session, batch: Batch, *, now: datetime, tz: ZoneInfo) -> PlannedStep | None:
    """The step :func:`continue_nk_batch` would perform next in ``batch``, with the demo entry for it, or None
    when the demo performs no more steps. ``now``: the demo timeline's end (the moment the batch was opened,
    to the minute, for a batch performed in one sitting). For drivers of the screens (bench/, tools/screens/)."""
    records = batches.records(batch)
    codes = [record.code for record in records]
    made = bag_service.of_batch(session, batch)
    wanted = [(_order(records, codes, item), item) for item in batches.open_steps(session, batch)
              if item.instance <= planned_instances(codes[item.ref.position], item.step, made)]
    if not wanted:
        return None
    item = min(wanted, key=lambda w: w[0])[1]
    code = codes[item.ref.position]
    assert batch.subject is not None  # an NK batch is made for a subject
    entry = entry_for(code, item.step.id, item.instance, batch=batch, subject=batch.subject, bags=made,
                      now=now.replace(second=0, microsecond=0), tz=tz)
    heading = item.step.title + (f" ({item.step.repeat.label} {item.instance})" if item.step.repeat else "")
    return PlannedStep(code, item.ref.position, item.step, item.instance, heading, entry)
