"""Dose calculation and bag split: worked examples derived by hand, the two release limits, bags, expiry."""

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfg.domain.dose import (
    ENDOTOXIN_LIMIT,
    RESIDUAL_T_CELL_LIMIT,
    Bag,
    Formulation,
    LimitExceeded,
    formulation,
    split_into_bags,
)
from mfg.domain.errors import DomainError, ValidationFailed

D = Decimal
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

# The residual T-cell and endotoxin limits of the release specification (DOMAIN.md section 4).
LIMITS: dict[str, Any] = {"cd3_limit_per_kg": D("2e5"), "endotoxin_limit_eu_per_kg": D("5")}

# DOMAIN.md section 10: subject 62.4 kg at DL2 (3 x 10^6/kg); product 1.5 x 10^7 viable/mL, 93 % NK,
# 0.25 % CD3+, 0.12 EU/mL.
DOMAIN_EXAMPLE: dict[str, Any] = {
    "dose_per_kg": D("3e6"),
    "weight_kg": D("62.4"),
    "viable_per_ml": D("1.5e7"),
    "nk_fraction": D("0.93"),
    "cd3_fraction": D("0.0025"),
    "endotoxin_eu_per_ml": D("0.12"),
    **LIMITS,
}

# A product that meets its purity and dose but carries many T cells: 2.5 x 10^7 viable/mL, 80 % NK,
# 5 % CD3+, 0.1 EU/mL; subject 50 kg.
T_CELL_RICH: dict[str, Any] = {
    "weight_kg": D("50"),
    "viable_per_ml": D("2.5e7"),
    "nk_fraction": D("0.8"),
    "cd3_fraction": D("0.05"),
    "endotoxin_eu_per_ml": D("0.1"),
    **LIMITS,
}

FORMULATED_AT = datetime(2025, 6, 3, 14, 30, tzinfo=BERLIN)  # 12:30 UTC (CEST is UTC+2)
SHELF_LIFE = timedelta(hours=48)


def refusal(**inputs: Any) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as caught:
        formulation(**inputs)
    return caught.value


def invalid(**inputs: Any) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        formulation(**inputs)
    assert not isinstance(caught.value, LimitExceeded)
    return caught.value.problems


def bags_of(f: Formulation, max_bag_volume_ml: Any, **kwargs: Any) -> list[Bag]:
    kwargs.setdefault("formulated_at", FORMULATED_AT)
    kwargs.setdefault("shelf_life", SHELF_LIFE)
    return split_into_bags(f, max_bag_volume_ml=max_bag_volume_ml, **kwargs)


# --- worked examples -----------------------------------------------------------------------------


def test_the_domain_worked_example() -> None:
    f = formulation(**DOMAIN_EXAMPLE)
    # target NK = 3e6/kg x 62.4 kg = 187.2e6 = 1.872e8 cells
    assert f.nk_cells == D("187200000")
    # NK cells per mL = 1.5e7 x 0.93 = 1.395e7
    # volume = 1.872e8 / 1.395e7 = 187.2 / 13.95 = 13.4193548387... mL
    #   (13.95 x 13.4 = 186.93; the remaining 0.27 / 13.95 = 0.01935...)
    assert f.volume_ml_exact.quantize(D("0.0001")) == D("13.4194")
    assert f.volume_ml_exact == D("187.2") / D("13.95")
    # drawn: 13.4193... rounded half-up to 0.1 mL = 13.4 mL
    assert f.volume_ml == D("13.4")
    assert str(f.volume_ml) == "13.4"
    # viable cells drawn = 13.4 x 1.5e7 = 2.01e8; NK cells drawn = 2.01e8 x 0.93 = 1.8693e8
    assert f.total_viable_cells == D("201000000")
    assert f.delivered_nk_cells == D("186930000")
    # CD3+ cells = 2.01e8 x 0.0025 = 502,500; per kg = 502,500 / 62.4 = 8052.88... (62.4 x 8052 = 502,444.8;
    # 55.2 / 62.4 = 0.8846...), i.e. ~8.1 x 10^3/kg as DOMAIN.md says; well below 2 x 10^5
    assert f.cd3_cells == D("502500")
    assert f.cd3_per_kg.quantize(D("0.01")) == D("8052.88")
    assert f.cd3_per_kg == D("502500") / D("62.4")
    # endotoxin = 13.4 mL x 0.12 EU/mL = 1.608 EU; per kg = 1.608 / 62.4 = 0.025769... (~0.026 EU/kg) <= 5
    assert f.endotoxin_eu == D("1.608")
    assert f.endotoxin_eu_per_kg.quantize(D("0.000001")) == D("0.025769")
    # the T-cell cap: 2e5 x 0.93 / 0.0025 = 2e5 x 372 = 7.44e7 NK cells/kg, far above the 3e6/kg dose
    assert f.max_nk_per_kg_by_t_cells == D("7.44e7")
    # inputs are kept
    assert (f.weight_kg, f.nk_fraction, f.cd3_limit_per_kg) == (D("62.4"), D("0.93"), D("2e5"))


