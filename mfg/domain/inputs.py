"""The input policy: what a person may type into any text, identifier, number or date, in one place.

Every path that takes an input (the web forms, through :class:`mfg.web.forms.PolicyForm`; the services,
which are also what the command line calls; the step fields of master records, through
:mod:`mfg.domain.values`) cleans it with :func:`clean` and the rule declared for it in :data:`RULES`. A
refused input raises :class:`~mfg.domain.errors.ValidationFailed` with a message that names the field and
the limit broken: nothing is stored.

Decisions (issue 19, item 4; 21 CFR 11.10(a), EU GMP Annex 11 §5 "built-in checks for the correct and
secure entry"):

* **Every text** is normalised to Unicode NFC (one stored form for one visible text) and trimmed of
  surrounding whitespace. Refused anywhere: control characters (category Cc: NUL, ESC, DEL, C1...) except
  line break and tab in multi-line text (a carriage return is stored as a line break); format characters
  (category Cf: zero-width space and joiners U+200B-U+200D, the direction marks U+200E/U+200F, the
  embeddings and overrides U+202A-U+202E, the isolates U+2066-U+2069, the byte order mark U+FEFF, soft
  hyphen...): they are invisible or reorder what a printed, signed record shows; surrogates, unassigned
  code points and private-use characters, which no font shows; the line and paragraph separators
  U+2028/U+2029 (a line break that is not ``\\n``). Each text field has a maximum length, in characters
  after normalisation, named in the message.
* **Identifiers** (subject and donor codes, user names, equipment identifiers, lot numbers, scanned codes)
  are text from a declared ASCII character set, so that a look-alike (Cyrillic О for Latin O, full-width
  digits, a zero-width character) cannot make a second identifier that reads like the first:

  - ``CODE``: letters ``A-Z a-z``, digits ``0-9``, ``-`` and ``_``, starting with a letter or digit:
    subject and donor codes;
  - ``NAME``: the same and ``.``: user names;
  - ``LABEL``: the same as ``NAME`` and ``/``: equipment identifiers, lot numbers, CAPA references;
  - ``SCAN``: printable ASCII (``!`` to ``~``, a space only between others): scanned barcodes (ISBT 128
    data identifiers such as ``=`` and ``&``, the eye-readable DIN's spaces).

* **Numbers** are plain decimal: ASCII digits ``0-9`` only (no Arabic-Indic or full-width digits), a
  minus sign in front only where the field allows negatives, at most one decimal point with digits on both
  sides, no exponent (``1E1``), no plus sign, no thousands separators, no decimal comma; at most the
  field's decimal places and 28 digits in all; within the field's range where it declares one.
* **Dates** fall within a range declared per field, relative to the day of entry: a weighing or a specimen
  date is not in the future nor more than 10 years back; a calibration due date or a lot's expiry may be
  in the future (up to 20 and 30 years). No date is before 1900 (:data:`MIN_YEAR`).

The rule of each input is in :data:`RULES`, by the name of the input (which the web forms use as their
field names); a form field whose name has no rule is a programming error found by the tests.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import cast

from mfg.domain.errors import ValidationFailed

__all__ = ["CODE", "LABEL", "MAX_DIGITS", "MIN_YEAR", "NAME", "RULES", "SCAN", "Charset", "DateRange", "Identifier",
           "Number", "Rule", "Text", "clean", "day", "decimal_parts", "is_plain_decimal", "number", "number_problem",
           "problems", "problems_of_day", "required", "rule", "text", "text_problem", "trim"]

MIN_YEAR = 1900
"""No date before this year is plausible in any field (``0226`` typed for ``2026``, year ``0001``)."""

MAX_DIGITS = 28
"""Most digits a number may have (typed or calculated): the precision of every calculation."""

# Allowed inside multi-line text only; everything else of category Cc is refused everywhere.
_MULTILINE_CONTROLS = frozenset("\n\t")
# Refused beside Cc: Cf (format: zero-width, direction marks, embeddings, overrides, isolates, BOM...),
# Cs (surrogates), Co (private use), Cn (unassigned), Zl and Zp (line and paragraph separators).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

_DECIMAL = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")
_EXPONENT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")


def _describe(char: str) -> str:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)``: how a refused character is named in a message."""
    return f"U+{ord(char):04X} ({unicodedata.name(char, unicodedata.category(char))})"


