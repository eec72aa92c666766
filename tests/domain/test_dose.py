"""The product divided into bags (domain.dose.divide): worked examples derived by hand, exact sums, expiry.

The dose itself (volume, residual T cells and endotoxin per kg, their limits) is NK-FORMULATE's, tested in
test_formulation_record.py."""

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfg.domain.dose import Bag, divide
from mfg.domain.errors import ValidationFailed

D = Decimal
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
FORMULATED_AT = datetime(2025, 6, 3, 14, 30, tzinfo=BERLIN)  # 12:30 UTC (CEST is UTC+2)
SHELF_LIFE = timedelta(hours=48)
# DOMAIN.md section 10 drawn: 13.4 mL of 1.5 x 10^7 viable/mL at 93 % NK: 2.01e8 viable, 1.8693e8 NK cells
DOMAIN_EXAMPLE = (D("13.4"), D("201000000"), D("186930000"))


def bags_of(volume: Decimal, viable: Decimal, nk: Decimal, max_bag_volume_ml: Any, **kwargs: Any) -> list[Bag]:
    return divide(volume, viable, nk, max_bag_volume_ml=max_bag_volume_ml,
                  formulated_at=kwargs.get("formulated_at", FORMULATED_AT),
                  shelf_life=kwargs.get("shelf_life", SHELF_LIFE))


def test_the_domain_example_in_bags_of_at_most_ten_millilitres() -> None:
    bags = bags_of(*DOMAIN_EXAMPLE, 10)
    # 13.4 mL = 134 steps of 0.1 mL; ceil(134 / 100) = 2 bags; 134 / 2 = 67 steps each -> 6.7 + 6.7
    assert [b.index for b in bags] == [1, 2]
    assert [b.volume_ml for b in bags] == [D("6.7"), D("6.7")]
    # viable 2.01e8 / 2 = 100,500,000 each; NK drawn 1.8693e8 / 2 = 93,465,000 each
    assert [b.viable_cells for b in bags] == [100_500_000, 100_500_000]
    assert [b.nk_cells for b in bags] == [93_465_000, 93_465_000]


def test_one_bag_when_everything_fits() -> None:
    for maximum in (D("13.4"), 20, "1e999999"):
        bags = bags_of(*DOMAIN_EXAMPLE, maximum)
        assert len(bags) == 1
        assert (bags[0].volume_ml, bags[0].viable_cells, bags[0].nk_cells) == (D("13.4"), 201_000_000, 186_930_000)


# 25.0 mL of 2.5 x 10^7 viable/mL at 80 % NK: 6.25e8 viable, 5e8 NK cells
TWENTY_FIVE = (D("25.0"), D("625000000"), D("500000000"))


def test_twenty_five_millilitres_in_bags_of_ten_the_first_bag_takes_the_extra_step() -> None:
    bags = bags_of(*TWENTY_FIVE, 10)
    # 250 steps; ceil(250 / 100) = 3 bags; 250 = 3 x 83 + 1 -> 84, 83, 83 steps -> 8.4 + 8.3 + 8.3
    assert [b.volume_ml for b in bags] == [D("8.4"), D("8.3"), D("8.3")]
    # viable 6.25e8 x 84/250 = 210,000,000 and x 83/250 = 207,500,000
    assert [b.viable_cells for b in bags] == [210_000_000, 207_500_000, 207_500_000]
    # NK 5e8 x 84/250 = 168,000,000; x 83/250 = 166,000,000
    assert [b.nk_cells for b in bags] == [168_000_000, 166_000_000, 166_000_000]
    assert sum(b.volume_ml for b in bags) == D("25.0")


def test_a_maximum_off_the_tenth_of_a_millilitre_grid_is_rounded_down() -> None:
    # 12.55 mL holds at most 12.5 mL: ceil(250 / 125) = 2 bags of 12.5 (not refused, not 12.55 + 12.45)
    assert [b.volume_ml for b in bags_of(*TWENTY_FIVE, "12.55")] == [D("12.5"), D("12.5")]
    # 12.49 holds 12.4: ceil(250 / 124) = 3 bags; 250 = 3 x 83 + 1 -> 8.4 + 8.3 + 8.3
    assert [b.volume_ml for b in bags_of(*TWENTY_FIVE, "12.49")] == [D("8.4"), D("8.3"), D("8.3")]


