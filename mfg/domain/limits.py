"""Limits of a recorded value: numbers written in a master record, or names of values the batch's context
gives at run time (``trial.endotoxin_limit_eu_per_kg``); how each is compared and how it is stated.

``min`` and ``max`` are inclusive, ``below`` is strict. A named limit takes its value from the batch (the
trial configuration version the subject's dose was assigned under), so a new approved configuration
changes what is checked without a new version of the record. Pure: used by ``values`` (judging a value)
and by the screens and printed records (through ``words.limits``, the one way people read limits).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from . import display

__all__ = ["LIMIT_CHECKS", "LimitContext", "limit_text", "limit_value", "specification_text"]


def limit_text(limit: float | int | Decimal) -> str:
    """A limit from the definition as written there: ``70`` for 70.0, ``7.6`` for 7.6."""
    number = _exact(limit)
    return "0" if number.is_zero() else f"{number.normalize():f}"


def _exact(limit: float | int | Decimal) -> Decimal:
    """The decimal number a limit written in the definition means (7.6 is 7.6, not its binary neighbour)."""
    return Decimal(repr(limit)) if isinstance(limit, float) else Decimal(limit)


LimitContext = Mapping[str, Decimal | None]
"""The values of named limits (context names such as ``trial.endotoxin_limit_eu_per_kg``) for one batch."""

# min, max and below: how a value is outside each, and how a refusal says it
LIMIT_CHECKS: tuple[tuple[str, Callable[[Decimal, Decimal], bool], str], ...] = (
    ("min", lambda value, limit: value < limit, "below the minimum"),
    ("max", lambda value, limit: value > limit, "above the maximum"),
    ("below", lambda value, limit: value >= limit, "not below"))


def limit_value(limit: float | int | str, context: LimitContext | None) -> Decimal | None:
    """A limit's value: the number written in the definition, or the named context value (None when the
    batch does not define it)."""
    if isinstance(limit, str):
        return (context or {}).get(limit)
    return _exact(limit)


LIMIT_PLACEHOLDER = "{limit}"


def named_limits(field: Any) -> list[str]:
    """The context names a field's limits use (``trial.cd3_limit_per_kg``)."""
    return [limit for attribute in ("min", "max", "below")
            if isinstance(limit := getattr(field, attribute, None), str)]


def specification_text(field: Any, context: LimitContext | None = None) -> str:
    """A test's specification in words, as the certificate of analysis prints it: the master record's
    ``certificate.specification`` (``> 70 %``, ``No growth at 14 days``), its ``{limit}`` replaced by the
    value of the field's named limit for this batch, written for people (``< 2.00 × 10⁵ CD3⁺ cells/kg``,
    ``≤ 5 EU/kg``). A field without the words gets its limits stated with the signs people read
    (``≥ 70.1 %; ≤ 100 %``)."""
    entry = getattr(field, "certificate", None)
    unit = getattr(field, "unit", None) or ""
    if entry is not None:
        words: str = entry.specification
        if LIMIT_PLACEHOLDER in words:
            names = named_limits(field)
            value = limit_value(names[0], context) if names else None
            shown = "not defined for this batch" if value is None else (
                display.cells(value) if "cells" in unit else display.grouped(limit_text(value)))
            words = words.replace(LIMIT_PLACEHOLDER, shown)
        return words
    parts = []
    for attribute, sign in (("min", "≥"), ("max", "≤"), ("below", "<")):
        limit = getattr(field, attribute, None)
        if limit is None:
            continue
        value = limit_value(limit, context)
        parts.append(f"{sign} {display.grouped(limit_text(value)) if value is not None else limit}"
                     + (f" {unit}" if unit else ""))
    if getattr(field, "acceptable", None):  # a "pending" answer is no result, so no specification
        parts.append(" or ".join(a for a in field.acceptable if a not in (getattr(field, "pending", None) or ())))
    return "; ".join(parts)
