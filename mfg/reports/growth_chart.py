"""Growth chart of an NK-cell culture (viable cells per culture day) as an SVG string.

Rendered on the server so the batch web page (as an ``<img>``) and the WeasyPrint PDF batch record show the
same picture from the same numbers, with no browser scripts and no web fonts (labs are offline; the generic
``sans-serif`` family resolves to DejaVu Sans, which ships with matplotlib). The output is deterministic
(no date, salted ids) so the same points give byte-identical SVG, and text stays ``<text>``
(``svg.fonttype: none``) so the title, labels and values remain extractable from the PDF.

Only ``matplotlib.figure.Figure`` is used, never pyplot (no global figure state in gunicorn threads). The
rc settings matplotlib reads at save time are process-global, so rendering holds a module lock.
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from mfg.domain.errors import ValidationFailed

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

EMPTY_MESSAGE = "No cell counts recorded yet"
_SIZE_INCHES = (16 / 2.54, 9 / 2.54)  # 16 x 9 cm
_RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",  # text stays text (searchable, extractable from the PDF)
    "svg.hashsalt": "mfg",  # deterministic clip-path and glyph ids
    "font.family": "sans-serif",
    "font.size": 9,
    "text.parse_math": False,  # a "$" in a label is a dollar sign, not mathtext
}
_RENDER_LOCK = threading.Lock()


@dataclass(frozen=True)
class Point:
    day: Decimal  # culture day (0 = seeding), as recorded (calculated from the recorded times); may be fractional
    value: Decimal  # cells, in the unit named by the chart's y label (e.g. 10^6 cells)
    label: str  # e.g. "Seeded", "Count 1", "Harvest"


def format_value(value: Decimal | float) -> str:
    """Compact, readable number: whole numbers from 100 up with a space per thousand ("12 555"),
    three significant digits below ("12.3", "0.5")."""
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if abs(number) >= 100:
        return f"{number.quantize(Decimal(1), rounding=ROUND_HALF_UP):,f}".replace(",", " ")
    step = Decimal(1).scaleb(number.adjusted() - 2)
    return f"{number.quantize(step, rounding=ROUND_HALF_UP).normalize():f}"


def growth_chart_svg(points: Sequence[Point], *, title: str, y_label: str, x_label: str = "Culture day") -> str:
    """The chart as an SVG document (about 16 x 9 cm). Raises ``ValidationFailed`` listing every bad point.

    The same points always give the same bytes, so recent charts are kept (a batch page is viewed far
    more often than its counts change); a correction changes the points and so draws a new chart."""
    return _cached_svg(tuple(points), title, y_label, x_label)


@functools.lru_cache(maxsize=256)
def _cached_svg(points: tuple[Point, ...], title: str, y_label: str, x_label: str) -> str:
    checked = sorted(_validated(points), key=lambda point: point.day)
    with _RENDER_LOCK, matplotlib.rc_context(_RC):
        fig = Figure(figsize=_SIZE_INCHES, layout="constrained")
        if checked:
            _draw(fig, checked, title=title, y_label=y_label, x_label=x_label)
        else:
            fig.suptitle(title)
            fig.text(0.5, 0.5, EMPTY_MESSAGE, ha="center", va="center", color="0.35", fontsize=11)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def _validated(points: Sequence[Point]) -> list[Point]:
    problems: list[str] = []
    result: list[Point] = []
    for number, point in enumerate(points, start=1):
        name = f"point {number} ({point.label!r})"
        day, value = _decimal(point.day), _decimal(point.value)
        if day is None or not day.is_finite():
            problems.append(f"{name}: the culture day must be a finite number, not {point.day!r}")
        elif day < 0:
            problems.append(f"{name}: the culture day must not be negative ({day})")
        if value is None or not value.is_finite():
            problems.append(f"{name}: the cell count must be a finite number, not {point.value!r}")
        elif value < 0:
            problems.append(f"{name}: the cell count must not be negative ({value})")
        if day is not None and value is not None:
            result.append(Point(day=day, value=value, label=point.label))
    if problems:
        raise ValidationFailed(*problems)
    return result


def _decimal(number: object) -> Decimal | None:
    if isinstance(number, bool):
        return None
    try:
        return number if isinstance(number, Decimal) else Decimal(str(number))
    except (InvalidOperation, ValueError, TypeError):
        return None


def _draw(fig: Figure, points: list[Point], *, title: str, y_label: str, x_label: str) -> None:
    ax = fig.add_subplot()
    days = [float(point.day) for point in points]
    values = [float(point.value) for point in points]
    ax.plot(days, values, color="#1f5f99", linewidth=1.6, marker="o", markersize=5)
    logarithmic = all(point.value > 0 for point in points)
    if logarithmic:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(NullFormatter())
    # Cells are never negative: the linear axis keeps room below zero for labels but shows no tick there.
    ax.yaxis.set_major_formatter(FuncFormatter(lambda tick, _position: format_value(tick) if tick >= 0 else ""))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.2)  # room for the labels beside the first, last, highest and lowest points
    span = max(days[-1], 1.0)  # the x axis starts at seeding (day 0), even with a single count
    ax.set_xlim(-0.08 * span, 1.08 * span)
    if not logarithmic:
        top = ax.get_ylim()[1] if max(values) > 0 else 1.0
        ax.set_ylim(-0.12 * top, top)
    for index, point in enumerate(points):
        vertical, horizontal = _free_corner(index, values)
        ax.annotate(f"{point.label}\n{format_value(point.value)}" if point.label else format_value(point.value),
                    (days[index], values[index]), textcoords="offset points",
                    xytext=(4 if horizontal == "right" else -4, 4 if vertical == "upper" else -4),
                    ha="left" if horizontal == "right" else "right",
                    va="bottom" if vertical == "upper" else "top", fontsize=7.5, color="0.15")
    ax.set_title(title)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, which="major", color="0.88", linewidth=0.6)
    ax.set_axisbelow(True)


def _free_corner(index: int, values: list[float]) -> tuple[str, str]:
    """The corner beside point ``index`` that neither line segment passes through, preferring corners
    that keep the label inside the plot (right of the first point, left of the last)."""
    value = values[index]
    taken = set()
    if index > 0:
        taken.add(("lower" if values[index - 1] <= value else "upper", "left"))
    if index < len(values) - 1:
        taken.add(("upper" if values[index + 1] >= value else "lower", "right"))
    if index == 0:
        order = [("upper", "right"), ("lower", "right"), ("upper", "left"), ("lower", "left")]
    elif index == len(values) - 1:
        order = [("upper", "left"), ("lower", "left"), ("upper", "right"), ("lower", "right")]
    else:
        order = [("upper", "left"), ("upper", "right"), ("lower", "left"), ("lower", "right")]
    return next(corner for corner in order if corner not in taken)
