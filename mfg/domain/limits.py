"""Limits of a recorded value: numbers written in a master record, or names of values the batch's context
gives at run time (``trial.endotoxin_limit_eu_per_kg``); how each is compared and how it is stated.

``min`` and ``max`` are inclusive, ``below`` is strict. A named limit takes its value from the batch (the
trial configuration version the subject's dose was assigned under), so a new approved configuration
changes what is checked without a new version of the record. Pure: used by ``values`` (judging a value)
and by the screens and printed records (``limits_text``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

__all__ = ["LIMIT_CHECKS", "LimitContext", "limit_text", "limit_value", "limits_text"]


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


def limits_text(field: Any, context: LimitContext | None = None) -> str:
    """A field's limits as screens and printed records state them: ``>= 70.1; <= 100``, ``< 200000
    (trial.cd3_limit_per_kg)``, ``acceptable: ...``, ``must match subject.coi``."""
    parts = []
    for attribute, sign in (("min", ">="), ("max", "<="), ("below", "<")):
        limit = getattr(field, attribute, None)
        if limit is None:
            continue
        value = limit_value(limit, context)
        if isinstance(limit, str):
            parts.append(f"{sign} {limit_text(value)} ({limit})" if value is not None else f"{sign} {limit}")
        else:
            parts.append(f"{sign} {limit_text(limit)}")
    if getattr(field, "acceptable", None):
        parts.append("acceptable: " + ", ".join(field.acceptable))
    if getattr(field, "expected", None):
        parts.append(f"must match {field.expected}")
    return "; ".join(parts)
