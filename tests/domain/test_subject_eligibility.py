"""Subject eligibility at enrolment (issue [3.7] item 1): every criterion of NK-TRIAL v5 at its boundary on both
sides, limits relative to the ULN, groups of alternatives, stale and future dates, unanswered exclusions and
malformed input."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from decimal import Decimal

import pytest

from mfg.config import RESOURCE_ROOT
from mfg.demo.nk_batch import eligible_screening
from mfg.domain import guards
from mfg.domain.documents import parse_document
from mfg.domain.eligibility import LabEntry, Screening, ScreeningEntry, criteria_checked, problems, read
from mfg.domain.trial_config import SubjectEligibility, TrialConfiguration

TODAY = date(2026, 12, 7)
FIRST = date(2026, 12, 8)


def _config() -> SubjectEligibility:
    path = RESOURCE_ROOT / "sops" / "trial" / "NK-TRIAL_v5.yaml"
    config = parse_document(path.read_text(), "trial/NK-TRIAL_v5.yaml")
    assert isinstance(config, TrialConfiguration) and config.subject_eligibility is not None
    return config.subject_eligibility


CONFIG = _config()


def _eligible() -> Screening:
    screening, malformed = read(CONFIG, eligible_screening(CONFIG, TODAY), today=TODAY)
    assert not malformed and screening is not None
    return dataclasses.replace(screening, first_treatment_on=FIRST)


def _with_lab(code: str, value: str, uln: str | None = None, measured_on: date = TODAY,
              base: Screening | None = None) -> Screening:
    screening = base or _eligible()
    labs = dict(screening.labs)
    labs[code] = LabEntry(Decimal(value), Decimal(uln) if uln is not None else None, measured_on)
    return dataclasses.replace(screening, labs=labs)


def _without(*codes: str) -> Screening:
    screening = _eligible()
    return dataclasses.replace(screening, labs={c: v for c, v in screening.labs.items() if c not in codes})


def test_the_demo_screening_is_eligible():
    assert problems(CONFIG, _eligible(), today=TODAY) == []


@pytest.mark.parametrize("age,message", [
    (17, "Age 17 years is below 18: not eligible"), (18, None), (75, None),
    (76, "Age 76 years is above 75: not eligible")])
def test_age_at_both_boundaries(age, message):
    found = problems(CONFIG, dataclasses.replace(_eligible(), age_years=age), today=TODAY)
    assert found == ([message] if message else [])


@pytest.mark.parametrize("ecog,ok", [(0, True), (2, True), (3, False)])
def test_ecog_at_its_boundary(ecog, ok):
    found = problems(CONFIG, dataclasses.replace(_eligible(), ecog=ecog), today=TODAY)
    assert found == ([] if ok else [f"ECOG performance status {ecog} is above 2: not eligible"])


@pytest.mark.parametrize("code,inside,outside,message", [
    ("anc", "1.0", "0.99", "Absolute neutrophil count 0.99 10^9/L is below 1 10^9/L: not eligible"),
    ("haemoglobin", "6", "5.9", "Haemoglobin 5.9 g/dL is below 6 g/dL: not eligible"),
    ("platelets", "50", "49", "Platelets 49 10^9/L is below 50 10^9/L: not eligible"),
    ("corrected_calcium", "3.5", "3.51", "Corrected calcium 3.51 mmol/L is above 3.5 mmol/L: not eligible"),
    ("lvef", "50", "49.9", "LVEF 49.9 % is below 50 %: not eligible"),
])
def test_absolute_limits_at_both_sides(code, inside, outside, message):
    assert problems(CONFIG, _with_lab(code, inside), today=TODAY) == []
    assert problems(CONFIG, _with_lab(code, outside), today=TODAY) == [message]


@pytest.mark.parametrize("code,label,unit,times", [
    ("alt", "ALT", "U/L", "3"), ("ast", "AST", "U/L", "3"), ("bilirubin", "Total bilirubin", "umol/L", "2")])
def test_limits_relative_to_the_uln(code, label, unit, times):
    limit = Decimal(times) * 40
    assert problems(CONFIG, _with_lab(code, str(limit), "40"), today=TODAY) == []
    assert problems(CONFIG, _with_lab(code, str(limit + Decimal("0.1")), "40"), today=TODAY) == [
        f"{label} {limit + Decimal('0.1')} {unit} is above {times} × ULN (ULN 40 {unit}): not eligible"]


def test_the_example_of_the_issue_and_a_missing_uln():
    assert problems(CONFIG, _with_lab("alt", "250", "40"), today=TODAY) == [
        "ALT 250 U/L is above 3 × ULN (ULN 40 U/L): not eligible"]
    for uln in (None, "0"):
        found = problems(CONFIG, _with_lab("alt", "20", uln), today=TODAY)
        assert len(found) == 1 and found[0].startswith("ALT: enter the laboratory's upper limit of normal")


def test_a_group_is_met_by_any_recorded_member_that_meets_its_limit():
    # creatinine 1.5 x ULN met, clearance not recorded
    assert problems(CONFIG, _with_lab("creatinine", "165", "110", base=_without("creatinine_clearance")),
                    today=TODAY) == []
    # creatinine too high, but clearance >= 30: the group is met
    assert problems(CONFIG, _with_lab("creatinine_clearance", "30", base=_with_lab("creatinine", "166", "110")),
                    today=TODAY) == []
    # both recorded, both failing: each is named
    both = _with_lab("creatinine_clearance", "29", base=_with_lab("creatinine", "166", "110"))
    assert problems(CONFIG, both, today=TODAY) == [
        "Creatinine 166 umol/L is above 1.5 × ULN (ULN 110 umol/L): not eligible",
        "Creatinine clearance 29 mL/min is below 30 mL/min: not eligible"]
    # neither recorded
    assert problems(CONFIG, _without("creatinine", "creatinine_clearance"), today=TODAY) == [
        "Creatinine or Creatinine clearance: record at least one"]
    assert problems(CONFIG, _without("inr", "aptt"), today=TODAY) == ["INR or APTT: record at least one"]
    # APTT alone meets the coagulation group
    assert problems(CONFIG, _with_lab("aptt", "45", "30", base=_without("inr")), today=TODAY) == []
    # a stale member does not meet its group
    stale = _with_lab("inr", "1.0", "1.2", measured_on=FIRST - timedelta(days=4), base=_without("aptt"))
    assert problems(CONFIG, stale, today=TODAY) == [
        "INR measured 2026-12-04, more than 3 days before the first treatment on 2026-12-08: stale"]


def test_every_criterion_of_no_group_is_required():
    found = problems(CONFIG, _without("platelets"), today=TODAY)
    assert found == ["Platelets: not recorded (enter the value in 10^9/L and the date measured)"]


def test_lab_dates_within_the_window_and_not_after_today():
    assert problems(CONFIG, _with_lab("platelets", "100", measured_on=FIRST - timedelta(days=3)), today=TODAY) == []
    assert problems(CONFIG, _with_lab("platelets", "100", measured_on=FIRST - timedelta(days=4)), today=TODAY) == [
        "Platelets measured 2026-12-04, more than 3 days before the first treatment on 2026-12-08: stale"]
    assert problems(CONFIG, _with_lab("platelets", "100", measured_on=TODAY + timedelta(days=1)),
                    today=TODAY) == [
        "Platelets measured 2026-12-08, after today (2026-12-07): a value is recorded once measured"]
    # the issue's example: measured a week before the first treatment
    late = dataclasses.replace(_eligible(), first_treatment_on=date(2026, 12, 8))
    found = problems(CONFIG, _with_lab("platelets", "100", measured_on=date(2026, 12, 1), base=late), today=TODAY)
    assert found == ["Platelets measured 2026-12-01, more than 3 days before the first treatment on 2026-12-08: "
                     "stale"]


def test_the_first_treatment_may_not_be_in_the_past():
    screening = dataclasses.replace(_eligible(), first_treatment_on=TODAY)
    assert problems(CONFIG, screening, today=TODAY) == []
    found = problems(CONFIG, dataclasses.replace(screening, first_treatment_on=TODAY - timedelta(days=1)),
                     today=TODAY)
    assert "Planned first treatment 2026-12-06 is in the past (today is 2026-12-07)" in found


def test_an_exclusion_answered_yes_excludes_and_an_unanswered_one_is_never_taken_as_no():
    answered = dict(_eligible().exclusions)
    answered["pregnancy"] = True
    answered["gvhd"] = None
    found = problems(CONFIG, dataclasses.replace(_eligible(), exclusions=answered), today=TODAY)
    assert found == ["Grade II-IV GVHD needing immunosuppression? not answered: answer yes or no",
                     "Pregnant or lactating? answered yes: not eligible"]
    missing = {k: v for k, v in _eligible().exclusions.items() if k != "g_csf"}
    assert problems(CONFIG, dataclasses.replace(_eligible(), exclusions=missing), today=TODAY) == [
        "G-CSF given within 7 days before the ANC sample? not answered: answer yes or no"]


def _entry(**changes) -> ScreeningEntry:
    return dataclasses.replace(eligible_screening(CONFIG, TODAY), **changes)


@pytest.mark.parametrize("changes,message", [
    ({"age_years": "forty"}, "Age: 'forty' is not a number"),
    ({"age_years": "40.5"}, "Age: '40.5' has 1 decimal place; whole numbers only"),
    ({"age_years": ""}, "Age: enter the value"),
    ({"ecog": "6"}, "ECOG performance status: 6 is implausible"),
    ({"first_treatment_on": None}, "Planned first treatment: enter the date"),
    ({"labs": {"alt": ("2,5", "40", TODAY)}}, "ALT (U/L): '2,5' is not a number"),
    ({"labs": {"alt": ("25", "forty", TODAY)}}, "ALT: ULN (U/L): 'forty' is not a number"),
    ({"labs": {"alt": ("25", "40", None)}}, "ALT: measured on: enter the date"),
    ({"labs": {"alt": ("", "40", TODAY)}}, "ALT (U/L): enter the value"),
    ({"labs": {"platelets": ("100", "150", TODAY)}}, "Platelets: its limit is absolute; leave the ULN empty"),
    ({"labs": {"potassium": ("4", "", TODAY)}}, "potassium is not a lab criterion"),
    ({"exclusions": {"smoker": False}}, "smoker is not an exclusion question"),
])
def test_malformed_input_is_refused_by_read(changes, message):
    screening, malformed = read(CONFIG, _entry(**changes), today=TODAY)
    assert screening is None and any(p.startswith(message) for p in malformed), malformed


def test_a_lab_left_empty_is_not_recorded():
    labs = dict(eligible_screening(CONFIG, TODAY).labs)
    labs["aptt"] = ("", "", None)
    screening, malformed = read(CONFIG, _entry(labs=labs), today=TODAY)
    assert not malformed and screening is not None and "aptt" not in screening.labs


def test_the_guard_names_every_problem_and_the_cap():
    clara = guards.Person(id=1, roles=frozenset({"clinical"}), name="Clara")
    assert guards.enrol_subject(clara, enrolled=11, max_subjects=12) == []
    assert guards.enrol_subject(clara, enrolled=0, max_subjects=None) == []
    refused = guards.enrol_subject(clara, enrolled=12, max_subjects=12, eligibility_problems=["ALT too high"])
    assert guards.texts(refused) == ["ALT too high", "the trial enrols at most 12 subjects "
                                     "(escalation.max_subjects); 12 are enrolled: subject refused"]
    olivia = guards.Person(id=2, roles=frozenset({"operator"}), name="Olivia")
    assert [r.kind for r in guards.enrol_subject(olivia, enrolled=0, max_subjects=12)] == ["role"]


def test_the_criteria_checked_name_every_criterion():
    text = criteria_checked(CONFIG)
    assert "age 18-75" in text and "ECOG ≤ 2" in text and "ALT ≤ 3 × ULN" in text
    assert all(c.label in text for c in CONFIG.labs) and all(e.question in text for e in CONFIG.exclusions)
