"""What stands between a donor and the determination "eligible" (21 CFR 1271 subpart C; DOMAIN.md section 2),
under a trial configuration with a ``donor_eligibility`` block (NK-TRIAL v5 onwards; issue [3.7] item 2).

:func:`panel_problems` is the one place the rule lives: ``services.clinical.determine_eligibility`` enforces it
and the donor page asks it (what still blocks the determination). :func:`relationship_problems` is the rule of
the donor's relationship to the subject, which ``services.clinical.register_donor`` enforces.

Decisions (each is tested in ``tests/domain/test_donor_eligibility.py``):

Every test of the panel
    Each test the configuration's panel lists needs a result; a test without one blocks ("anti-HBc: no result
    recorded"). Test names match ignoring case and repeated spaces ("hbsag" is "HBsAg").
The newest specimen decides, except that a reactive result is never cleared
    For each test, the results of its newest specimen decide its age and whether an indeterminate result was
    resolved: a later specimen is new data (a donor retested negative after an indeterminate result). Every
    result of that newest specimen must be acceptable: a second run of the same specimen does not cancel a
    reactive one. A reactive or positive result on any specimen blocks, whatever came after it: a later negative
    screen does not make a reactive donor eligible (21 CFR 1271.80(d): a donor who tests reactive on a required
    screening test is ineligible; the exceptions need a physician's judgement this record does not make).
Acceptable results
    Only :data:`ACCEPTABLE_RESULTS` (negative, non-reactive); reactive, positive and indeterminate block.
    A test outside the panel still blocks when its newest result is not acceptable (every result counts, as
    before the panel was configured); its specimen's age does not matter.
The specimen's age
    A panel test's newest specimen is at most ``specimen_max_age_days`` old on the day of the determination:
    drawn exactly that many days before is accepted, one day more is stale. A specimen dated after the
    determination day is a problem (a date typed wrong).
The relationship
    Under a configuration with ``donor_eligibility`` a donor is registered with one of its relationship codes;
    a donor without one (registered before) cannot be determined eligible, since the residual T-cell limit of
    the product depends on it (``TrialConfiguration.cd3_limit_for``).
Out of scope
    The determination is checked when it is made. A donor determined eligible on a panel that is fresh that
    day stays eligible: the start of a product batch (``guards.start_product_batch`` via
    ``services.clinical.eligibility_problems``) looks at the determination only, not at the age of the
    specimen on the day of intake. Tying the panel to the collection date (21 CFR 1271.80: within 7 days of
    the collection) needs the collection date, which the batch records later (NK-INTAKE); it is not enforced.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from .trial_config import DonorEligibility

__all__ = ["ACCEPTABLE_RESULTS", "NEVER_CLEARED", "RESULTS", "TestResult", "panel_problems", "relationship_problems"]

RESULTS: tuple[str, ...] = ("negative", "non-reactive", "reactive", "positive", "indeterminate")
"""The results a donor test may have."""

ACCEPTABLE_RESULTS: tuple[str, ...] = ("negative", "non-reactive")
"""The results that allow the determination "eligible"."""

NEVER_CLEARED: tuple[str, ...] = ("reactive", "positive")
"""The results no later specimen clears (an indeterminate one a newer acceptable result resolves)."""


@dataclass(frozen=True, slots=True)
class TestResult:
    """One recorded result of a donor test, with the date its specimen was drawn."""

    __test__ = False  # not a pytest test class

    test: str
    result: str
    specimen_date: date


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def _newest(results: list[TestResult]) -> list[TestResult]:
    """The results of the newest specimen among ``results`` (not empty)."""
    newest = max(r.specimen_date for r in results)
    return [r for r in results if r.specimen_date == newest]


def _unacceptable(name: str, results: list[TestResult], found: list[TestResult]) -> list[str]:
    """The newest specimen's results that are not acceptable, then the reactive or positive results of older
    specimens (never cleared by a later one)."""
    problems = [f"{name}: {r.result} (specimen of {r.specimen_date.isoformat()}); only "
                f"{' or '.join(ACCEPTABLE_RESULTS)} allows the determination eligible"
                for r in results if r.result not in ACCEPTABLE_RESULTS]
    problems += [f"{name}: {r.result} (specimen of {r.specimen_date.isoformat()}) is on record; a later result "
                 "does not clear a reactive or positive one"
                 for r in sorted(found, key=lambda r: r.specimen_date)
                 if r not in results and r.result in NEVER_CLEARED]
    return problems


def panel_problems(rules: DonorEligibility, tests: Iterable[TestResult], *, on: date) -> list[str]:
    """Every reason the donor's ``tests`` do not allow the determination "eligible" on day ``on``, each naming
    its test (empty when the complete panel is recorded, acceptable and fresh). See the module docstring."""
    by_test: dict[str, list[TestResult]] = {}
    names: dict[str, str] = {}
    for result in tests:
        by_test.setdefault(_key(result.test), []).append(result)
        names.setdefault(_key(result.test), result.test)
    problems: list[str] = []
    limit = rules.specimen_max_age_days
    for name in rules.panel:
        found = by_test.pop(_key(name), [])
        if not found:
            problems.append(f"{name}: no result recorded")
            continue
        newest = _newest(found)
        drawn = newest[0].specimen_date
        age = (on - drawn).days
        if age < 0:
            problems.append(f"{name}: specimen of {drawn.isoformat()} is dated after the determination "
                            f"({on.isoformat()})")
        elif age > limit:
            problems.append(f"{name}: specimen of {drawn.isoformat()} is {age} days old; the panel needs a "
                            f"specimen at most {limit} days old")
        problems += _unacceptable(name, newest, found)
    for key, found in by_test.items():  # tests outside the panel
        problems += _unacceptable(names[key], _newest(found), found)
    return problems


def relationship_problems(rules: DonorEligibility, relationship: str | None) -> list[str]:
    """Why ``relationship`` is not a donor's relationship to the subject the configuration allows (empty when it
    is one of its codes)."""
    allowed = ", ".join(f"{r.code} ({r.label})" for r in rules.relationships)
    if not (relationship or "").strip():
        return [f"Choose the donor's relationship to the subject: one of {allowed}."]
    if relationship not in {r.code for r in rules.relationships}:
        return [f"{relationship!r} is not a donor relationship of the trial configuration: one of {allowed}."]
    return []
