"""The culture growth chart: valid, deterministic SVG whose text stays text, on the scale the data calls for."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest

from mfg.domain.errors import ValidationFailed
from mfg.reports.growth_chart import EMPTY_MESSAGE, Point, _cached_svg, format_value, growth_chart_svg

SVG = "{http://www.w3.org/2000/svg}"
TITLE = "NK expansion — batch NK-0001"
Y_LABEL = "Viable NK cells (10^6)"
EXAMPLE = [
    Point(day=Decimal(0), value=Decimal(190), label="Seeded"),
    Point(day=Decimal(7), value=Decimal(2600), label="Count 1"),
    Point(day=Decimal(14), value=Decimal(12555), label="Harvest"),
]


def chart(points: list[Point]) -> str:
    return growth_chart_svg(points, title=TITLE, y_label=Y_LABEL)


def texts(element: ET.Element) -> list[str]:
    return ["".join(text.itertext()) for text in element.iter(f"{SVG}text")]


def y_tick_labels(svg: str) -> list[str]:
    """The labelled y ticks, bottom to top, as the SVG shows them."""
    ticks = [group for group in ET.fromstring(svg).iter(f"{SVG}g") if re.fullmatch(r"ytick_\d+", group.get("id", ""))]
    return [label for group in ticks for label in texts(group) if label]


def as_number(label: str) -> float:
    return float(label.replace(" ", ""))


def test_the_chart_is_an_svg_document_of_about_16_by_9_cm_without_scripts() -> None:
    svg = chart(EXAMPLE)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert "<script" not in svg
    width, height = (float(root.get(name, "").removesuffix("pt")) for name in ("width", "height"))
    assert (round(width / 72 * 2.54, 1), round(height / 72 * 2.54, 1)) == (16.0, 9.0)


def test_title_axis_labels_and_point_labels_stay_text() -> None:
    shown = texts(ET.fromstring(chart(EXAMPLE)))
    for expected in (TITLE, Y_LABEL, "Culture day", "Seeded", "Count 1", "Harvest", "190", "2 600", "12 555"):
        assert expected in shown


def test_the_same_points_give_byte_identical_svg_in_any_order() -> None:
    first = chart(EXAMPLE)
    _cached_svg.cache_clear()  # drawn again, not served from the cache
    assert chart(EXAMPLE) == first
    _cached_svg.cache_clear()
    assert chart(list(reversed(EXAMPLE))) == first
    assert chart(EXAMPLE[:2]) != first


def test_positive_counts_use_a_logarithmic_axis() -> None:
    labels = y_tick_labels(chart(EXAMPLE))
    values = [as_number(label) for label in labels]
    assert {"100", "1 000", "10 000"} <= set(labels)
    assert values == sorted(values)
    assert len({round(high - low) for low, high in zip(values, values[1:], strict=False)}) > 1  # not evenly spaced


def test_a_zero_count_falls_back_to_a_linear_axis() -> None:
    points = [Point(day=Decimal(0), value=Decimal(0), label="Seeded"), *EXAMPLE[1:]]
    labels = y_tick_labels(chart(points))
    values = [as_number(label) for label in labels]
    assert labels[0] == "0"
    assert len(values) >= 3
    assert len({round(high - low) for low, high in zip(values, values[1:], strict=False)}) == 1  # evenly spaced


def test_no_points_give_a_placeholder_of_the_same_size() -> None:
    svg = chart([])
    root = ET.fromstring(svg)
    assert EMPTY_MESSAGE in texts(root)
    assert TITLE in texts(root)
    full = ET.fromstring(chart(EXAMPLE))
    assert (root.get("width"), root.get("height")) == (full.get("width"), full.get("height"))


@pytest.mark.parametrize(("day", "value", "problem"), [
    (Decimal(3), Decimal(-5), "cell count must not be negative"),
    (Decimal(3), Decimal("NaN"), "cell count must be a finite number"),
    (Decimal(3), Decimal("Infinity"), "cell count must be a finite number"),
    (Decimal(3), float("nan"), "cell count must be a finite number"),
    (Decimal(-1), Decimal(5), "culture day must not be negative"),
    (Decimal("-Infinity"), Decimal(5), "culture day must be a finite number"),
])
def test_bad_points_are_refused_naming_the_problem(day: Decimal, value: Decimal, problem: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        chart([EXAMPLE[0], Point(day=day, value=value, label="Count 1")])
    assert len(refused.value.problems) == 1
    assert problem in str(refused.value)
    assert "'Count 1'" in str(refused.value)


def test_every_bad_point_is_listed() -> None:
    with pytest.raises(ValidationFailed) as refused:
        chart([Point(day=Decimal(-1), value=Decimal(-2), label="Seeded"),
               Point(day=Decimal(7), value=Decimal("NaN"), label="Count 1")])
    assert len(refused.value.problems) == 3


def test_fractional_decimal_days_and_values_are_accepted() -> None:
    points = [Point(day=Decimal("0"), value=Decimal("190.4"), label="Seeded"),
              Point(day=Decimal("3.5"), value=Decimal("12.34"), label="Count 1"),
              Point(day=Decimal("6.25"), value=Decimal("2600.5"), label="Count 2")]
    shown = texts(ET.fromstring(chart(points)))
    assert {"190", "12.3", "2 601"} <= set(shown)


@pytest.mark.parametrize(("value", "shown"), [
    (Decimal(190), "190"), (Decimal(2600), "2 600"), (Decimal(12555), "12 555"), (Decimal("1E+6"), "1 000 000"),
    (Decimal("99.96"), "100"), (Decimal("12.34"), "12.3"), (Decimal("0.50"), "0.5"), (Decimal(0), "0"),
    (2000.0, "2 000"),
])
def test_values_are_shown_compactly(value: Decimal | float, shown: str) -> None:
    assert format_value(value) == shown


def test_the_same_points_are_drawn_once_and_new_points_draw_again() -> None:
    """A batch page viewed again does not redraw its chart; a corrected count does."""
    points = [Point(Decimal(0), Decimal(190), "Seeded"), Point(Decimal(7), Decimal(2600), "Count 1")]
    first = growth_chart_svg(points, title="Cached", y_label="10^6 cells")
    assert growth_chart_svg(list(points), title="Cached", y_label="10^6 cells") is first  # the same object
    corrected = [points[0], Point(Decimal(7), Decimal(2500), "Count 1")]
    assert growth_chart_svg(corrected, title="Cached", y_label="10^6 cells") != first
