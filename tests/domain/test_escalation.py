"""Dose-escalation rules (issue [3.7] items 3 and 7): 3+3 for every count, BOIN against published values."""

from __future__ import annotations

import pytest

from mfg.domain.escalation import (
    Action,
    LevelCounts,
    boin,
    boin_boundaries,
    boin_table,
    posterior_above,
    three_plus_three,
    three_plus_three_table,
)

THREE = {0: Action.ESCALATE, 1: Action.EXPAND, 2: Action.MTD_EXCEEDED, 3: Action.MTD_EXCEEDED}
SIX = {0: Action.ESCALATE, 1: Action.ESCALATE, 2: Action.MTD_EXCEEDED, 3: Action.MTD_EXCEEDED,
       4: Action.MTD_EXCEEDED, 5: Action.MTD_EXCEEDED, 6: Action.MTD_EXCEEDED}


@pytest.mark.parametrize("dlts", range(4))
def test_three_plus_three_among_three(dlts):
    assert three_plus_three(LevelCounts(3, dlts)) is THREE[dlts]


@pytest.mark.parametrize("dlts", range(7))
def test_three_plus_three_among_six(dlts):
    assert three_plus_three(LevelCounts(6, dlts)) is SIX[dlts]


def test_three_plus_three_table_covers_every_count():
    assert three_plus_three_table() == [(3, y, THREE[y]) for y in range(4)] + [(6, y, SIX[y]) for y in range(7)]


@pytest.mark.parametrize("counts,expected", [
    (LevelCounts(2, 0, pending=1), Action.WAIT),  # a window still open: never counted as DLT-free
    (LevelCounts(3, 0, pending=1), Action.WAIT),
    (LevelCounts(2, 2, pending=1), Action.MTD_EXCEEDED),  # two DLTs decide whatever is pending
    (LevelCounts(5, 1, pending=1), Action.WAIT),
    (LevelCounts(0, 0, pending=3), Action.WAIT),
])
def test_three_plus_three_with_subjects_not_yet_evaluable(counts, expected):
    assert three_plus_three(counts) is expected


# Liu and Yuan 2015, Table 1 (φ1 = 0.6φ, φ2 = 1.4φ), printed to 3 decimals (the paper's last digit is not
# always rounded the same way: within one unit of it)
PUBLISHED_BOUNDARIES = {0.15: (0.118, 0.179), 0.20: (0.157, 0.238), 0.25: (0.197, 0.298), 0.30: (0.236, 0.358),
                        0.35: (0.276, 0.419), 0.40: (0.316, 0.479)}
# the BOIN R package's get.boundary(), to 7 digits
R_PACKAGE = {0.25: (0.1968009, 0.2983922), 0.30: (0.2364907, 0.3585195)}


@pytest.mark.parametrize("target", sorted(PUBLISHED_BOUNDARIES))
def test_boin_boundaries_match_the_published_values(target):
    bounds = boin_boundaries(target)
    assert (bounds.escalate, bounds.de_escalate) == pytest.approx(PUBLISHED_BOUNDARIES[target], abs=1e-3)
    if target in R_PACKAGE:
        assert (bounds.escalate, bounds.de_escalate) == pytest.approx(R_PACKAGE[target], abs=1e-7)


def test_boin_decision_table_for_a_target_of_0_3_matches_the_published_one():
    """Yuan et al. 2016, Table 2 (target 0.3, 1 to 12 subjects at a level)."""
    rows = boin_table(boin_boundaries(0.3))
    assert [r.escalate_at_most for r in rows] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert [r.de_escalate_at_least for r in rows] == [1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5]
    assert [r.eliminate_at_least for r in rows] == [None, None, 3, 3, 4, 4, 5, 5, 5, 6, 6, 7]


def test_the_posterior_tail_is_the_beta_one():
    # Beta(4, 1) (3 DLTs in 3): Pr(p > 0.3) = 1 - 0.3^4
    assert posterior_above(0.3, 3, 3) == pytest.approx(1 - 0.3 ** 4)
    # Beta(3, 2) (2 DLTs in 3): 1 - (4x^3 - 3x^4) at x = 0.3
    assert posterior_above(0.3, 2, 3) == pytest.approx(1 - (4 * 0.3 ** 3 - 3 * 0.3 ** 4))


@pytest.mark.parametrize("counts,expected", [
    (LevelCounts(3, 0), Action.ESCALATE),
    (LevelCounts(3, 1), Action.STAY),
    (LevelCounts(3, 2), Action.DE_ESCALATE),
    (LevelCounts(3, 3), Action.ELIMINATE),
    (LevelCounts(6, 1), Action.ESCALATE),
    (LevelCounts(6, 2), Action.STAY),
    (LevelCounts(6, 3), Action.DE_ESCALATE),
    (LevelCounts(2, 0, pending=1), Action.WAIT),
    (LevelCounts(2, 1, pending=1), Action.DE_ESCALATE),  # 1/2 is past λd already
    (LevelCounts(0, 0, pending=3), Action.WAIT),
])
def test_boin_recommendations_at_a_target_of_0_3(counts, expected):
    assert boin(counts, boin_boundaries(0.3)) is expected