def test_limits_are_checked_on_the_rounded_volume_the_subject_receives() -> None:
    f = formulation(**DOMAIN_EXAMPLE)
    # from the exact 13.4193... mL the CD3+ dose would be 13.4193... x 37,500 / 62.4 = 8064.5/kg; from the
    # 13.4 mL actually drawn it is 8052.9/kg: the drawn volume is what counts
    assert f.cd3_per_kg == f.volume_ml * D("1.5e7") * D("0.0025") / D("62.4")
    assert f.cd3_per_kg != f.volume_ml_exact * D("1.5e7") * D("0.0025") / D("62.4")
    # the subject gets 1.8693e8 / 62.4 = 2,995,673/kg, slightly under the 3e6/kg target
    assert f.delivered_nk_per_kg.quantize(D("1")) == D("2995673")


def test_a_second_example_with_exact_numbers() -> None:
    f = formulation(
        dose_per_kg="1e7",  # DL3
        weight_kg=80,
        viable_per_ml="2.0e7",
        nk_fraction="0.80",
        cd3_fraction="0.01",
        endotoxin_eu_per_ml="0.5",
        **LIMITS,
    )
    # target NK = 1e7 x 80 = 8e8; NK per mL = 2e7 x 0.8 = 1.6e7; volume = 8e8 / 1.6e7 = 50 mL exactly
    assert f.nk_cells == D("8e8")
    assert f.volume_ml_exact == D("50")
    assert f.volume_ml == D("50.0") and str(f.volume_ml) == "50.0"
    # viable drawn = 50 x 2e7 = 1e9; NK drawn = 1e9 x 0.8 = 8e8 = the target (no rounding loss)
    assert f.total_viable_cells == D("1e9")
    assert f.delivered_nk_cells == f.nk_cells
    # CD3+ = 1e9 x 0.01 = 1e7 cells; per kg = 1e7 / 80 = 125,000 < 200,000
    assert f.cd3_per_kg == D("125000")
    # endotoxin = 50 x 0.5 = 25 EU; per kg = 25 / 80 = 0.3125 <= 5
    assert f.endotoxin_eu_per_kg == D("0.3125")
    # cap = 2e5 x 0.8 / 0.01 = 1.6e7 NK/kg >= the 1e7/kg dose
    assert f.max_nk_per_kg_by_t_cells == D("1.6e7")


def test_inputs_may_be_int_float_str_or_decimal_with_the_same_result() -> None:
    as_floats = {name: float(value) for name, value in DOMAIN_EXAMPLE.items()}
    as_strings = {name: str(value) for name, value in DOMAIN_EXAMPLE.items()}
    decimal = formulation(**DOMAIN_EXAMPLE)
    assert formulation(**as_floats).cd3_per_kg == decimal.cd3_per_kg
    assert formulation(**as_strings) == decimal
    # floats go through str(): 0.93 is Decimal("0.93"), not 0.93000000000000004884...
    assert formulation(**as_floats).nk_fraction == D("0.93")
    ints = formulation(
        dose_per_kg=3_000_000, weight_kg=60, viable_per_ml=15_000_000, nk_fraction=1, cd3_fraction=0,
        endotoxin_eu_per_ml=0, cd3_limit_per_kg=200_000, endotoxin_limit_eu_per_kg=5,
    )
    # 3e6 x 60 = 1.8e8; / (1.5e7 x 1) = 12 mL
    assert ints.volume_ml == D("12.0")


