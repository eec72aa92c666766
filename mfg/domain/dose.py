"""Dose calculation for one infusion and the split of the infused volume into bags (DOMAIN.md section 5).

The formulas, all in :class:`~decimal.Decimal` (28 significant digits, the :mod:`decimal` default):

* target NK cells = dose level (cells/kg) x subject weight (kg)
* volume to infuse (mL) = target NK cells / (viable cells per mL x NK fraction)
* CD3+ cells per kg = volume x viable cells per mL x CD3+ fraction / weight
* endotoxin per kg = volume x endotoxin EU/mL / weight
* the residual T-cell limit caps the NK dose: max NK cells/kg = T-cell limit x NK fraction / CD3+ fraction

Decisions (each is tested in ``tests/domain/test_dose.py``):

Inputs
    Numbers may be given as ``Decimal``, ``int``, ``float`` or ``str``. A float is converted through
    ``str()`` (``0.93`` becomes ``Decimal("0.93")``, not the binary ``0.9300000000000000488...``).
    Booleans, NaN, infinities and unparsable text are refused. Fractions are fractions, not percentages:
    ``0.93`` for 93 %. Every malformed input is reported at once in one :class:`ValidationFailed`.
    Accepted ranges: dose, weight, viable cells per mL and both limits greater than 0; NK fraction in
    (0, 1]; CD3+ fraction in [0, 1); endotoxin EU/mL at least 0. CD3-CD56+ (NK) and CD3+ cells are
    disjoint populations, so NK fraction + CD3+ fraction above 1 is refused too.

Volume rounding
    The volume is computed (``volume_ml_exact``) and then rounded **half-up to 0.1 mL**
    (``volume_ml``): that is the volume the operator draws and the label shows (13.419... mL -> 13.4 mL;
    12.25 mL -> 12.3 mL). A volume that rounds to 0.0 mL is refused: nothing could be drawn.
    Everything the subject receives is computed from the **rounded** volume, because that is what is
    actually drawn and infused: ``total_viable_cells``, ``delivered_nk_cells``, ``cd3_per_kg`` and
    ``endotoxin_eu_per_kg``. The limits are therefore checked against what the subject really gets;
    rounding up by up to 0.05 mL can tip a borderline product over a limit and is refused, not ignored.
    ``nk_cells`` stays the *target* (dose x weight); ``delivered_nk_per_kg`` shows the small difference.
    Values are kept exact (not rounded for display); rounding for display belongs to the edges.

Limits (refused with :class:`LimitExceeded`, never a warning)
    * residual T-cell limit: CD3+ cells/kg must be **strictly below** ``cd3_limit_per_kg``
      (specification "< 2 x 10^5 CD3+ cells/kg"), so a value **equal** to the limit is refused
      (``cd3_per_kg >= cd3_limit_per_kg`` fails).
    * endotoxin limit: EU/kg must be **at most** ``endotoxin_limit_eu_per_kg`` (specification
      "<= 5 EU/kg recipient weight"), so a value **equal** to the limit is accepted
      (``endotoxin_eu_per_kg > endotoxin_limit_eu_per_kg`` fails).

    Both limits are always checked; when both fail, :class:`LimitExceeded` lists both problems and its
    ``limit``/``value``/``maximum`` describe the first (the T-cell limit). A product with CD3+ fraction 0
    has no T-cell cap (``max_nk_per_kg_by_t_cells`` is ``None``).

Bags (:func:`split_into_bags`)
    The fewest bags of at most ``max_bag_volume_ml`` each, volumes in 0.1 mL steps (a maximum that is not
    a multiple of 0.1 mL is rounded down to one: 9.95 mL holds at most 9.9 mL), as equal as possible:
    with N steps of 0.1 mL in k bags, every bag gets N // k steps and the first N % k bags one step more
    (25.0 mL, max 10 -> 8.4 + 8.3 + 8.3). Volumes sum exactly to ``volume_ml``. Viable and NK cells
    (``total_viable_cells`` and ``delivered_nk_cells`` of the drawn volume, each rounded half-up to a
    whole cell) are split in proportion to volume by the largest-remainder method: every bag gets the
    whole part of its exact share, and the cells left over go one each to the bags with the largest
    fractional remainders, the lower bag index first on a tie. So each bag is within one cell of its
    exact share and the bags sum exactly to the totals. Every bag expires at ``formulated_at`` +
    ``shelf_life``, given in UTC; the shelf life is elapsed time (it is added in UTC, so a daylight-saving
    change in the formulation's time zone does not shift the expiry by an hour).
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
    localcontext,
)
from typing import NamedTuple

from mfg.domain.calc import round_half_up
from mfg.domain.errors import ValidationFailed

__all__ = [
    "ENDOTOXIN_LIMIT",
    "RESIDUAL_T_CELL_LIMIT",
    "VOLUME_STEP_ML",
    "Bag",
    "Formulation",
    "LimitBreach",
    "LimitExceeded",
    "Number",
    "formulation",
    "divide",
    "split_into_bags",
]

Number = Decimal | int | float | str
"""What a numeric input may be given as."""

RESIDUAL_T_CELL_LIMIT = "residual T-cell limit"
ENDOTOXIN_LIMIT = "endotoxin limit"

VOLUME_STEP_ML = Decimal("0.1")
"""Volumes are drawn, labelled and split in steps of 0.1 mL."""

_CONTEXT = Context(prec=28, Emax=999_999, Emin=-999_999, traps=[InvalidOperation, DivisionByZero, Overflow])


class LimitBreach(NamedTuple):
    """One release limit the formulation fails: which one, the value reached and the limit."""

    limit: str
    value: Decimal
    maximum: Decimal
    message: str


class LimitExceeded(ValidationFailed):
    """The formulation would give the subject more residual T cells or endotoxin per kg than allowed.

    ``problems`` has one message per failed limit; ``breaches`` the details of each. ``limit`` (one of
    :data:`RESIDUAL_T_CELL_LIMIT`, :data:`ENDOTOXIN_LIMIT`), ``value`` and ``maximum`` describe the first;
    ``limits`` names all of them. ``formulation`` is the refused calculation, for showing the numbers.
    """

    def __init__(self, *breaches: LimitBreach, formulation: Formulation | None = None) -> None:
        if not breaches:
            raise ValueError("LimitExceeded needs at least one breach")
        super().__init__(*(breach.message for breach in breaches))
        self.breaches = list(breaches)
        self.limit: str = breaches[0].limit
        self.value: Decimal = breaches[0].value
        self.maximum: Decimal = breaches[0].maximum
        self.limits = [breach.limit for breach in breaches]
        self.formulation = formulation


@dataclass(frozen=True, slots=True, kw_only=True)
class Formulation:
    """One accepted dose calculation. Inputs as given (as Decimal); results exact (28 digits) unless noted."""

    # inputs
    dose_per_kg: Decimal
    weight_kg: Decimal
    viable_per_ml: Decimal
    nk_fraction: Decimal
    cd3_fraction: Decimal
    endotoxin_eu_per_ml: Decimal
    cd3_limit_per_kg: Decimal
    endotoxin_limit_eu_per_kg: Decimal
    # results
    nk_cells: Decimal
    """Target NK cells: dose per kg x weight."""
    volume_ml_exact: Decimal
    """Volume that would hold exactly ``nk_cells``, before rounding."""
    volume_ml: Decimal
    """Volume to draw and infuse: ``volume_ml_exact`` rounded half-up to 0.1 mL (always one decimal place)."""
    total_viable_cells: Decimal
    """Viable cells in ``volume_ml``."""
    delivered_nk_cells: Decimal
    """NK cells in ``volume_ml`` (differs from ``nk_cells`` by the volume rounding)."""
    delivered_nk_per_kg: Decimal
    cd3_cells: Decimal
    """CD3+ cells in ``volume_ml``."""
    cd3_per_kg: Decimal
    endotoxin_eu: Decimal
    """Endotoxin in ``volume_ml``."""
    endotoxin_eu_per_kg: Decimal
    max_nk_per_kg_by_t_cells: Decimal | None
    """T-cell limit x NK fraction / CD3+ fraction; ``None`` when the CD3+ fraction is 0 (no cap)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Bag:
    """One bag of the infusion: 1-based ``index``, its volume, whole cells and expiry (aware, UTC)."""

    index: int
    volume_ml: Decimal
    nk_cells: int
    viable_cells: int
    expires_at: datetime


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


