"""Recorded values: what an operator typed, turned into the value that is stored, and judged against limits.

Every field type of the master record schema (:data:`mfg.domain.sop_schema.FIELD_TYPES`) has one
:class:`FieldKind` in :data:`KINDS`. A kind

* :meth:`~FieldKind.parse` s the operator's entry into a :class:`Parsed` value, or refuses it with
  :class:`~mfg.domain.errors.ValidationFailed` and a message naming the field's label. A refused entry
  is malformed: nothing is stored, the operator corrects it (SPEC "Records and signatures");
* judges a parsed value against the field's limits (:meth:`~FieldKind.limit_problems`). An out-of-limit
  value is *not* refused: it is stored, flagged, needs a comment and opens a deviation. This module only
  says what is out of limit;
* :meth:`~FieldKind.display` s a stored value with its unit for screens and printed records;
* :meth:`~FieldKind.restore` s a :class:`Parsed` from the stored text (to judge or show it again).

Calculated fields are never typed: :meth:`CalculatedKind.compute` evaluates the expression with
:mod:`mfg.domain.calc` and rounds the result half up to the field's decimals.

Rules for manual entry, chosen so that every value means exactly one thing:

* Numbers: plain decimal notation only, ``-`` allowed in front: ``185``, ``185.25``, ``-0.5``. Refused:
  decimal commas and thousands separators (``12,5``, ``1,000``, ``1 000``), exponents (``1e5``), a plus
  sign, a bare point (``.5``, ``5.``), more decimal places than the field's ``decimals`` and more than
  28 digits. The stored text keeps exactly the decimal places typed (``185.20`` stays ``185.20``: the
  operator read that precision); only leading zeros and the sign of zero are dropped (``007.5`` ->
  ``7.5``, ``-0.0`` -> ``0.0``).
* Integers: the same, without a decimal point (``12.0`` is refused: counts are whole numbers).
* Date and time: the site's local time as ``YYYY-MM-DD HH:MM`` or ``YYYY-MM-DDTHH:MM`` (seconds
  ``:SS`` optional), year 1900 or later; stored in UTC (``2026-03-29T08:30:00.000000Z``, the format of
  :func:`mfg.domain.canonical.iso_utc`). A local time that does not exist (the hour skipped when clocks go
  forward) or exists twice (when they go back) is refused: it cannot be stored as one instant.
* Text: surrounding whitespace removed, line breaks stored as ``\\n``; control characters other than
  line break and tab refused; at most ``max_length`` characters.
* Choices must be one of the listed answers exactly (surrounding whitespace ignored).
* Confirmation: a ticked box arrives as ``y``/``yes``/``on``/``true``/``1``/``confirmed`` (any case) and
  is stored as ``confirmed``; an unticked box (empty, ``n``/``no``/``off``/``false``/``0``) is refused
  when the field is required and stored as empty otherwise.
* Scan, equipment and material identifiers: surrounding whitespace (a scanner's trailing Enter or Tab)
  removed; at most 200 characters; no control characters. Whether the identifier is the expected one,
  or a known piece of equipment or material lot, is checked by the services against master data.

An empty entry of an optional field is stored as ``Parsed(text="")``; of a required field it is refused.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Generic, TypeVar
from zoneinfo import ZoneInfo

from mfg.domain import inputs
from mfg.domain.calc import CalculationError, evaluate, round_half_up
from mfg.domain.canonical import iso_utc
from mfg.domain.errors import ValidationFailed
from mfg.domain.limits import LIMIT_CHECKS, LimitContext, limit_text, limit_value
from mfg.domain.sop_schema import (
    CalculatedField,
    ChoiceField,
    ConfirmationField,
    DateTimeField,
    EquipmentField,
    Field,
    FieldBase,
    IntegerField,
    MaterialField,
    NumberField,
    ScanField,
    TextField,
)

__all__ = [
    "CONFIRMED",
    "KINDS",
    "MAX_DIGITS",
    "MAX_IDENTIFIER_LENGTH",
    "MIN_YEAR",
    "NOT_RECORDED",
    "CalculatedKind",
    "ChoiceKind",
    "ConfirmationKind",
    "DateTimeKind",
    "EquipmentKind",
    "FieldKind",
    "IntegerKind",
    "MaterialKind",
    "NumberKind",
    "Parsed",
    "ScanKind",
    "TextKind",
    "compute",
    "display",
    "kind_of",
    "Calculated",
    "calculate",
    "limit_problems",
    "parse",
    "restore",
]

MAX_DIGITS = inputs.MAX_DIGITS

MAX_IDENTIFIER_LENGTH = 200
"""Longest scan, equipment or material identifier accepted."""

MIN_YEAR = inputs.MIN_YEAR

NOT_RECORDED = "—"
"""Shown for an empty optional value: a printed record has no blank spaces (good documentation practice)."""

CONFIRMED = "confirmed"
"""Stored text of a ticked confirmation."""

_TICKED = frozenset({"y", "yes", "on", "true", "1", CONFIRMED})
_UNTICKED = frozenset({"", "n", "no", "off", "false", "0"})

_INTEGER = re.compile(r"(-?)([0-9]+)")
_LOCAL_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?")


@dataclass(frozen=True)
class Parsed:
    """A value ready to store.

    ``text`` is the canonical stored text ("" when an optional field is left empty); ``number`` is the
    value of number, integer and calculated fields; ``moment`` the UTC instant of datetime fields.
    """

    text: str
    number: Decimal | None = None
    moment: datetime | None = None

    @property
    def is_empty(self) -> bool:
        """True when nothing was recorded (an optional field left empty)."""
        return self.text == ""


EMPTY = Parsed("")

F = TypeVar("F", bound=FieldBase)


class FieldKind(ABC, Generic[F]):
    """How values of one field type are entered, stored, judged and shown."""

    type_name: ClassVar[str]

    def parse(self, field: F, raw: str, *, tz: ZoneInfo) -> Parsed:
        """The stored value for what the operator entered; :class:`ValidationFailed` if it is malformed.

        ``raw`` is the text as submitted (an absent form value is ""); ``tz`` is the site's time zone,
        in which operators read clocks and type times.
        """
        entry = inputs.trim(raw)
        if not entry:
            return self._empty(field)
        return self._parse_entry(field, entry, tz)

    @abstractmethod
    def _parse_entry(self, field: F, entry: str, tz: ZoneInfo) -> Parsed:
        """Parse a non-empty entry (surrounding whitespace already removed)."""

    def _empty(self, field: F) -> Parsed:
        """Nothing entered: fine for an optional field, refused for a required one."""
        if field.required:
            raise ValidationFailed(f"{field.label} is required; {self._required_hint(field)}.")
        return EMPTY

    def _required_hint(self, field: F) -> str:
        return "enter a value"

    def restore(self, field: F, text: str) -> Parsed:
        """The :class:`Parsed` value for ``text`` as stored by :meth:`parse` (no entry rules applied)."""
        return Parsed(text)

    def limit_problems(self, field: F, parsed: Parsed, context: LimitContext | None = None) -> list[str]:
        """Why the value is out of limit (flag, comment, deviation); empty when within limits or empty.
        ``context`` gives the values of limits named by context name (``trial.cd3_limit_per_kg``)."""
        return []

    def display(self, field: F, parsed_text: str, *, tz: ZoneInfo | None = None) -> str:
        """The stored value as screens and printed records show it; :data:`NOT_RECORDED` when empty."""
        return parsed_text or NOT_RECORDED


# --------------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------------


def _with_unit(value: str, unit: str) -> str:
    """``62 %``, ``185.2 mL``; unit ``1`` means dimensionless and is not shown."""
    return value if unit == "1" else f"{value} {unit}"


def _places(count: int) -> str:
    return f"{count} decimal place{'' if count == 1 else 's'}"


class _NumericKind(FieldKind[F]):
    """Shared by number, integer and calculated fields: limits and display with unit."""

    def _number_problem(self, label: str, entry: str, example: str = "for example 1234.5") -> str:
        """Explain why ``entry`` is not a plain decimal number (the input policy's words)."""
        return inputs.number_problem(label, entry, example)

    def _canonical(self, label: str, sign: str, whole: str, fraction: str | None) -> Parsed:
        whole = whole.lstrip("0") or "0"
        digits = len(whole.lstrip("0")) + len(fraction or "")
        if digits > MAX_DIGITS:
            raise ValidationFailed(f"{label}: too many digits ({digits}); at most {MAX_DIGITS} are allowed")
        text = whole if fraction is None else f"{whole}.{fraction}"
        number = Decimal(text)
        if sign and not number.is_zero():
            text, number = f"-{text}", -number
        return Parsed(text, number)

    def restore(self, field: F, text: str) -> Parsed:
        if not text:
            return EMPTY
        try:
            return Parsed(text, Decimal(text))
        except InvalidOperation as exc:
            raise ValueError(f"stored value {text!r} of {field.label!r} is not a number") from exc

    def limit_problems(self, field: F, parsed: Parsed, context: LimitContext | None = None) -> list[str]:
        """Compare the value as recorded (after rounding, for calculated fields) with min, max and below
        (strict); a named limit takes its value from ``context``, and one the batch does not define means
        the value cannot be judged, which is out of limit."""
        if parsed.number is None:
            return []
        unit: str = getattr(field, "unit", "1")
        shown = _with_unit(parsed.text, unit)
        for attribute, outside, words in LIMIT_CHECKS:
            limit = getattr(field, attribute, None)
            if limit is None:
                continue
            value = limit_value(limit, context)
            if value is None:
                return [f"{field.label} {shown} cannot be judged: its limit {limit} is not defined for this batch"]
            if outside(parsed.number, value):
                return [f"{field.label} {shown} is {words} {_with_unit(limit_text(value), unit)}"
                        + (f" ({limit})" if isinstance(limit, str) else "")]
        return []

    def display(self, field: F, parsed_text: str, *, tz: ZoneInfo | None = None) -> str:
        return _with_unit(parsed_text, getattr(field, "unit", "1")) if parsed_text else NOT_RECORDED


class NumberKind(_NumericKind[NumberField]):
    """A measured value: plain decimal notation, at most the field's ``decimals`` places."""

    type_name = "number"

    def _parse_entry(self, field: NumberField, entry: str, tz: ZoneInfo) -> Parsed:
        sign, whole, fraction = inputs.decimal_parts(field.label, entry)
        if fraction is not None and len(fraction) > field.decimals:
            allowed = f"at most {_places(field.decimals)} allowed" if field.decimals else "whole numbers only"
            raise ValidationFailed(f"{field.label}: {entry!r} has {_places(len(fraction))}; {allowed}")
        return self._canonical(field.label, sign, whole, fraction)


class IntegerKind(_NumericKind[IntegerField]):
    """A counted value: a whole number, no decimal point."""

    type_name = "integer"

    def _parse_entry(self, field: IntegerField, entry: str, tz: ZoneInfo) -> Parsed:
        match = _INTEGER.fullmatch(entry)
        if match is None:
            if inputs.is_plain_decimal(entry):
                raise ValidationFailed(f"{field.label}: {entry!r} is not a whole number; enter a count such as 12")
            raise ValidationFailed(self._number_problem(field.label, entry, "for example 12"))
        sign, whole = match.groups()
        return self._canonical(field.label, sign, whole, None)


class CalculatedKind(_NumericKind[CalculatedField]):
    """Computed by the system from recorded numbers; operators cannot type it."""

    type_name = "calculated"

    def parse(self, field: CalculatedField, raw: str, *, tz: ZoneInfo) -> Parsed:
        raise ValidationFailed(f"{field.label} is calculated by the system and cannot be entered.")

    def _parse_entry(self, field: CalculatedField, entry: str, tz: ZoneInfo) -> Parsed:  # pragma: no cover
        raise AssertionError("parse() never gets here")

    def compute(self, field: CalculatedField, values: Mapping[str, Decimal | float | int | None]) -> Parsed:
        """Evaluate the field's expression and round the result half up to the field's decimals.

        ``values`` maps each name used in the expression, as written there
        (:func:`mfg.domain.calc.referenced_names`), to its recorded number; ``None`` means not recorded.
        Raises :class:`~mfg.domain.calc.CalculationError` (a :class:`ValidationFailed`) naming the field
        when the value cannot be calculated, e.g. "Total viable cells cannot be calculated: needs
        'volume_ml', which is not recorded yet". Judge the result with :meth:`limit_problems`.
        """
        try:
            result = evaluate(field.expression, values)
        except CalculationError as exc:
            raise CalculationError(
                *(f"{field.label} cannot be calculated: {problem}" for problem in exc.problems)
            ) from exc
        rounded = round_half_up(result, field.decimals)
        if rounded.adjusted() >= MAX_DIGITS:
            raise CalculationError(
                f"{field.label} cannot be calculated: the result {result.normalize():E} is too large to record "
                f"(more than {MAX_DIGITS} digits)"
            )
        return Parsed(f"{rounded:f}", rounded)


# --------------------------------------------------------------------------------------------------
# Text, choices, confirmation
# --------------------------------------------------------------------------------------------------


class TextKind(FieldKind[TextField]):
    """Free text: trimmed, line breaks kept as ``\\n``, no control characters, at most ``max_length``."""

    type_name = "text"

    def _parse_entry(self, field: TextField, entry: str, tz: ZoneInfo) -> Parsed:
        return Parsed(inputs.Text(field.label, field.max_length, multiline=True).clean(entry))


class ChoiceKind(FieldKind[ChoiceField]):
    """One of the listed answers; an answer outside ``acceptable`` is out of limit."""

    type_name = "choice"

    def _required_hint(self, field: ChoiceField) -> str:
        return "choose an answer"

    def _parse_entry(self, field: ChoiceField, entry: str, tz: ZoneInfo) -> Parsed:
        if entry not in field.choices:
            raise ValidationFailed(
                f"{field.label}: {entry!r} is not one of the answers: {', '.join(field.choices)}"
            )
        return Parsed(entry)

    def limit_problems(self, field: ChoiceField, parsed: Parsed, context: LimitContext | None = None) -> list[str]:
        if parsed.is_empty or field.acceptable is None or parsed.text in field.acceptable:
            return []
        return [f"{field.label} {parsed.text!r} is not acceptable (acceptable: {', '.join(field.acceptable)})"]


class ConfirmationKind(FieldKind[ConfirmationField]):
    """A tick box confirming the field's statement; stored as ``confirmed``."""

    type_name = "confirmation"

    def parse(self, field: ConfirmationField, raw: str, *, tz: ZoneInfo) -> Parsed:
        entry = raw.strip().lower()
        if entry in _UNTICKED:
            return self._empty(field)
        if entry in _TICKED:
            return Parsed(CONFIRMED)
        raise ValidationFailed(f"{field.label}: {raw.strip()!r} is not a tick; tick the box or leave it empty")

    def _parse_entry(self, field: ConfirmationField, entry: str, tz: ZoneInfo) -> Parsed:  # pragma: no cover
        raise AssertionError("parse() never gets here")

    def _required_hint(self, field: ConfirmationField) -> str:
        return f"tick the box to confirm: {field.statement}"

    def display(self, field: ConfirmationField, parsed_text: str, *, tz: ZoneInfo | None = None) -> str:
        return "Confirmed" if parsed_text == CONFIRMED else NOT_RECORDED


# --------------------------------------------------------------------------------------------------
# Date and time
# --------------------------------------------------------------------------------------------------


class DateTimeKind(FieldKind[DateTimeField]):
    """A local date and time at the site, stored as a UTC instant."""

    type_name = "datetime"

    def _required_hint(self, field: DateTimeField) -> str:
        return "enter the date and time (YYYY-MM-DD HH:MM)"

    def _parse_entry(self, field: DateTimeField, entry: str, tz: ZoneInfo) -> Parsed:
        match = _LOCAL_TIME.fullmatch(entry)
        if match is None:
            raise ValidationFailed(
                f"{field.label}: {entry!r} is not a date and time; enter YYYY-MM-DD HH:MM, "
                "for example 2026-03-29 14:05"
            )
        year, month, day, hour, minute, second = (int(part or 0) for part in match.groups())
        try:
            local = datetime(year, month, day, hour, minute, second)
        except ValueError as exc:
            raise ValidationFailed(f"{field.label}: {entry!r} is not a valid date and time ({exc})") from exc
        if year < MIN_YEAR:
            raise ValidationFailed(f"{field.label}: {entry!r}: the year must be {MIN_YEAR} or later")
        shown = f"{local:%Y-%m-%d %H:%M}" + (f":{second:02d}" if second else "")
        earlier, later = local.replace(tzinfo=tz, fold=0), local.replace(tzinfo=tz, fold=1)
        if earlier.utcoffset() != later.utcoffset():
            if earlier.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) != local:
                raise ValidationFailed(
                    f"{field.label}: {shown} does not exist in {tz.key}: the clocks go forward an hour at that "
                    "time; check the time on the clock"
                )
            raise ValidationFailed(
                f"{field.label}: {shown} is ambiguous in {tz.key}: it occurs twice because the clocks go back "
                "an hour at that time, so it cannot be recorded as one instant"
            )
        moment = earlier.astimezone(timezone.utc)
        return Parsed(iso_utc(moment), moment=moment)

    def restore(self, field: DateTimeField, text: str) -> Parsed:
        if not text:
            return EMPTY
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError(f"stored time {text!r} of {field.label!r} has no time zone")
        return Parsed(text, moment=moment.astimezone(timezone.utc))

    def display(self, field: DateTimeField, parsed_text: str, *, tz: ZoneInfo | None = None) -> str:
        """``2026-03-29 10:30 CEST`` in the site's zone when ``tz`` is given, else ``... UTC``."""
        if not parsed_text:
            return NOT_RECORDED
        moment = self.restore(field, parsed_text).moment
        assert moment is not None
        shown = moment.astimezone(tz) if tz is not None else moment
        seconds = ":%S" if shown.second else ""
        return f"{shown.strftime('%Y-%m-%d %H:%M' + seconds)} {shown.tzname() if tz is not None else 'UTC'}"