def test_left_over_cells_go_to_the_largest_remainders_then_the_lower_index() -> None:
    bags = bags_of(D("1.0"), D("1000002"), D("500001"), "0.4")
    # 10 steps, at most 4 per bag: ceil(10 / 4) = 3 bags; 10 = 3 x 3 + 1 -> 0.4 + 0.3 + 0.3
    assert [b.volume_ml for b in bags] == [D("0.4"), D("0.3"), D("0.3")]
    # viable 1,000,002: exact shares 400,000.8 / 300,000.6 / 300,000.6; whole parts sum to 1,000,000, so 2 cells
    # are left: one to bag 1 (remainder .8), one to bag 2 (remainder .6, tied with bag 3: lower index first)
    assert [b.viable_cells for b in bags] == [400_001, 300_001, 300_000]
    # NK 500,001: shares 200,000.4 / 150,000.3 / 150,000.3; 1 cell left -> bag 1 (largest remainder .4)
    assert [b.nk_cells for b in bags] == [200_001, 150_000, 150_000]


def test_bag_cells_are_whole_cells_rounded_half_up_from_the_drawn_volume() -> None:
    # 54.0 mL x 1,234,567 viable/mL = 66,666,618 viable; x 0.9 NK = 59,999,956.2 -> 59,999,956 whole cells
    bags = bags_of(D("54.0"), D("66666618"), D("59999956.2"), 25)
    # 540 steps, ceil(540 / 250) = 3 bags of 180 steps = 18.0 mL; viable 66,666,618 / 3 = 22,222,206 each;
    # NK 59,999,956 / 3 = 19,999,985.33 -> 19,999,985 each; 1 cell left, remainders tied -> lowest index, bag 1
    assert [b.volume_ml for b in bags] == [D("18.0")] * 3
    assert [b.viable_cells for b in bags] == [22_222_206] * 3
    assert [b.nk_cells for b in bags] == [19_999_986, 19_999_985, 19_999_985]


def test_expiry_is_formulation_plus_shelf_life_in_utc() -> None:
    # 2025-06-03 14:30 Berlin (CEST, UTC+2) = 12:30 UTC; + 48 h = 2025-06-05 12:30 UTC
    for bag in bags_of(*DOMAIN_EXAMPLE, 10):
        assert bag.expires_at == datetime(2025, 6, 5, 12, 30, tzinfo=UTC)
        assert bag.expires_at.tzinfo is UTC
        assert bag.expires_at.utcoffset() == timedelta(0)
    # a fixed-offset zone too: 2025-01-10 09:15 at UTC-5 = 14:15 UTC; + 36 h = 2025-01-12 02:15 UTC
    eastern = timezone(timedelta(hours=-5))
    bag = bags_of(*DOMAIN_EXAMPLE, 20, formulated_at=datetime(2025, 1, 10, 9, 15, tzinfo=eastern),
                  shelf_life=timedelta(hours=36))[0]
    assert bag.expires_at == datetime(2025, 1, 12, 2, 15, tzinfo=UTC) and bag.expires_at.tzinfo is UTC


def test_shelf_life_is_elapsed_time_across_a_daylight_saving_change() -> None:
    # 2025-03-08 12:00 New York (EST, UTC-5) = 17:00 UTC; clocks go forward on 2025-03-09.
    # + 48 h elapsed = 2025-03-10 17:00 UTC (= 13:00 EDT), not 12:00 EDT (= 16:00 UTC, only 47 h later)
    bag = bags_of(*DOMAIN_EXAMPLE, 20, formulated_at=datetime(2025, 3, 8, 12, 0, tzinfo=NEW_YORK))[0]
    assert bag.expires_at == datetime(2025, 3, 10, 17, 0, tzinfo=UTC)
    assert bag.expires_at.astimezone(NEW_YORK).hour == 13


def test_bag_split_refuses_bad_arguments_listing_every_problem() -> None:
    with pytest.raises(ValidationFailed) as caught:
        divide(*DOMAIN_EXAMPLE, max_bag_volume_ml=0, formulated_at=datetime(2025, 6, 3, 14, 30),
               shelf_life=timedelta(0))
    assert caught.value.problems == [
        "max_bag_volume_ml must be greater than 0 mL, got 0",
        "formulated_at must carry a time zone (a naive date-time is ambiguous)",
        "shelf_life must be longer than zero, got 0:00:00",
    ]
    for bad in (-10, "-0.1", "0.05", "ten", float("inf"), None, True):
        with pytest.raises(ValidationFailed) as caught:
            bags_of(*DOMAIN_EXAMPLE, bad)
        assert len(caught.value.problems) == 1 and "max_bag_volume_ml" in caught.value.problems[0]
    with pytest.raises(ValidationFailed, match="formulated_at must be a date and time"):
        bags_of(*DOMAIN_EXAMPLE, 10, formulated_at=date(2025, 6, 3))
    with pytest.raises(ValidationFailed, match="shelf_life must be a duration"):
        bags_of(*DOMAIN_EXAMPLE, 10, shelf_life=48)
    with pytest.raises(ValidationFailed, match="beyond the last representable date"):
        bags_of(*DOMAIN_EXAMPLE, 10, shelf_life=timedelta.max)
    with pytest.raises(ValidationFailed, match="positive multiple of 0.1 mL"):
        bags_of(D("13.45"), D("1"), D("1"), 10)
    with pytest.raises(ValidationFailed, match="the NK cells to divide must be a number of at least 0"):
        bags_of(D("13.4"), D("1"), D("-1"), 10)