def test_volume_rounds_half_up_to_a_tenth_of_a_millilitre() -> None:
    base = dict(DOMAIN_EXAMPLE, weight_kg=50, viable_per_ml="1e7", nk_fraction=1, cd3_fraction=0)
    # 2,450,000/kg x 50 kg = 1.225e8 NK; / 1e7 per mL = 12.25 mL exactly -> half-up -> 12.3 (not 12.2)
    half = formulation(**dict(base, dose_per_kg=2_450_000))
    assert (half.volume_ml_exact, half.volume_ml) == (D("12.25"), D("12.3"))
    # 2,449,999/kg x 50 = 122,499,950; / 1e7 = 12.249995 mL -> 12.2
    below = formulation(**dict(base, dose_per_kg=2_449_999))
    assert (below.volume_ml_exact, below.volume_ml) == (D("12.249995"), D("12.2"))


def test_no_t_cell_cap_without_cd3_cells() -> None:
    f = formulation(**dict(DOMAIN_EXAMPLE, cd3_fraction=0))
    assert f.max_nk_per_kg_by_t_cells is None
    assert f.cd3_per_kg == 0


# --- the residual T-cell limit -------------------------------------------------------------------


def test_a_product_meeting_the_dose_but_failing_the_t_cell_cap_is_refused() -> None:
    # cap = T-cell limit x NK fraction / CD3+ fraction = 2e5 x 0.8 / 0.05 = 2e5 x 16 = 3.2e6 NK cells/kg.
    # At 3e6/kg (below the cap) the product is fine:
    #   NK = 3e6 x 50 = 1.5e8; NK per mL = 2.5e7 x 0.8 = 2e7; volume = 1.5e8 / 2e7 = 7.5 mL
    #   CD3+ per kg = 7.5 x 2.5e7 x 0.05 / 50 = 9,375,000 / 50 = 187,500 < 200,000
    fine = formulation(dose_per_kg="3e6", **T_CELL_RICH)
    assert fine.volume_ml == D("7.5")
    assert fine.cd3_per_kg == D("187500")
    assert fine.max_nk_per_kg_by_t_cells == D("3.2e6")
    # At 1e7/kg the NK dose itself is deliverable (25 mL of an 80 % pure product) but above the cap:
    #   NK = 1e7 x 50 = 5e8; volume = 5e8 / 2e7 = 25.0 mL
    #   CD3+ per kg = 25 x 2.5e7 x 0.05 / 50 = 31,250,000 / 50 = 625,000 >= 200,000 -> refused
    refused = refusal(dose_per_kg="1e7", **T_CELL_RICH)
    assert refused.limit == RESIDUAL_T_CELL_LIMIT == "residual T-cell limit"
    assert refused.limits == [RESIDUAL_T_CELL_LIMIT]
    assert (refused.value, refused.maximum) == (D("625000"), D("2e5"))
    assert len(refused.problems) == 1
    assert "residual T-cell limit" in refused.problems[0]
    assert "at most 3.2 x 10^6 NK cells/kg" in refused.problems[0]
    assert isinstance(refused, ValidationFailed) and isinstance(refused, DomainError)
    # the refused calculation is attached, so the edge can show the numbers
    assert refused.formulation is not None
    assert refused.formulation.volume_ml == D("25.0")
    assert refused.formulation.nk_cells == D("5e8")


def test_cd3_dose_equal_to_the_limit_is_refused_because_it_must_be_strictly_below() -> None:
    # a dose exactly at the cap: 3.2e6 x 50 = 1.6e8 NK; volume = 1.6e8 / 2e7 = 8.0 mL;
    # CD3+ per kg = 8 x 2.5e7 x 0.05 / 50 = 10,000,000 / 50 = 200,000 = the limit -> refused ("< 2 x 10^5")
    at_limit = refusal(dose_per_kg="3.2e6", **T_CELL_RICH)
    assert (at_limit.limit, at_limit.value, at_limit.maximum) == (RESIDUAL_T_CELL_LIMIT, D("200000"), D("2e5"))
    # one cell per kg of headroom: a limit of 200,001 accepts the same product
    just_below = formulation(**dict(T_CELL_RICH, dose_per_kg="3.2e6", cd3_limit_per_kg=200_001))
    assert just_below.cd3_per_kg == D("200000")