# --------------------------------------------------------------------------------------------------
# Identifiers: scans, equipment, material lots
# --------------------------------------------------------------------------------------------------


class _IdentifierKind(FieldKind[F]):
    """Format checks only; the services check the identifier against the batch and master data."""

    what: ClassVar[str] = "identifier"
    charset: ClassVar[inputs.Charset] = inputs.SCAN

    def _required_hint(self, field: F) -> str:
        return f"enter the {self.what}"

    def _parse_entry(self, field: F, entry: str, tz: ZoneInfo) -> Parsed:
        return Parsed(inputs.Identifier(field.label, MAX_IDENTIFIER_LENGTH, self.charset).clean(entry))


class ScanKind(_IdentifierKind[ScanField]):
    """A scanned barcode; compared with the expected value by the services (identity check)."""

    type_name = "scan"
    what = "scanned code"


class EquipmentKind(_IdentifierKind[EquipmentField]):
    """The identifier of the equipment used."""

    type_name = "equipment"
    what = "equipment identifier"
    charset = inputs.LABEL  # as registered (mfg.domain.inputs.RULES["identifier"])


class MaterialKind(_IdentifierKind[MaterialField]):
    """The lot of the material used."""

    type_name = "material"
    what = "material lot"


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

KINDS: dict[str, FieldKind[Any]] = {
    kind.type_name: kind
    for kind in (
        NumberKind(),
        IntegerKind(),
        TextKind(),
        ChoiceKind(),
        DateTimeKind(),
        ConfirmationKind(),
        ScanKind(),
        EquipmentKind(),
        MaterialKind(),
        CalculatedKind(),
    )
}
"""The kind of every field type, keyed by the schema's ``type`` names (one for each of ``FIELD_TYPES``)."""