def test_bags_are_frozen() -> None:
    bag = bags_of(*DOMAIN_EXAMPLE, 10)[0]
    with pytest.raises(AttributeError):
        bag.nk_cells = 1  # type: ignore[misc]


# --- property: the split is always exact and within the maximum ----------------------------------


@settings(database=None, max_examples=300, deadline=None)
@given(
    steps=st.integers(min_value=1, max_value=5_000),  # 0.1 .. 500.0 mL
    viable_per_ml=st.decimals(min_value=D("1e4"), max_value=D("1e9"), places=0),
    nk_fraction=st.decimals(min_value=D("0.001"), max_value=D("1"), places=3),
    max_bag_volume_ml=st.decimals(min_value=D("0.1"), max_value=D("600"), places=3),
)
def test_bags_always_sum_exactly_and_never_exceed_the_maximum(
    steps: int, viable_per_ml: Decimal, nk_fraction: Decimal, max_bag_volume_ml: Decimal
) -> None:
    volume = steps * D("0.1")
    viable, nk = volume * viable_per_ml, volume * viable_per_ml * nk_fraction
    bags = bags_of(volume, viable, nk, max_bag_volume_ml)

    steps_per_bag = int(max_bag_volume_ml * 10)  # whole 0.1 mL steps the maximum holds
    assert len(bags) == -(-steps // steps_per_bag)  # the fewest bags
    assert [b.index for b in bags] == list(range(1, len(bags) + 1))
    assert sum(b.volume_ml for b in bags) == volume
    assert all(D(0) < b.volume_ml <= max_bag_volume_ml for b in bags)
    assert all(b.volume_ml == b.volume_ml.quantize(D("0.1")) for b in bags)
    assert max(b.volume_ml for b in bags) - min(b.volume_ml for b in bags) <= D("0.1")

    total_viable = int(viable.quantize(D(1), rounding="ROUND_HALF_UP"))
    total_nk = int(nk.quantize(D(1), rounding="ROUND_HALF_UP"))
    assert sum(b.viable_cells for b in bags) == total_viable
    assert sum(b.nk_cells for b in bags) == total_nk
    for bag in bags:  # each bag within one cell of its exact share
        assert abs(bag.viable_cells - total_viable * bag.volume_ml / volume) < 1
        assert abs(bag.nk_cells - total_nk * bag.volume_ml / volume) < 1
        assert bag.expires_at == FORMULATED_AT.astimezone(UTC) + SHELF_LIFE


def test_cd3_cells_are_apportioned_like_the_nk_cells_when_given() -> None:
    """Issue [3.7] item 5: 25.0 mL with 1,000,001 CD3+ cells in bags of 8.4 + 8.3 + 8.3 mL: 336,000.336,
    332,000.332 and 332,000.332 exactly; whole parts 336,000 + 332,000 + 332,000 = 1,000,000, the cell left
    over goes to the largest remainder (0.336, bag 1)."""
    bags = divide(*TWENTY_FIVE, max_bag_volume_ml=10, formulated_at=FORMULATED_AT, shelf_life=SHELF_LIFE,
                  cd3_cells=D("1000001"))
    assert [b.cd3_cells for b in bags] == [336_001, 332_000, 332_000]
    assert [b.cd3_cells for b in bags_of(*TWENTY_FIVE, 10)] == [None, None, None]  # not calculated: not recorded
    with pytest.raises(ValidationFailed, match="the CD3\\+ cells to divide must be a number of at least 0"):
        divide(*TWENTY_FIVE, max_bag_volume_ml=10, formulated_at=FORMULATED_AT, shelf_life=SHELF_LIFE,
               cd3_cells=D("-1"))