def _show(value: Decimal) -> str:
    """A number for a message: plain when moderate, else ``6.25 x 10^5``; at most 4 significant digits."""
    if value.is_zero():
        return "0"
    rounded = Decimal(format(value, ".4g"))
    if Decimal("0.001") <= abs(rounded) < Decimal(100_000):
        return format(rounded.normalize(), "f")
    mantissa, exponent = format(rounded, ".4e").split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa} x 10^{int(exponent)}"


def _positive(name: str, value: Decimal | None, unit: str, problems: list[str]) -> None:
    if value is not None and value <= 0:
        problems.append(f"{name} must be greater than 0{unit}, got {value}")


# --------------------------------------------------------------------------------------------------
# Formulation
# --------------------------------------------------------------------------------------------------


def formulation(
    *,
    dose_per_kg: Number,
    weight_kg: Number,
    viable_per_ml: Number,
    nk_fraction: Number,
    cd3_fraction: Number,
    endotoxin_eu_per_ml: Number,
    cd3_limit_per_kg: Number,
    endotoxin_limit_eu_per_kg: Number,
) -> Formulation:
    """Calculate the infusion volume for one dose and check it against the T-cell and endotoxin limits.

    Raises :class:`ValidationFailed` listing every malformed input (or when the volume rounds to 0.0 mL),
    and :class:`LimitExceeded` listing every limit the drawn volume would exceed. See the module
    docstring for the rounding and boundary rules.
    """
    problems: list[str] = []
    dose = _number("dose_per_kg", dose_per_kg, problems)
    weight = _number("weight_kg", weight_kg, problems)
    viable = _number("viable_per_ml", viable_per_ml, problems)
    nk = _number("nk_fraction", nk_fraction, problems)
    cd3 = _number("cd3_fraction", cd3_fraction, problems)
    eu_per_ml = _number("endotoxin_eu_per_ml", endotoxin_eu_per_ml, problems)
    cd3_limit = _number("cd3_limit_per_kg", cd3_limit_per_kg, problems)
    eu_limit = _number("endotoxin_limit_eu_per_kg", endotoxin_limit_eu_per_kg, problems)

    _positive("dose_per_kg", dose, " cells/kg", problems)
    _positive("weight_kg", weight, " kg", problems)
    _positive("viable_per_ml", viable, " cells/mL", problems)
    if nk is not None and not 0 < nk <= 1:
        problems.append(f"nk_fraction must be greater than 0 and at most 1 (a fraction: 0.93 for 93 %), got {nk}")
    if cd3 is not None and not 0 <= cd3 < 1:
        problems.append(f"cd3_fraction must be at least 0 and below 1 (a fraction: 0.0025 for 0.25 %), got {cd3}")
    if eu_per_ml is not None and eu_per_ml < 0:
        problems.append(f"endotoxin_eu_per_ml must not be negative, got {eu_per_ml}")
    _positive("cd3_limit_per_kg", cd3_limit, " cells/kg", problems)
    _positive("endotoxin_limit_eu_per_kg", eu_limit, " EU/kg", problems)
    if nk is not None and cd3 is not None and 0 < nk <= 1 and 0 <= cd3 < 1 and nk + cd3 > 1:
        problems.append(
            f"nk_fraction + cd3_fraction must not exceed 1 (CD3-CD56+ and CD3+ cells are disjoint), got {nk + cd3}"
        )
    if problems:
        raise ValidationFailed(*problems)
    assert dose is not None and weight is not None and viable is not None and nk is not None
    assert cd3 is not None and eu_per_ml is not None and cd3_limit is not None and eu_limit is not None

    try:
        with localcontext(_CONTEXT):
            nk_cells = dose * weight
            volume_exact = nk_cells / (viable * nk)
            volume = round_half_up(volume_exact, 1)
            total_viable = volume * viable
            delivered_nk = total_viable * nk
            cd3_cells = total_viable * cd3
            endotoxin_eu = volume * eu_per_ml
            result = Formulation(
                dose_per_kg=dose,
                weight_kg=weight,
                viable_per_ml=viable,
                nk_fraction=nk,
                cd3_fraction=cd3,
                endotoxin_eu_per_ml=eu_per_ml,
                cd3_limit_per_kg=cd3_limit,
                endotoxin_limit_eu_per_kg=eu_limit,
                nk_cells=nk_cells,
                volume_ml_exact=volume_exact,
                volume_ml=volume,
                total_viable_cells=total_viable,
                delivered_nk_cells=delivered_nk,
                delivered_nk_per_kg=delivered_nk / weight,
                cd3_cells=cd3_cells,
                cd3_per_kg=cd3_cells / weight,
                endotoxin_eu=endotoxin_eu,
                endotoxin_eu_per_kg=endotoxin_eu / weight,
                max_nk_per_kg_by_t_cells=cd3_limit * nk / cd3 if cd3 else None,
            )
    except ArithmeticError:
        raise ValidationFailed("the inputs are too large or too small to calculate a dose with") from None

    if volume.is_zero():
        raise ValidationFailed(
            f"the volume to infuse ({_show(volume_exact)} mL) rounds to 0.0 mL: the product is too concentrated "
            "for this dose to be drawn in 0.1 mL steps"
        )

    breaches: list[LimitBreach] = []
    if result.cd3_per_kg >= cd3_limit:  # the specification requires strictly below
        cap = result.max_nk_per_kg_by_t_cells
        assert cap is not None  # cd3_per_kg > 0, so the CD3+ fraction is not 0
        breaches.append(
            LimitBreach(
                RESIDUAL_T_CELL_LIMIT,
                result.cd3_per_kg,
                cd3_limit,
                f"{volume} mL would give {_show(result.cd3_per_kg)} CD3+ cells/kg; the {RESIDUAL_T_CELL_LIMIT} "
                f"requires below {_show(cd3_limit)}/kg. At {_show(cd3 * 100)} % CD3+ and {_show(nk * 100)} % NK "
                f"this product can give at most {_show(cap)} NK cells/kg (dose {_show(dose)}/kg)",
            )
        )
    if result.endotoxin_eu_per_kg > eu_limit:  # the specification allows equality
        breaches.append(
            LimitBreach(
                ENDOTOXIN_LIMIT,
                result.endotoxin_eu_per_kg,
                eu_limit,
                f"{volume} mL would give {_show(result.endotoxin_eu_per_kg)} EU/kg of endotoxin; the "
                f"{ENDOTOXIN_LIMIT} is at most {_show(eu_limit)} EU/kg",
            )
        )
    if breaches:
        raise LimitExceeded(*breaches, formulation=result)
    return result


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