def kind_of(field: Field) -> FieldKind[Any]:
    """The kind for ``field``'s type."""
    return KINDS[field.type]


def parse(field: Field, raw: str, *, tz: ZoneInfo) -> Parsed:
    """:meth:`FieldKind.parse` of ``field``'s kind."""
    return kind_of(field).parse(field, raw, tz=tz)


def restore(field: Field, text: str) -> Parsed:
    """:meth:`FieldKind.restore` of ``field``'s kind."""
    return kind_of(field).restore(field, text)


def limit_problems(field: Field, parsed: Parsed, context: LimitContext | None = None) -> list[str]:
    """:meth:`FieldKind.limit_problems` of ``field``'s kind."""
    return kind_of(field).limit_problems(field, parsed, context)


def display(field: Field, parsed_text: str, *, tz: ZoneInfo | None = None) -> str:
    """:meth:`FieldKind.display` of ``field``'s kind."""
    return kind_of(field).display(field, parsed_text, tz=tz)


@dataclass(frozen=True)
class Calculated:
    """One calculated field of a step, computed and judged (:func:`calculate`)."""

    field: CalculatedField
    parsed: Parsed
    limit_problems: list[str]

    @property
    def refused(self) -> list[str]:
        """The problems that refuse the step (``refuse_outside_limits``), as the operator reads them."""
        if not (self.limit_problems and self.field.refuse_outside_limits):
            return []
        return [f"REFUSED: {p}. The master record does not allow this value; nothing was stored."
                for p in self.limit_problems]


def calculate(fields: Sequence[Field], numbers: dict[str, Decimal | None]) -> list[Calculated]:
    """Compute every calculated field of ``fields`` in order (each result is added to ``numbers`` under its
    id, for the fields after it) and judge it against its limits, named limits taken from ``numbers``.
    The one place a step's calculations run, for the engine and for anyone checking a master record's
    arithmetic (the dose formulation, for example, lives only in NK-FORMULATE's calculated fields)."""
    found = []
    kind = KINDS["calculated"]
    assert isinstance(kind, CalculatedKind)
    for f in fields:
        if isinstance(f, CalculatedField):
            parsed = kind.compute(f, numbers)
            numbers[f.id] = parsed.number
            found.append(Calculated(f, parsed, kind.limit_problems(f, parsed, numbers)))
    return found


def compute(field: CalculatedField, values: Mapping[str, Decimal | float | int | None]) -> Parsed:
    """:meth:`CalculatedKind.compute`."""
    kind = KINDS["calculated"]
    assert isinstance(kind, CalculatedKind)
    return kind.compute(field, values)