def text_problem(label: str, text: str, *, multiline: bool = False) -> str | None:
    """Why ``text`` (already normalised) holds a character no text may hold; ``None`` when it holds none."""
    for char in text:
        if multiline and char in _MULTILINE_CONTROLS:
            continue
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            kind = ("a control character" if unicodedata.category(char) == "Cc"
                    else "an invisible or formatting character")
            return f"{label}: the text contains {kind}, {_describe(char)}; retype it without it"
    return None


# What surrounds an entry and is trimmed: spaces (category Zs), tab, line breaks (a scanner's Enter or Tab).
# Other whitespace controls (VT, FF, FS...) are refused rather than trimmed away unseen.
_TRIMMED = " \t\r\n\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"


def trim(value: str) -> str:
    """``value`` without surrounding spaces, tabs and line breaks (and nothing else)."""
    return value.strip(_TRIMMED)


def _normalised(value: str, *, multiline: bool) -> str:
    text = trim(unicodedata.normalize("NFC", value))
    if multiline:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


@dataclass(frozen=True)
class Rule:
    """How one input is checked: ``label`` names it in messages."""

    label: str

    def clean(self, value: str, *, today: date | None = None) -> object:
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Rule):
    """Free text of at most ``max_length`` characters; line breaks and tabs only when ``multiline``."""

    max_length: int
    multiline: bool = False

    def clean(self, value: str, *, today: date | None = None) -> str:
        text = _normalised(value, multiline=self.multiline)
        problem = text_problem(self.label, text, multiline=self.multiline)
        if problem:
            raise ValidationFailed(problem)
        if len(text) > self.max_length:
            raise ValidationFailed(f"{self.label}: the text has {len(text)} characters; at most {self.max_length} "
                                   "are allowed")
        return text


@dataclass(frozen=True)
class Charset:
    """A declared character set of identifiers: the first character from ``first``, the others from
    ``rest`` (regular expression character classes), as ``words`` says."""

    first: str
    rest: str
    words: str

    def odd_character(self, text: str) -> str | None:
        """The first character of ``text`` outside the set (``None``: ``text`` is an identifier of the set)."""
        for n, char in enumerate(text):
            if not re.fullmatch(self.first if n == 0 else self.rest, char):
                return char
        return None


_ALNUM = "[A-Za-z0-9]"
CODE = Charset(_ALNUM, "[A-Za-z0-9_-]", "letters A-Z, digits 0-9, '-' and '_' (starting with a letter or digit)")
NAME = Charset(_ALNUM, "[A-Za-z0-9._-]", "letters A-Z, digits 0-9, '.', '-' and '_' (starting with a letter or digit)")
LABEL = Charset(_ALNUM, "[A-Za-z0-9._/-]",
                "letters A-Z, digits 0-9, '-', '_', '.' and '/' (starting with a letter or digit)")
SCAN = Charset("[!-~]", "[ -~]", "printable ASCII characters (a space only between others)")


@dataclass(frozen=True)
class Identifier(Rule):
    """An identifier of at most ``max_length`` characters from ``charset``."""

    max_length: int
    charset: Charset

    def clean(self, value: str, *, today: date | None = None) -> str:
        text = Text(self.label, self.max_length).clean(value)
        if not text:
            return text
        odd = self.charset.odd_character(text)
        if odd is not None:
            raise ValidationFailed(f"{self.label}: {text!r} is not an identifier: {_describe(odd)} is not allowed; "
                                   f"use only {self.charset.words}")
        return text


def number_problem(label: str, entry: str, example: str = "for example 1234.5") -> str:
    """Why ``entry`` is not a plain decimal number (the message for any refused number)."""
    if "," in entry or " " in entry or "'" in entry:
        return (f"{label}: {entry!r} is not a number; use a point as the decimal separator and no thousands "
                f"separators, {example}")
    if _EXPONENT.fullmatch(entry):
        return f"{label}: {entry!r} uses exponent notation; write the number out in full, {example}"
    if entry.startswith("+"):
        return f"{label}: {entry!r}: write the number without a plus sign"
    if re.fullmatch(r"-?(\.[0-9]+|[0-9]+\.)", entry):
        return f"{label}: {entry!r}: write digits on both sides of the decimal point, for example 0.5"
    if any(c.isdigit() and not "0" <= c <= "9" for c in entry):
        return (f"{label}: {entry!r} is not a number; type the digits 0-9 (other scripts' or full-width digits "
                "are not accepted)")
    return f"{label}: {entry!r} is not a number; enter digits with an optional decimal point, {example}"