def test_rounding_up_the_volume_can_tip_the_t_cell_dose_over_the_limit() -> None:
    # 3.19e6 x 50 = 1.595e8 NK; volume = 1.595e8 / 2e7 = 7.975 mL -> drawn 8.0 mL;
    # the exact volume would give 7.975 x 25,000 = 199,375/kg (below), the drawn 8.0 mL gives 200,000 (refused)
    refused = refusal(dose_per_kg="3.19e6", **T_CELL_RICH)
    assert refused.formulation is not None
    assert refused.formulation.volume_ml_exact == D("7.975")
    assert refused.value == D("200000")


# --- the endotoxin limit -------------------------------------------------------------------------

# 50 kg at 3e6/kg = 1.5e8 NK; 2e7 viable/mL x 0.75 NK = 1.5e7 NK/mL; volume = 10.0 mL;
# CD3+ = 10 x 2e7 x 0.001 / 50 = 4,000/kg (fine). Endotoxin per kg = 10 x EU/mL / 50 = EU/mL / 5.
LOW_T_CELLS: dict[str, Any] = {
    "dose_per_kg": D("3e6"),
    "weight_kg": D("50"),
    "viable_per_ml": D("2e7"),
    "nk_fraction": D("0.75"),
    "cd3_fraction": D("0.001"),
    **LIMITS,
}


def test_too_much_endotoxin_is_refused() -> None:
    # DOMAIN example at 24 EU/mL: 13.4 x 24 = 321.6 EU; / 62.4 = 5.1538... EU/kg > 5
    refused = refusal(**dict(DOMAIN_EXAMPLE, endotoxin_eu_per_ml=24))
    assert refused.limit == ENDOTOXIN_LIMIT == "endotoxin limit"
    assert refused.limits == [ENDOTOXIN_LIMIT]
    assert refused.value == D("321.6") / D("62.4")
    assert refused.value.quantize(D("0.0001")) == D("5.1538")
    assert refused.maximum == D("5")
    assert len(refused.problems) == 1 and "endotoxin limit" in refused.problems[0]


def test_endotoxin_equal_to_the_limit_is_accepted() -> None:
    f = formulation(**LOW_T_CELLS, endotoxin_eu_per_ml=25)
    # 10.0 mL x 25 EU/mL = 250 EU; / 50 kg = 5 EU/kg = the limit: allowed ("<= 5 EU/kg")
    assert f.volume_ml == D("10.0")
    assert f.cd3_per_kg == D("4000")
    assert f.endotoxin_eu_per_kg == D("5")
    # 25.01 EU/mL: 250.1 / 50 = 5.002 EU/kg > 5 -> refused
    refused = refusal(**LOW_T_CELLS, endotoxin_eu_per_ml="25.01")
    assert (refused.limit, refused.value, refused.maximum) == (ENDOTOXIN_LIMIT, D("5.002"), D("5"))


def test_both_limits_exceeded_are_both_reported_t_cells_first() -> None:
    # the 1e7/kg T-cell-rich product (625,000 CD3+/kg) at 12 EU/mL: 25 mL x 12 = 300 EU / 50 kg = 6 EU/kg > 5
    refused = refusal(**dict(T_CELL_RICH, dose_per_kg="1e7", endotoxin_eu_per_ml=12))
    assert refused.limits == [RESIDUAL_T_CELL_LIMIT, ENDOTOXIN_LIMIT]
    assert (refused.limit, refused.value, refused.maximum) == (RESIDUAL_T_CELL_LIMIT, D("625000"), D("2e5"))
    assert [(b.limit, b.value, b.maximum) for b in refused.breaches] == [
        (RESIDUAL_T_CELL_LIMIT, D("625000"), D("2e5")),
        (ENDOTOXIN_LIMIT, D("6"), D("5")),
    ]
    assert len(refused.problems) == 2
    assert "residual T-cell limit" in refused.problems[0] and "endotoxin limit" in refused.problems[1]
    assert str(refused) == "; ".join(refused.problems)


