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