def split_into_bags(
    f: Formulation,
    *,
    max_bag_volume_ml: Number,
    formulated_at: datetime,
    shelf_life: timedelta,
) -> list[Bag]:
    """Split the formulation's ``volume_ml`` into the fewest bags of at most ``max_bag_volume_ml``.

    Raises :class:`ValidationFailed` listing every problem: a maximum that is not a number, not above 0
    or below one 0.1 mL step; a ``formulated_at`` that is not an aware datetime; a shelf life that is not
    a positive timedelta. See the module docstring for how volumes and cells are divided.
    """
    return divide(f.volume_ml, f.total_viable_cells, f.delivered_nk_cells, max_bag_volume_ml=max_bag_volume_ml,
                  formulated_at=formulated_at, shelf_life=shelf_life)


def divide(
    volume_ml: Decimal,
    viable_cells: Decimal,
    nk_cells: Decimal,
    *,
    max_bag_volume_ml: Number,
    formulated_at: datetime,
    shelf_life: timedelta,
) -> list[Bag]:
    """:func:`split_into_bags` from the drawn volume and its viable and NK cells (as a batch record holds
    them, recorded in the dose plan), rather than from a :class:`Formulation`."""
    scaled_volume = volume_ml / VOLUME_STEP_ML
    if not (scaled_volume > 0 and scaled_volume == scaled_volume.to_integral_value()):
        raise ValidationFailed(f"the formulation's volume must be a positive multiple of 0.1 mL, got {volume_ml}")
    total_steps = int(scaled_volume)

    problems: list[str] = []
    for name, cells in (("viable cells", viable_cells), ("NK cells", nk_cells)):
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
    return [
        Bag(
            index=i + 1,
            volume_ml=steps[i] * VOLUME_STEP_ML,
            nk_cells=nk[i],
            viable_cells=viable[i],
            expires_at=expires_at,
        )
        for i in range(count)
    ]