def test_limit_exceeded_needs_a_breach() -> None:
    with pytest.raises(ValueError):
        LimitExceeded()


# --- malformed inputs ----------------------------------------------------------------------------


def test_every_malformed_input_is_listed() -> None:
    problems = invalid(
        dose_per_kg=0,
        weight_kg=-1,
        viable_per_ml="abc",
        nk_fraction=0,
        cd3_fraction=1,
        endotoxin_eu_per_ml="-0.1",
        cd3_limit_per_kg=float("nan"),
        endotoxin_limit_eu_per_kg=True,
    )
    assert len(problems) == 8, problems
    expected = [
        "dose_per_kg must be greater than 0",
        "weight_kg must be greater than 0",
        "viable_per_ml must be a number",
        "nk_fraction must be greater than 0 and at most 1",
        "cd3_fraction must be at least 0 and below 1",
        "endotoxin_eu_per_ml must not be negative",
        "cd3_limit_per_kg must be a finite number",
        "endotoxin_limit_eu_per_kg must be a number",
    ]
    for text in expected:
        assert any(problem.startswith(text) for problem in problems), (text, problems)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("nk_fraction", 93, "nk_fraction must be greater than 0 and at most 1 (a fraction: 0.93 for 93 %)"),
        ("nk_fraction", "-0.1", "nk_fraction must be greater than 0"),
        ("cd3_fraction", "-0.001", "cd3_fraction must be at least 0"),
        ("weight_kg", 0, "weight_kg must be greater than 0 kg"),
        ("viable_per_ml", "0", "viable_per_ml must be greater than 0"),
        ("cd3_limit_per_kg", -5, "cd3_limit_per_kg must be greater than 0"),
        ("endotoxin_limit_eu_per_kg", 0, "endotoxin_limit_eu_per_kg must be greater than 0"),
        ("dose_per_kg", "inf", "dose_per_kg must be a finite number"),
        ("dose_per_kg", "", "dose_per_kg must be a number"),
        ("weight_kg", None, "weight_kg must be a number, got NoneType"),
        ("weight_kg", [62.4], "weight_kg must be a number, got list"),
    ],
)
def test_one_malformed_input(name: str, value: Any, message: str) -> None:
    problems = invalid(**dict(DOMAIN_EXAMPLE, **{name: value}))
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_boundaries_of_the_fractions_and_endotoxin_are_accepted() -> None:
    # NK fraction 1 with CD3+ 0, and no endotoxin at all, are valid
    f = formulation(**dict(DOMAIN_EXAMPLE, nk_fraction=1, cd3_fraction=0, endotoxin_eu_per_ml=0))
    assert f.endotoxin_eu_per_kg == 0
    # 1.872e8 / 1.5e7 = 12.48 -> 12.5 mL
    assert f.volume_ml == D("12.5")


def test_nk_and_cd3_fractions_cannot_exceed_the_whole() -> None:
    problems = invalid(**dict(DOMAIN_EXAMPLE, nk_fraction="0.95", cd3_fraction="0.1"))
    assert problems == [
        "nk_fraction + cd3_fraction must not exceed 1 (CD3-CD56+ and CD3+ cells are disjoint), got 1.05"
    ]


def test_a_volume_that_rounds_to_nothing_is_refused() -> None:
    # 1e5/kg x 2 kg = 2e5 NK; / (1e7 x 1) = 0.02 mL -> 0.0 mL: nothing to draw
    problems = invalid(**dict(DOMAIN_EXAMPLE, dose_per_kg="1e5", weight_kg=2, viable_per_ml="1e7", nk_fraction=1,
                              cd3_fraction=0))
    assert len(problems) == 1 and "rounds to 0.0 mL" in problems[0]


def test_numbers_too_large_to_calculate_with_are_refused() -> None:
    problems = invalid(**dict(DOMAIN_EXAMPLE, dose_per_kg="1e999998", weight_kg="1e999998"))
    assert problems == ["the inputs are too large or too small to calculate a dose with"]


# --- bags ----------------------------------------------------------------------------------------


