"""The product divided into bags (DOMAIN.md section 5): :func:`divide` splits the drawn volume, with its
viable and NK cells as the batch record holds them, into the fewest bags of at most the trial
configuration's largest bag volume.

The dose itself (target cells, volume to infuse, residual T cells and endotoxin per kg, and the limits that
refuse a formulation) is not calculated here: it is the master record's (NK-FORMULATE's calculated fields,
their limits naming the trial configuration's), computed by the engine (``values.calculate``), so the rule
exists once and changes with an approved version of the record or of the trial configuration.

Decisions (each is tested in ``tests/domain/test_dose.py``):

Bags
    The fewest bags of at most ``max_bag_volume_ml`` each, volumes in 0.1 mL steps (a maximum that is not
    a multiple of 0.1 mL is rounded down to one: 9.95 mL holds at most 9.9 mL), as equal as possible:
    with N steps of 0.1 mL in k bags, every bag gets N // k steps and the first N % k bags one step more
    (25.0 mL, max 10 -> 8.4 + 8.3 + 8.3). Volumes sum exactly to the drawn volume. Viable and NK cells
    (each rounded half-up to a whole cell) are split in proportion to volume by the largest-remainder
    method: every bag gets the whole part of its exact share, and the cells left over go one each to the
    bags with the largest fractional remainders, the lower bag index first on a tie. So each bag is within
    one cell of its exact share and the bags sum exactly to the totals; CD3+ cells, when the master record
    calculates them, are split the same way (a bag's ``cd3_cells`` is None when they are not given). Every
    bag expires at
    ``formulated_at`` + ``shelf_life``, given in UTC; the shelf life is elapsed time (it is added in UTC,
    so a daylight-saving change in the formulation's time zone does not shift the expiry by an hour).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import (
    ROUND_FLOOR,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)

from mfg.domain.calc import round_half_up
from mfg.domain.errors import ValidationFailed

__all__ = ["VOLUME_STEP_ML", "Bag", "Number", "divide"]

Number = Decimal | int | float | str
"""What a numeric input may be given as."""

VOLUME_STEP_ML = Decimal("0.1")
"""Volumes are drawn, labelled and split in steps of 0.1 mL."""

_CONTEXT = Context(prec=28, Emax=999_999, Emin=-999_999, traps=[InvalidOperation, DivisionByZero, Overflow])


@dataclass(frozen=True, slots=True, kw_only=True)
class Bag:
    """One bag of the infusion: 1-based ``index``, its volume, whole cells and expiry (aware, UTC)."""

    index: int
    volume_ml: Decimal
    nk_cells: int
    viable_cells: int
    expires_at: datetime
    cd3_cells: int | None = None


# --------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------


def _number(name: str, raw: object, problems: list[str]) -> Decimal | None:
    """``raw`` as a finite Decimal, or None after appending a problem."""
    value: Decimal
    if isinstance(raw, bool):
        problems.append(f"{name} must be a number, got {raw!r}")
        return None
    if isinstance(raw, Decimal):
        value = raw
    elif isinstance(raw, int):
        value = Decimal(raw)
    elif isinstance(raw, float):
        value = Decimal(str(raw))
    elif isinstance(raw, str):
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            problems.append(f"{name} must be a number, got {raw!r}")
            return None
    else:
        problems.append(f"{name} must be a number, got {type(raw).__name__}")
        return None
    if not value.is_finite():
        problems.append(f"{name} must be a finite number, got {raw!r}")
        return None
    return value


# --------------------------------------------------------------------------------------------------
# Bags
# --------------------------------------------------------------------------------------------------


def _apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` whole units in proportion to ``weights`` (largest remainder, lower index on a tie)."""
    whole = sum(weights)
    shares = [divmod(total * weight, whole) for weight in weights]
    parts = [quotient for quotient, _ in shares]
    left_over = total - sum(parts)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-shares[i][1], i))
    for i in by_remainder[:left_over]:
        parts[i] += 1
    return parts


