"""How numbers and moments are written for people: the one formatter for screens and printed documents.

* Cell counts in scientific notation with three significant digits: ``1870000000`` -> ``1.87 × 10⁹``
  (below 1,000 the plain number). Screens and PDFs print the same text (DejaVu has the superscripts).
* Large plain numbers with thousands separators: ``3000000`` -> ``3,000,000``; decimals are kept as given
  (a recorded value's precision is part of the record).
* Moments in the site's time zone, to the minute, with the zone's abbreviation (``2026-03-29 10:30 CST``);
  the UTC form (``2026-03-29 02:30 UTC``) for hover titles and machine-read places. No seconds or
  microseconds anywhere a person reads; the stored value keeps its full precision.

Pure functions: no Flask, no database. The web registers them as Jinja filters (``cells``, ``grouped``,
``local``, ``utc``) and the reports call them directly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from zoneinfo import ZoneInfo

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def cells(count: int | float | Decimal | str | None) -> str:
    """A cell count as people read it: ``1.87 × 10⁹`` (three significant digits, half up)."""
    if count is None or count == "":
        return ""
    try:
        number = Decimal(str(count))
    except InvalidOperation:
        return str(count)
    if abs(number) < 1000:
        return grouped(number)
    exponent = number.adjusted()
    mantissa = number.scaleb(-exponent).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if abs(mantissa) >= 10:  # 9.995 rounds up to 10.00
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.2f} × 10{str(exponent).translate(_SUPERSCRIPT)}"


def superscript(digits: str | int) -> str:
    """``6`` -> ``⁶``, ``-3`` -> ``⁻³`` (powers of ten as printed)."""
    return str(digits).translate(_SUPERSCRIPT)


def grouped(number: int | float | Decimal | str | None) -> str:
    """``3000000`` -> ``3,000,000``; ``12345.60`` -> ``12,345.60`` (decimal places kept as given)."""
    if number is None or number == "":
        return ""
    text = str(number)
    try:
        Decimal(text)
    except InvalidOperation:
        return text
    sign = "-" if text.startswith("-") else ""
    whole, _, fraction = text.lstrip("+-").partition(".")
    if not whole.isdigit():  # exponent notation or the like: not ours to reshape
        return text
    return f"{sign}{int(whole):,}" + (f".{fraction}" if fraction else "")


def _aware(moment: datetime) -> datetime:
    """The database hands back naive UTC on SQLite: a moment without a zone is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def local(moment: datetime | None, tz: ZoneInfo) -> str:
    """A moment in the site's time zone, to the minute, with the zone: ``2026-03-29 10:30 CST``."""
    return "" if moment is None else _aware(moment).astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def utc(moment: datetime | None) -> str:
    """A moment in UTC, to the minute: ``2026-03-29 02:30 UTC`` (hover titles, audit exports' readable column)."""
    return "" if moment is None else _aware(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def local_date(moment: datetime | None, tz: ZoneInfo) -> str:
    """The site-local calendar date of a moment: ``2026-03-29``."""
    return "" if moment is None else _aware(moment).astimezone(tz).strftime("%Y-%m-%d")


def iso(moment: datetime | None) -> str:
    """A moment for machines (a ``<time datetime>`` attribute): ISO 8601 in UTC, ``2026-03-29T02:30:00Z``."""
    return "" if moment is None else _aware(moment).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