def test_the_domain_example_in_bags_of_at_most_ten_millilitres() -> None:
    bags = bags_of(formulation(**DOMAIN_EXAMPLE), 10)
    # 13.4 mL = 134 steps of 0.1 mL; ceil(134 / 100) = 2 bags; 134 / 2 = 67 steps each -> 6.7 + 6.7
    assert [b.index for b in bags] == [1, 2]
    assert [b.volume_ml for b in bags] == [D("6.7"), D("6.7")]
    # viable 2.01e8 / 2 = 100,500,000 each; NK drawn 1.8693e8 / 2 = 93,465,000 each
    assert [b.viable_cells for b in bags] == [100_500_000, 100_500_000]
    assert [b.nk_cells for b in bags] == [93_465_000, 93_465_000]


def test_one_bag_when_everything_fits() -> None:
    f = formulation(**DOMAIN_EXAMPLE)
    for maximum in (D("13.4"), 20, "1e999999"):
        bags = bags_of(f, maximum)
        assert len(bags) == 1
        assert (bags[0].volume_ml, bags[0].viable_cells, bags[0].nk_cells) == (D("13.4"), 201_000_000, 186_930_000)


def test_twenty_five_millilitres_in_bags_of_ten_the_first_bag_takes_the_extra_step() -> None:
    # 50 kg x 1e7/kg = 5e8 NK; volume = 5e8 / (2.5e7 x 0.8) = 25.0 mL (CD3+ fraction 0: no limit applies)
    f = formulation(**dict(T_CELL_RICH, dose_per_kg="1e7", cd3_fraction=0))
    assert f.volume_ml == D("25.0")
    bags = bags_of(f, 10)
    # 250 steps; ceil(250 / 100) = 3 bags; 250 = 3 x 83 + 1 -> 84, 83, 83 steps -> 8.4 + 8.3 + 8.3
    assert [b.volume_ml for b in bags] == [D("8.4"), D("8.3"), D("8.3")]
    # viable = 25 x 2.5e7 = 6.25e8: shares 6.25e8 x 84/250 = 210,000,000 and x 83/250 = 207,500,000
    assert [b.viable_cells for b in bags] == [210_000_000, 207_500_000, 207_500_000]
    # NK = 6.25e8 x 0.8 = 5e8: 5e8 x 84/250 = 168,000,000; x 83/250 = 166,000,000
    assert [b.nk_cells for b in bags] == [168_000_000, 166_000_000, 166_000_000]
    assert sum(b.volume_ml for b in bags) == f.volume_ml


def test_a_maximum_off_the_tenth_of_a_millilitre_grid_is_rounded_down() -> None:
    f = formulation(**dict(T_CELL_RICH, dose_per_kg="1e7", cd3_fraction=0))  # 25.0 mL
    # 12.55 mL holds at most 12.5 mL: ceil(250 / 125) = 2 bags of 12.5 (not refused, not 12.55 + 12.45)
    assert [b.volume_ml for b in bags_of(f, "12.55")] == [D("12.5"), D("12.5")]
    # 12.49 holds 12.4: ceil(250 / 124) = 3 bags; 250 = 3 x 83 + 1 -> 8.4 + 8.3 + 8.3
    assert [b.volume_ml for b in bags_of(f, "12.49")] == [D("8.4"), D("8.3"), D("8.3")]


def test_left_over_cells_go_to_the_largest_remainders_then_the_lower_index() -> None:
    # 1 kg at 500,001/kg = 500,001 NK; 1,000,002 viable/mL x 0.5 NK = 500,001 NK/mL -> exactly 1.0 mL
    f = formulation(
        dose_per_kg=500_001, weight_kg=1, viable_per_ml=1_000_002, nk_fraction="0.5", cd3_fraction=0,
        endotoxin_eu_per_ml=0, **LIMITS,
    )
    assert f.volume_ml == D("1.0")
    bags = bags_of(f, "0.4")
    # 10 steps, at most 4 per bag: ceil(10 / 4) = 3 bags; 10 = 3 x 3 + 1 -> 0.4 + 0.3 + 0.3
    assert [b.volume_ml for b in bags] == [D("0.4"), D("0.3"), D("0.3")]
    # viable 1,000,002: exact shares 400,000.8 / 300,000.6 / 300,000.6; whole parts sum to 1,000,000, so 2 cells
    # are left: one to bag 1 (remainder .8), one to bag 2 (remainder .6, tied with bag 3: lower index first)
    assert [b.viable_cells for b in bags] == [400_001, 300_001, 300_000]
    # NK 500,001: shares 200,000.4 / 150,000.3 / 150,000.3; 1 cell left -> bag 1 (largest remainder .4)
    assert [b.nk_cells for b in bags] == [200_001, 150_000, 150_000]