def divide(
    volume_ml: Decimal,
    viable_cells: Decimal,
    nk_cells: Decimal,
    *,
    max_bag_volume_ml: Number,
    formulated_at: datetime,
    shelf_life: timedelta,
    cd3_cells: Decimal | None = None,
) -> list[Bag]:
    """Split the drawn ``volume_ml`` (a multiple of 0.1 mL), with its ``viable_cells`` and ``nk_cells`` (as
    the batch record holds them, recorded in the dose plan), into the fewest bags of at most
    ``max_bag_volume_ml``; ``cd3_cells``, when given, are apportioned like the NK cells.

    Raises :class:`ValidationFailed` listing every problem: a maximum that is not a number, not above 0 or
    below one 0.1 mL step; cells that are not numbers of at least 0; a ``formulated_at`` that is not an
    aware datetime; a shelf life that is not a positive timedelta. See the module docstring."""
    scaled_volume = volume_ml / VOLUME_STEP_ML
    if not (scaled_volume > 0 and scaled_volume == scaled_volume.to_integral_value()):
        raise ValidationFailed(f"the formulation's volume must be a positive multiple of 0.1 mL, got {volume_ml}")
    total_steps = int(scaled_volume)

    problems: list[str] = []
    named: list[tuple[str, Decimal]] = [("viable cells", viable_cells), ("NK cells", nk_cells)]
    if cd3_cells is not None:
        named.append(("CD3+ cells", cd3_cells))
    for name, cells in named:
        if not (isinstance(cells, Decimal) and cells.is_finite() and cells >= 0):
            problems.append(f"the {name} to divide must be a number of at least 0, got {cells}")
    maximum = _number("max_bag_volume_ml", max_bag_volume_ml, problems)
    steps_per_bag = 0
    if maximum is not None:
        if maximum <= 0:
            problems.append(f"max_bag_volume_ml must be greater than 0 mL, got {maximum}")
        elif maximum >= volume_ml:
            steps_per_bag = total_steps  # everything fits in one bag (and no arithmetic on a huge maximum)
        else:
            steps_per_bag = int(maximum.quantize(VOLUME_STEP_ML, rounding=ROUND_FLOOR) / VOLUME_STEP_ML)
            if steps_per_bag < 1:
                problems.append(
                    f"max_bag_volume_ml must be at least {VOLUME_STEP_ML} mL (bags are filled in "
                    f"{VOLUME_STEP_ML} mL steps), got {maximum}"
                )
    if not isinstance(formulated_at, datetime):
        problems.append(f"formulated_at must be a date and time, got {type(formulated_at).__name__}")
    elif formulated_at.tzinfo is None or formulated_at.utcoffset() is None:
        problems.append("formulated_at must carry a time zone (a naive date-time is ambiguous)")
    if not isinstance(shelf_life, timedelta):
        problems.append(f"shelf_life must be a duration (timedelta), got {type(shelf_life).__name__}")
    elif shelf_life <= timedelta(0):
        problems.append(f"shelf_life must be longer than zero, got {shelf_life}")
    expires_at: datetime | None = None
    if not problems:
        try:
            expires_at = formulated_at.astimezone(UTC) + shelf_life
        except OverflowError:
            problems.append("formulated_at + shelf_life is beyond the last representable date")
    if problems:
        raise ValidationFailed(*problems)
    assert expires_at is not None

    count = -(-total_steps // steps_per_bag)  # ceiling: the fewest bags
    base, extra = divmod(total_steps, count)
    steps = [base + 1 if i < extra else base for i in range(count)]
    viable = _apportion(int(round_half_up(viable_cells, 0)), steps)
    nk = _apportion(int(round_half_up(nk_cells, 0)), steps)
    cd3 = _apportion(int(round_half_up(cd3_cells, 0)), steps) if cd3_cells is not None else None
    return [
        Bag(
            index=i + 1,
            volume_ml=steps[i] * VOLUME_STEP_ML,
            nk_cells=nk[i],
            viable_cells=viable[i],
            expires_at=expires_at,
            cd3_cells=cd3[i] if cd3 is not None else None,
        )
        for i in range(count)
    ]
