"""The donor's infectious-disease panel (issue [3.7] item 2): every test of the configured panel, acceptable, each
from a specimen at most the configured age; every problem names its test."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from mfg.config import RESOURCE_ROOT
from mfg.domain.donor_eligibility import TestResult, panel_problems, relationship_problems
from mfg.domain.trial_config import DonorEligibility, DonorRelationship, parse_trial_configuration

ON = date(2026, 12, 7)
RULES = DonorEligibility(panel=["HIV-1/2 Ab", "HBsAg", "anti-HBc"], specimen_max_age_days=30,
                         relationships=[DonorRelationship(code="transplant_donor", label="Original transplant donor"),
                                        DonorRelationship(code="haploidentical", label="Haploidentical",
                                                          cd3_limit_per_kg=100000)])


def _panel(drawn: date = ON - timedelta(days=3), **results: str) -> list[TestResult]:
    names = {"hiv": "HIV-1/2 Ab", "hbsag": "HBsAg", "anti_hbc": "anti-HBc"}
    chosen = {"hiv": "non-reactive", "hbsag": "non-reactive", "anti_hbc": "negative"} | results
    return [TestResult(names[key], result, drawn) for key, result in chosen.items() if result]


def test_the_complete_fresh_acceptable_panel_has_no_problem():
    assert panel_problems(RULES, _panel(), on=ON) == []


def test_a_missing_test_is_named():
    assert panel_problems(RULES, _panel(anti_hbc=""), on=ON) == ["anti-HBc: no result recorded"]
    assert panel_problems(RULES, [], on=ON) == [f"{t}: no result recorded" for t in RULES.panel]


@pytest.mark.parametrize("result", ["reactive", "positive", "indeterminate"])
def test_a_result_that_is_not_negative_blocks_naming_the_test(result):
    problems = panel_problems(RULES, _panel(hbsag=result), on=ON)
    assert problems == [f"HBsAg: {result} (specimen of 2026-12-04); only negative or non-reactive allows the "
                        "determination eligible"]


def test_the_specimen_age_at_the_boundary_day_and_one_past_it():
    assert panel_problems(RULES, _panel(ON - timedelta(days=30)), on=ON) == []
    stale = panel_problems(RULES, _panel(ON - timedelta(days=31)), on=ON)
    assert stale == [f"{t}: specimen of 2026-11-06 is 31 days old; the panel needs a specimen at most 30 days old"
                     for t in RULES.panel]
    old = [TestResult("HBsAg", "negative", date(2025, 11, 2))]
    assert ("HBsAg: specimen of 2025-11-02 is 400 days old; the panel needs a specimen at most 30 days old"
            in panel_problems(RULES, old, on=ON))


def test_the_newest_specimen_decides():
    retested = _panel(hbsag="indeterminate", drawn=ON - timedelta(days=20)) + [
        TestResult("HBsAg", "negative", ON - timedelta(days=2))]
    assert panel_problems(RULES, retested, on=ON) == []
    # a reactive result on a newer specimen is new data: the older negative one does not cover it
    turned = _panel(drawn=ON - timedelta(days=20)) + [TestResult("anti-HBc", "reactive", ON - timedelta(days=2))]
    assert [p.split(":")[0] for p in panel_problems(RULES, turned, on=ON)] == ["anti-HBc"]
    # an older, stale specimen of a test with a fresh one is not looked at
    stale_then_fresh = [TestResult("HBsAg", "negative", ON - timedelta(days=90))] + _panel()
    assert panel_problems(RULES, stale_then_fresh, on=ON) == []


@pytest.mark.parametrize("result", ["reactive", "positive"])
def test_a_later_negative_result_does_not_clear_a_reactive_or_positive_one(result):
    tests = _panel(hbsag=result, drawn=ON - timedelta(days=20)) + [
        TestResult("HBsAg", "negative", ON - timedelta(days=2))]
    assert panel_problems(RULES, tests, on=ON) == [
        f"HBsAg: {result} (specimen of 2026-11-17) is on record; a later result does not clear a reactive or positive "
        "one"]
    outside = _panel() + [TestResult("HTLV-I/II Ab", result, ON - timedelta(days=400)),
                          TestResult("HTLV-I/II Ab", "negative", ON - timedelta(days=1))]
    assert [p.split(":")[0] for p in panel_problems(RULES, outside, on=ON)] == ["HTLV-I/II Ab"]


def test_a_second_run_of_the_newest_specimen_does_not_cancel_a_reactive_one():
    drawn = ON - timedelta(days=2)
    tests = _panel(drawn=drawn) + [TestResult("HBsAg", "reactive", drawn)]
    assert [p.split(":")[0] for p in panel_problems(RULES, tests, on=ON)] == ["HBsAg"]


def test_a_specimen_dated_after_the_determination_is_a_problem():
    tests = _panel(anti_hbc="") + [TestResult("anti-HBc", "negative", ON + timedelta(days=1))]
    assert panel_problems(RULES, tests, on=ON) == [
        "anti-HBc: specimen of 2026-12-08 is dated after the determination (2026-12-07)"]


def test_a_test_outside_the_panel_blocks_when_not_negative_whatever_its_age():
    tests = _panel() + [TestResult("Toxoplasma Ab", "reactive", ON - timedelta(days=400))]
    assert [p.split(":")[0] for p in panel_problems(RULES, tests, on=ON)] == ["Toxoplasma Ab"]
    assert panel_problems(RULES, _panel() + [TestResult("Toxoplasma Ab", "negative", ON - timedelta(days=400))],
                          on=ON) == []


def test_test_names_match_ignoring_case_and_spaces():
    tests = [TestResult("hiv-1/2  ab", "negative", ON), TestResult("HBSAG", "negative", ON),
             TestResult("anti-HBc", "negative", ON)]
    assert panel_problems(RULES, tests, on=ON) == []


def test_the_relationship_is_one_of_the_configured_codes():
    assert relationship_problems(RULES, "haploidentical") == []
    for bad in (None, "", "   "):
        assert relationship_problems(RULES, bad) == [
            "Choose the donor's relationship to the subject: one of transplant_donor (Original transplant donor), "
            "haploidentical (Haploidentical)."]
    assert relationship_problems(RULES, "cousin") == [
        "'cousin' is not a donor relationship of the trial configuration: one of transplant_donor (Original "
        "transplant donor), haploidentical (Haploidentical)."]


def test_nk_trial_v5_gives_the_panel_and_a_lower_limit_for_haploidentical_donors():
    config = parse_trial_configuration((RESOURCE_ROOT / "sops" / "trial" / "NK-TRIAL_v5.yaml").read_text(), "v5")
    assert config.donor_eligibility is not None and config.donor_eligibility.specimen_max_age_days == 30
    assert config.cd3_limit_for("haploidentical") == 100000
    assert config.cd3_limit_for("matched_sibling") == config.cd3_limit_for(None) == 200000