def test_bag_cells_are_whole_cells_rounded_half_up_from_the_drawn_volume() -> None:
    # 60 kg x 1e6/kg = 6e7 NK; 1,234,567 viable/mL x 0.9 = 1,111,110.3 NK/mL; volume = 54.0000243... -> 54.0 mL
    f = formulation(
        dose_per_kg="1e6", weight_kg=60, viable_per_ml=1_234_567, nk_fraction="0.9", cd3_fraction="0.001",
        endotoxin_eu_per_ml="0.05", **LIMITS,
    )
    assert f.volume_ml == D("54.0")
    # viable drawn = 54 x 1,234,567 = 66,666,618; NK = x 0.9 = 59,999,956.2 -> 59,999,956 whole cells
    assert f.total_viable_cells == D("66666618")
    assert f.delivered_nk_cells == D("59999956.2")
    bags = bags_of(f, 25)
    # 540 steps, ceil(540 / 250) = 3 bags of 180 steps = 18.0 mL; viable 66,666,618 / 3 = 22,222,206 each;
    # NK 59,999,956 / 3 = 19,999,985.33 -> 19,999,985 each; 1 cell left, remainders tied -> lowest index, bag 1
    assert [b.volume_ml for b in bags] == [D("18.0")] * 3
    assert [b.viable_cells for b in bags] == [22_222_206] * 3
    assert [b.nk_cells for b in bags] == [19_999_986, 19_999_985, 19_999_985]


def test_expiry_is_formulation_plus_shelf_life_in_utc() -> None:
    bags = bags_of(formulation(**DOMAIN_EXAMPLE), 10)
    # 2025-06-03 14:30 Berlin (CEST, UTC+2) = 12:30 UTC; + 48 h = 2025-06-05 12:30 UTC
    for bag in bags:
        assert bag.expires_at == datetime(2025, 6, 5, 12, 30, tzinfo=UTC)
        assert bag.expires_at.tzinfo is UTC
        assert bag.expires_at.utcoffset() == timedelta(0)
    # a fixed-offset zone too: 2025-01-10 09:15 at UTC-5 = 14:15 UTC; + 36 h = 2025-01-12 02:15 UTC
    eastern = timezone(timedelta(hours=-5))
    bag = bags_of(formulation(**DOMAIN_EXAMPLE), 20, formulated_at=datetime(2025, 1, 10, 9, 15, tzinfo=eastern),
                  shelf_life=timedelta(hours=36))[0]
    assert bag.expires_at == datetime(2025, 1, 12, 2, 15, tzinfo=UTC) and bag.expires_at.tzinfo is UTC


def test_shelf_life_is_elapsed_time_across_a_daylight_saving_change() -> None:
    # 2025-03-08 12:00 New York (EST, UTC-5) = 17:00 UTC; clocks go forward on 2025-03-09.
    # + 48 h elapsed = 2025-03-10 17:00 UTC (= 13:00 EDT), not 12:00 EDT (= 16:00 UTC, only 47 h later)
    bag = bags_of(formulation(**DOMAIN_EXAMPLE), 20, formulated_at=datetime(2025, 3, 8, 12, 0, tzinfo=NEW_YORK))[0]
    assert bag.expires_at == datetime(2025, 3, 10, 17, 0, tzinfo=UTC)
    assert bag.expires_at.astimezone(NEW_YORK).hour == 13


