"""The one formatter for people (screens and documents): cell counts, grouped numbers, moments."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from mfg.domain import display

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(("count", "text"), [
    (1_200_000_000, "1.20 × 10⁹"),
    (187_000_000, "1.87 × 10⁸"),
    (3_000_000, "3.00 × 10⁶"),
    (9_995_000, "1.00 × 10⁷"),
    (Decimal("20998000000"), "2.10 × 10¹⁰"),
    ("1865000", "1.87 × 10⁶"),
    (999, "999"),
    (None, ""),
])
def test_cells_are_scientific_with_three_significant_digits(count, text):
    assert display.cells(count) == text


@pytest.mark.parametrize(("number", "text"), [
    (3_000_000, "3,000,000"), ("12345.60", "12,345.60"), ("-4200", "-4,200"), ("185.2", "185.2"),
    (0, "0"), ("", ""), ("n/a", "n/a"),
])
def test_grouped_keeps_decimals_and_adds_separators(number, text):
    assert display.grouped(number) == text


def test_moments_are_local_to_the_minute_with_zone_and_utc_for_hover():
    moment = datetime(2026, 3, 29, 2, 30, 41, 123456, tzinfo=UTC)
    assert display.local(moment, SHANGHAI) == "2026-03-29 10:30 CST"
    assert display.utc(moment) == "2026-03-29 02:30 UTC"
    assert display.local_date(datetime(2026, 3, 29, 17, 0, tzinfo=UTC), SHANGHAI) == "2026-03-30"
    assert display.local(moment.replace(tzinfo=None), SHANGHAI) == "2026-03-29 10:30 CST"  # naive means UTC
    assert display.local(None, SHANGHAI) == display.utc(None) == ""
