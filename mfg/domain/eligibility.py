"""Subject eligibility at enrolment (issue [3.7] item 1): the screening a clinical coordinator enters, checked
against the trial configuration's ``subject_eligibility`` (age, ECOG, the organ-function limits measured within
``lab_window_days`` before the first treatment, the exclusions that are facts).

Pure: :func:`read` turns what was typed into a :class:`Screening` or says what is malformed (not a number, a
date missing: nothing is stored); :func:`problems` says every reason the screened subject is not eligible, each
naming its criterion. ``guards.enrol_subject`` refuses enrolment with those reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal

from . import inputs
from .errors import ValidationFailed
from .trial_config import LabCriterion, SubjectEligibility


@dataclass(frozen=True)
class LabEntry:
    """One lab value as measured: the value in the criterion's unit, the laboratory's ULN (for a limit relative
    to it), the day the sample was taken."""

    value: Decimal
    uln: Decimal | None
    measured_on: date


@dataclass(frozen=True)
class Screening:
    """A screening as read: ``labs`` holds the criteria recorded (a code absent: not recorded); ``exclusions``
    each question's answer (None or absent: not answered)."""

    age_years: int
    ecog: int
    first_treatment_on: date
    labs: Mapping[str, LabEntry] = field(default_factory=dict)
    exclusions: Mapping[str, bool | None] = field(default_factory=dict)


@dataclass(frozen=True)
class ScreeningEntry:
    """A screening as typed: ``labs`` maps a criterion's code to (value, ULN, date measured), each as entered
    ("" or None: left empty); ``exclusions`` each question's answer (None: not answered)."""

    age_years: str
    ecog: str
    first_treatment_on: date | str | None
    labs: Mapping[str, tuple[str, str, date | str | None]] = field(default_factory=dict)
    exclusions: Mapping[str, bool | None] = field(default_factory=dict)


def number_text(value: Decimal | float) -> str:
    """``value`` as a person writes it: 3, 1.5, 0.25 (no exponent, no trailing zeros)."""
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    text = format(number.normalize(), "f")
    return text


def _number_rule(name: str, label: str | None = None) -> inputs.Number:
    rule = inputs.rule(name)
    assert isinstance(rule, inputs.Number)
    return rule if label is None else replace(rule, label=label)


def _day_rule(name: str, label: str | None = None) -> inputs.DateRange:
    rule = inputs.rule(name)
    assert isinstance(rule, inputs.DateRange)
    return rule if label is None else replace(rule, label=label)


_AGE = _number_rule("age_years")
_ECOG = _number_rule("ecog")
_FIRST = _day_rule("first_treatment_on")


def _clean_number(rule: inputs.Number, text: str, problems: list[str]) -> Decimal | None:
    if not (text or "").strip():
        problems.append(f"{rule.label}: enter the value")
        return None
    try:
        return rule.clean(text)
    except ValidationFailed as exc:
        problems.extend(exc.problems)
        return None


def _clean_day(rule: inputs.DateRange, value: date | str | None, today: date, problems: list[str]) -> date | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.append(f"{rule.label}: enter the date")
        return None
    try:
        return rule.clean(value, today=today)
    except ValidationFailed as exc:
        problems.extend(exc.problems)
        return None


def _read_lab(criterion: LabCriterion, typed: tuple[str, str, date | str | None], today: date,
              problems: list[str]) -> LabEntry | None:
    value_text, uln_text, measured = typed
    value_text, uln_text = (value_text or "").strip(), (uln_text or "").strip()
    blank_day = measured is None or (isinstance(measured, str) and not measured.strip())
    if not value_text and not uln_text and blank_day:
        return None  # not recorded
    before = len(problems)
    value = _clean_number(_number_rule("lab_value", f"{criterion.label} ({criterion.unit})"), value_text, problems)
    uln: Decimal | None = None
    if criterion.uln:
        if uln_text:
            uln = _clean_number(_number_rule("lab_uln", f"{criterion.label}: ULN ({criterion.unit})"), uln_text,
                                problems)
    elif uln_text:
        problems.append(f"{criterion.label}: its limit is absolute; leave the ULN empty")
    day = _clean_day(_day_rule("lab_measured_on", f"{criterion.label}: measured on"), measured, today, problems)
    if len(problems) > before or value is None or day is None:
        return None
    return LabEntry(value=value, uln=uln, measured_on=day)


def read(config: SubjectEligibility, entry: ScreeningEntry, *, today: date) -> tuple[Screening | None, list[str]]:
    """The screening ``entry`` as typed, read against ``config``: (the screening, []) or (None, every
    malformed input: not a number, a date missing or implausible, an unknown criterion)."""
    problems: list[str] = []
    age = _clean_number(_AGE, entry.age_years, problems)
    ecog = _clean_number(_ECOG, entry.ecog, problems)
    first = _clean_day(_FIRST, entry.first_treatment_on, today, problems)
    known = {c.code: c for c in config.labs}
    problems += [f"{code} is not a lab criterion of the trial configuration" for code in entry.labs
                 if code not in known]
    questions = {e.code for e in config.exclusions}
    problems += [f"{code} is not an exclusion question of the trial configuration" for code in entry.exclusions
                 if code not in questions]
    labs: dict[str, LabEntry] = {}
    for criterion in config.labs:
        typed = entry.labs.get(criterion.code)
        if typed is not None:
            lab = _read_lab(criterion, typed, today, problems)
            if lab is not None:
                labs[criterion.code] = lab
    if problems or age is None or ecog is None or first is None:
        return None, problems
    return Screening(age_years=int(age), ecog=int(ecog), first_treatment_on=first, labs=labs,
                     exclusions={code: entry.exclusions.get(code) for code in questions}), []