def test_bag_split_refuses_bad_arguments_listing_every_problem() -> None:
    f = formulation(**DOMAIN_EXAMPLE)
    with pytest.raises(ValidationFailed) as caught:
        split_into_bags(f, max_bag_volume_ml=0, formulated_at=datetime(2025, 6, 3, 14, 30), shelf_life=timedelta(0))
    assert caught.value.problems == [
        "max_bag_volume_ml must be greater than 0 mL, got 0",
        "formulated_at must carry a time zone (a naive date-time is ambiguous)",
        "shelf_life must be longer than zero, got 0:00:00",
    ]
    for bad in (-10, "-0.1", "0.05", "ten", float("inf"), None, True):
        with pytest.raises(ValidationFailed) as caught:
            bags_of(f, bad)
        assert len(caught.value.problems) == 1 and "max_bag_volume_ml" in caught.value.problems[0]
    with pytest.raises(ValidationFailed, match="formulated_at must be a date and time"):
        bags_of(f, 10, formulated_at=date(2025, 6, 3))
    with pytest.raises(ValidationFailed, match="shelf_life must be a duration"):
        bags_of(f, 10, shelf_life=48)
    with pytest.raises(ValidationFailed, match="beyond the last representable date"):
        bags_of(f, 10, shelf_life=timedelta.max)


def test_formulation_and_bags_are_frozen() -> None:
    f = formulation(**DOMAIN_EXAMPLE)
    bag = bags_of(f, 10)[0]
    with pytest.raises(AttributeError):
        f.volume_ml = D("20")  # type: ignore[misc]
    with pytest.raises(AttributeError):
        bag.nk_cells = 1  # type: ignore[misc]


# --- property: the split is always exact and within the maximum ----------------------------------


@settings(database=None, max_examples=300, deadline=None)
@given(
    steps=st.integers(min_value=1, max_value=5_000),  # 0.1 .. 500.0 mL
    viable_per_ml=st.decimals(min_value=D("1e4"), max_value=D("1e9"), places=0),
    nk_fraction=st.decimals(min_value=D("0.001"), max_value=D("1"), places=3),
    weight_kg=st.decimals(min_value=D("0.5"), max_value=D("250"), places=1),
    max_bag_volume_ml=st.decimals(min_value=D("0.1"), max_value=D("600"), places=3),
)
def test_bags_always_sum_exactly_and_never_exceed_the_maximum(
    steps: int, viable_per_ml: Decimal, nk_fraction: Decimal, weight_kg: Decimal, max_bag_volume_ml: Decimal
) -> None:
    volume = steps * D("0.1")
    # choose the dose so that the volume comes out at the drawn value
    f = formulation(
        dose_per_kg=volume * viable_per_ml * nk_fraction / weight_kg, weight_kg=weight_kg,
        viable_per_ml=viable_per_ml, nk_fraction=nk_fraction, cd3_fraction=0, endotoxin_eu_per_ml=0, **LIMITS,
    )
    assert f.volume_ml == volume
    bags = bags_of(f, max_bag_volume_ml)

    steps_per_bag = int(max_bag_volume_ml * 10)  # whole 0.1 mL steps the maximum holds
    assert len(bags) == -(-steps // steps_per_bag)  # the fewest bags
    assert [b.index for b in bags] == list(range(1, len(bags) + 1))
    assert sum(b.volume_ml for b in bags) == f.volume_ml
    assert all(D(0) < b.volume_ml <= max_bag_volume_ml for b in bags)
    assert all(b.volume_ml == b.volume_ml.quantize(D("0.1")) for b in bags)
    assert max(b.volume_ml for b in bags) - min(b.volume_ml for b in bags) <= D("0.1")

    total_viable = int(f.total_viable_cells.quantize(D(1), rounding="ROUND_HALF_UP"))
    total_nk = int(f.delivered_nk_cells.quantize(D(1), rounding="ROUND_HALF_UP"))
    assert sum(b.viable_cells for b in bags) == total_viable
    assert sum(b.nk_cells for b in bags) == total_nk
    for bag in bags:  # each bag within one cell of its exact share
        assert abs(bag.viable_cells - total_viable * bag.volume_ml / f.volume_ml) < 1
        assert abs(bag.nk_cells - total_nk * bag.volume_ml / f.volume_ml) < 1
        assert bag.expires_at == FORMULATED_AT.astimezone(UTC) + SHELF_LIFE