def test_impossible_counts_are_refused():
    with pytest.raises(ValueError):
        LevelCounts(3, 4)
    with pytest.raises(ValueError):
        boin_boundaries(1.2)


# --- the recommendation across levels and the decision guards (issue [3.7] item 4) ----------------------

LEVELS = ["DL1", "DL2", "DL3", "DL4"]


def _recommend(counts, current, rule="3+3", target=None):
    from mfg.domain.escalation import recommend

    return recommend(rule=rule, levels=LEVELS, counts={k: LevelCounts(*v) for k, v in counts.items()},
                     current=current, start="DL1", target=target)


@pytest.mark.parametrize("counts,current,expected", [
    ({}, None, ("start", "DL1")),
    ({"DL1": (0, 0, 3)}, "DL1", ("wait", "DL1")),
    ({"DL1": (3, 0, 0)}, "DL1", ("escalate", "DL2")),
    ({"DL1": (3, 1, 0)}, "DL1", ("expand", "DL1")),
    ({"DL1": (6, 1, 0)}, "DL1", ("escalate", "DL2")),
    ({"DL1": (3, 0, 0), "DL2": (2, 2, 1)}, "DL2", ("MTD exceeded", "DL1")),
    ({"DL1": (3, 2, 0)}, "DL1", ("MTD exceeded", None)),  # the lowest level is too toxic: stop
    # escalation is never back into a closed level: 0/3 again at DL1 below a closed DL2 expands DL1 to 6
    ({"DL1": (3, 0, 0), "DL2": (3, 2, 0)}, "DL1", ("expand", "DL1")),
    ({"DL1": (6, 0, 0), "DL2": (3, 2, 0)}, "DL1", ("stay", "DL1")),
    ({"DL4": (3, 0, 0)}, "DL4", ("expand", "DL4")),  # the highest level: no level above
])
def test_three_plus_three_recommendation_across_levels(counts, current, expected):
    found = _recommend(counts, current)
    assert (found.action, found.level) == expected


@pytest.mark.parametrize("counts,current,expected", [
    ({"DL2": (3, 0, 0)}, "DL2", ("escalate", "DL3")),
    ({"DL2": (3, 1, 0)}, "DL2", ("stay", "DL2")),  # 0.333: between 0.236 and 0.358 at a target of 0.3
    ({"DL2": (6, 3, 0)}, "DL2", ("de-escalate", "DL1")),
    ({"DL1": (3, 3, 0)}, "DL1", ("eliminate", None)),
    ({"DL1": (1, 1, 0)}, "DL1", ("stay", "DL1")),  # de-escalate, but at the lowest level
])
def test_boin_recommendation_across_levels(counts, current, expected):
    found = _recommend(counts, current, rule="boin", target=0.3)
    assert (found.action, found.level) == expected


def test_closed_levels_start_at_the_lowest_exceeded_level():
    from mfg.domain.escalation import closed_levels

    counts = {"DL1": LevelCounts(3, 0), "DL2": LevelCounts(3, 1), "DL3": LevelCounts(2, 2, 1)}
    assert closed_levels("3+3", LEVELS, counts, None) == ["DL3", "DL4"]
    assert closed_levels("3+3", LEVELS, {"DL1": LevelCounts(3, 1)}, None) == []


def test_the_decision_guard():
    from mfg.domain import guards
    from mfg.domain.refusal import Person

    clara, quinn = Person(1, frozenset({"clinical"}), "Clara"), Person(2, frozenset({"qa"}), "Quinn")

    def refused(actor=clara, **facts):
        base = dict(levels=LEVELS, current="DL1", level="DL2", closed=[], recommended="DL2", reason="", first=False)
        return guards.texts(guards.decide_escalation(actor, **(base | facts)))

    assert refused() == []
    assert refused(actor=quinn) == ["signing an escalation decision needs the clinical role"]
    assert refused(level="DL3", reason="x") == ["DL3 skips a level: at most DL2 may be opened now"]
    assert refused(level="DL1") == ["the decision differs from the recommendation (DL2): give the reason"]
    assert refused(level="DL1", reason="a grade 3 event under review") == []
    assert refused(level=None, reason="sponsor's hold") == []
    assert refused(closed=["DL2", "DL3", "DL4"], recommended="DL1", level="DL2", reason="x") == [
        "DL2 is closed: the cohort ledger shows the MTD exceeded at DL2; no decision opens it or a higher level"]
    assert refused(current=None, first=True, recommended="DL1", level="DL2", reason="x") == [
        "DL2 skips a level: at most DL1 may be opened now"]


def test_the_open_level_guard():
    from mfg.domain import guards
    from mfg.domain.escalation import OpenLevel

    def refused(level="DL2", **facts):
        base = dict(decision="escalation decision 2 (DL2, Approved by C)", decision_id=2, level="DL2", cohort=2,
                    assigned=1, cohort_size=3)
        return guards.texts(guards.level_open(OpenLevel(**(base | facts)), level=level))

    assert refused() == []
    assert refused("DL3") == ["dose level DL3 is not open: escalation decision 2 (DL2, Approved by C) opened DL2; "
                              "planning refuses any other level"]
    assert refused(assigned=3)[0].startswith("cohort 2 at DL2 is full (3 of 3)")
    assert refused(decision=None, decision_id=None, level=None)[0].startswith("no dose level is open")