def _limit(value: float) -> Decimal:
    return Decimal(str(value))


def lab_problems(config: SubjectEligibility, criterion: LabCriterion, lab: LabEntry, *, first_treatment_on: date,
                 today: date) -> list[str]:
    """Why the recorded ``lab`` does not meet ``criterion`` (empty: met): a date after today or more than
    ``lab_window_days`` before the first treatment (stale), a missing ULN, a value beyond its limit."""
    label, unit = criterion.label, criterion.unit
    found: list[str] = []
    if lab.measured_on > today:
        found.append(f"{label} measured {lab.measured_on.isoformat()}, after today ({today.isoformat()}): "
                     "a value is recorded once measured")
    elif (first_treatment_on - lab.measured_on).days > config.lab_window_days:
        found.append(f"{label} measured {lab.measured_on.isoformat()}, more than {config.lab_window_days} days "
                     f"before the first treatment on {first_treatment_on.isoformat()}: stale")
    value = number_text(lab.value)
    if criterion.min is not None and lab.value < _limit(criterion.min):
        found.append(f"{label} {value} {unit} is below {number_text(criterion.min)} {unit}: not eligible")
    if criterion.max is not None:
        if criterion.uln:
            if lab.uln is None or lab.uln <= 0:
                found.append(f"{label}: enter the laboratory's upper limit of normal (ULN, {unit}), more than 0: "
                             f"the limit is {number_text(criterion.max)} × ULN")
            elif lab.value > _limit(criterion.max) * lab.uln:
                found.append(f"{label} {value} {unit} is above {number_text(criterion.max)} × ULN "
                             f"(ULN {number_text(lab.uln)} {unit}): not eligible")
        elif lab.value > _limit(criterion.max):
            found.append(f"{label} {value} {unit} is above {number_text(criterion.max)} {unit}: not eligible")
    return found


def problems(config: SubjectEligibility, screening: Screening, *, today: date) -> list[str]:
    """Every reason the subject of ``screening`` is not eligible under ``config`` (empty: eligible), each
    naming its criterion. A criterion of no group is required; a group is met when any of its members is
    recorded and met (a member not recorded, or recorded and not met while another is met, is no problem);
    an exclusion not answered is a problem, never taken as "no"."""
    found: list[str] = []
    age = config.age_years
    if screening.age_years < age.min:
        found.append(f"Age {screening.age_years} years is below {age.min}: not eligible")
    elif screening.age_years > age.max:
        found.append(f"Age {screening.age_years} years is above {age.max}: not eligible")
    if screening.ecog > config.ecog_max:
        found.append(f"ECOG performance status {screening.ecog} is above {config.ecog_max}: not eligible")
    first = screening.first_treatment_on
    if first < today:
        found.append(f"Planned first treatment {first.isoformat()} is in the past (today is {today.isoformat()})")
    groups: dict[str, list[LabCriterion]] = {}
    for criterion in config.labs:
        if criterion.group is not None:
            groups.setdefault(criterion.group, []).append(criterion)
            continue
        lab = screening.labs.get(criterion.code)
        if lab is None:
            found.append(f"{criterion.label}: not recorded (enter the value in {criterion.unit} and the date "
                         "measured)")
        else:
            found += lab_problems(config, criterion, lab, first_treatment_on=first, today=today)
    for members in groups.values():
        recorded = [(c, screening.labs[c.code]) for c in members if c.code in screening.labs]
        if not recorded:
            found.append(f"{' or '.join(c.label for c in members)}: record at least one")
            continue
        each = [lab_problems(config, c, lab, first_treatment_on=first, today=today) for c, lab in recorded]
        if all(each):
            found += [problem for member in each for problem in member]
    for exclusion in config.exclusions:
        answer = screening.exclusions.get(exclusion.code)
        if answer is None:
            found.append(f"{exclusion.question} not answered: answer yes or no")
        elif answer:
            found.append(f"{exclusion.question} answered yes: not eligible")
    return found


def limit_text(criterion: LabCriterion) -> str:
    """``criterion``'s limit as the screen and the signature show it: "≥ 50 10^9/L", "≤ 3 × ULN"."""
    limits = []
    if criterion.min is not None:
        limits.append(f"≥ {number_text(criterion.min)} {criterion.unit}")
    if criterion.max is not None:
        limits.append(f"≤ {number_text(criterion.max)} × ULN" if criterion.uln
                      else f"≤ {number_text(criterion.max)} {criterion.unit}")
    return " and ".join(limits)


def criteria_checked(config: SubjectEligibility) -> str:
    """The criteria a screening was checked against, as the enrolment signature lists them."""
    labs = [f"{c.label} {limit_text(c)}" + (f" [{c.group}]" if c.group else "") for c in config.labs]
    exclusions = "; ".join(f"{e.question} no" for e in config.exclusions)
    return (f"eligible: age {config.age_years.min}-{config.age_years.max} years; ECOG ≤ {config.ecog_max}; "
            f"labs within {config.lab_window_days} days before first treatment: {'; '.join(labs)}"
            + (f"; exclusions: {exclusions}" if exclusions else ""))