def decimal_parts(label: str, entry: str, example: str = "for example 1234.5") -> tuple[str, str, str | None]:
    """(sign, whole, fraction) of a plain decimal ``entry`` (trimmed); :class:`ValidationFailed` otherwise."""
    match = _DECIMAL.fullmatch(entry)
    if match is None:
        raise ValidationFailed(number_problem(label, entry, example))
    sign, whole, fraction = match.groups()
    return sign, whole, fraction


def is_plain_decimal(entry: str) -> bool:
    """True when ``entry`` is written as the policy's plain decimal (sign, digits, one point)."""
    return _DECIMAL.fullmatch(entry) is not None


def _places(count: int) -> str:
    return f"{count} decimal place{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class Number(Rule):
    """A plain decimal number with at most ``places`` decimal places, above ``above`` (exclusive) and at most
    ``maximum``; negative only when ``signed``."""

    places: int
    unit: str = ""
    above: Decimal | None = None
    maximum: Decimal | None = None
    signed: bool = False

    def clean(self, value: str, *, today: date | None = None) -> Decimal:
        entry = Text(self.label, 40).clean(value)
        sign, whole, fraction = decimal_parts(self.label, entry, "for example 62.4")
        if sign and not self.signed:
            raise ValidationFailed(f"{self.label}: {entry!r}: a negative number is not accepted here")
        if fraction is not None and len(fraction) > self.places:
            allowed = f"at most {_places(self.places)} allowed" if self.places else "whole numbers only"
            raise ValidationFailed(f"{self.label}: {entry!r} has {_places(len(fraction))}; {allowed}")
        digits = len(whole.lstrip("0")) + len(fraction or "")
        if digits > MAX_DIGITS:
            raise ValidationFailed(f"{self.label}: too many digits ({digits}); at most {MAX_DIGITS} are allowed")
        number = Decimal(entry)
        unit = f" {self.unit}" if self.unit else ""
        if self.above is not None and number <= self.above:
            raise ValidationFailed(f"{self.label}: {entry}{unit} is not accepted; it must be more than "
                                   f"{self.above}{unit}")
        if self.maximum is not None and number > self.maximum:
            raise ValidationFailed(f"{self.label}: {entry}{unit} is implausible; at most {self.maximum}{unit} is "
                                   "accepted")
        return number


@dataclass(frozen=True)
class DateRange(Rule):
    """A date no earlier than ``years_back`` years before the day of entry and no later than ``years_ahead``
    years after it (0: not in the future); never before :data:`MIN_YEAR`."""

    years_back: int
    years_ahead: int = 0
    def bounds(self, today: date) -> tuple[date, date]:
        earliest = max(date(MIN_YEAR, 1, 1), _shift_years(today, -self.years_back))
        return earliest, _shift_years(today, self.years_ahead)

    def clean(self, value: date | str, *, today: date | None = None) -> date:
        if today is None:
            raise TypeError("a date is checked against the day of entry: pass today")
        if isinstance(value, str):
            try:
                value = date.fromisoformat(Text(self.label, 10).clean(value))
            except ValueError:
                raise ValidationFailed(f"{self.label}: {value!r} is not a date; enter YYYY-MM-DD") from None
        earliest, latest = self.bounds(today)
        if value < earliest:
            raise ValidationFailed(f"{self.label}: {value.isoformat()} is implausibly early; the earliest accepted "
                                   f"is {earliest.isoformat()}")
        if value > latest:
            if not self.years_ahead:
                raise ValidationFailed(f"{self.label}: {value.isoformat()} is in the future; the latest accepted "
                                       f"is today, {latest.isoformat()}")
            raise ValidationFailed(f"{self.label}: {value.isoformat()} is implausibly far ahead; the latest "
                                   f"accepted is {latest.isoformat()}")
        return value


def _shift_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February in a year that has none
        return (day - timedelta(days=1)).replace(year=day.year + years)


REASON = Text("Reason", 500)
COMMENT = Text("Comment", 2000, multiline=True)

RULES: dict[str, Rule] = {
    # people and accounts
    "username": Identifier("User name", 64, NAME),
    "full_name": Text("Full (printed) name", 200),
    # why and what: reasons, comments, descriptions
    "reason": REASON,
    "comment": COMMENT,
    "summary": Text("Summary of records", 2000, multiline=True),
    "description": Text("Description", 4000, multiline=True),
    "investigation": Text("Investigation", 8000, multiline=True),
    "root_cause": Text("Root cause", 4000, multiline=True),
    "impact": Text("Impact", 4000, multiline=True),
    "capa_reference": Identifier("CAPA reference", 60, LABEL),
    "audit_reason": Text("Audit reason", 8000, multiline=True),  # the audit trail's own bound on any reason
    # clinic
    "subject_code": Identifier("Subject code", 40, CODE),
    "donor_code": Identifier("Donor code", 40, CODE),
    "test": Text("Test", 60),
    "weight_kg": Number("Weight", places=2, unit="kg", above=Decimal(0), maximum=Decimal(400)),
    "measured_on": DateRange("Weighed on", years_back=10),
    "specimen_date": DateRange("Specimen drawn on", years_back=10),
    # the subject's eligibility screening (domain.eligibility names each lab value by its criterion)
    "age_years": Number("Age", places=0, unit="years", maximum=Decimal(150)),
    "ecog": Number("ECOG performance status", places=0, maximum=Decimal(5)),
    "first_treatment_on": DateRange("Planned first treatment", years_back=1, years_ahead=1),
    "lab_value": Number("Value", places=6, maximum=Decimal(10) ** 9),
    "lab_uln": Number("ULN", places=6, maximum=Decimal(10) ** 9),
    "lab_measured_on": DateRange("Measured on", years_back=1),
    # master data
    "identifier": Identifier("Equipment identifier", 60, LABEL),
    "equipment_type": Text("Equipment type", 100),
    "equipment_description": Text("Description", 200),
    "calibration_due": DateRange("Calibration due", years_back=10, years_ahead=20),
    "material": Text("Material", 100),
    "lot_number": Identifier("Lot number", 60, LABEL),
    "expiry": DateRange("Expiry", years_back=10, years_ahead=30),
    # custody, bags, scans
    "scanned_code": Identifier("Scanned code", 200, SCAN),
    "location": Text("Location", 100),
    "condition": Text("Condition", 200),
    # results and step screens
    "result": Text("Result", 200),
    "step_value": Text("Value", 8000, multiline=True),  # then parsed by the field's kind (mfg.domain.values)
    "review_key": Identifier("Review item", 80, SCAN),
    # searches (nothing stored; bounded and clean all the same)
    "search": Text("Search", 200),
    "record_type": Text("Record type", 60),
    "record_id": Text("Record id", 60),
    "since": DateRange("From", years_back=100, years_ahead=1),
    "until": DateRange("To", years_back=100, years_ahead=1),
    # the trial's cohort ledger (issue [3.7] item 4)
    "ctcae_term": Text("CTCAE term", 200),
    "onset_on": DateRange("Onset", years_back=2),
}
"""The rule of every input, by its name (the web forms' field names, or what the form maps them to)."""


def rule(name: str) -> Rule:
    """The rule named ``name``; a ``KeyError`` naming it when none is declared (a programming error)."""
    try:
        return RULES[name]
    except KeyError:
        raise KeyError(f"no input rule named {name!r}: declare it in mfg.domain.inputs.RULES") from None


def clean(name: str, value: str | date, *, today: date | None = None) -> object:
    """``value`` cleaned by the rule named ``name`` (text: normalised and trimmed; a number: its Decimal; a
    date: the date), or :class:`ValidationFailed` with the rule's message."""
    return rule(name).clean(value, today=today)  # type: ignore[arg-type]


def text(name: str, value: str | None) -> str:
    """:func:`clean` for a text or identifier rule (``None`` taken as empty)."""
    return cast(str, clean(name, value or ""))


def number(name: str, value: str) -> Decimal:
    """:func:`clean` for a number rule."""
    return cast(Decimal, clean(name, value))


def day(name: str, value: date, *, today: date) -> date:
    """:func:`clean` for a date rule, ``today`` being the day of entry."""
    return cast(date, clean(name, value, today=today))


def required(name: str, value: str | None, missing: str | None = None) -> str:
    """:func:`text`, refusing an empty value with ``missing`` (default: "<label> is required.")."""
    cleaned = text(name, value)
    if not cleaned:
        raise ValidationFailed(missing or f"{rule(name).label} is required.")
    return cleaned


def problems_of_day(name: str, value: date, *, today: date) -> list[str]:
    """The messages of the date rule ``name`` for ``value`` (empty when it is in range)."""
    try:
        day(name, value, today=today)
    except ValidationFailed as exc:
        return exc.problems
    return []


def problems(checks: dict[str, str | None]) -> list[str]:
    """The message of every input of ``checks`` (rule name: value) its rule refuses: every failure at once."""
    found = []
    for name, value in checks.items():
        try:
            clean(name, value or "")
        except ValidationFailed as exc:
            found.extend(exc.problems)
    return found
