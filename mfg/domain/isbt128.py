"""ISBT 128 identifiers (ICCBBA ST-001) for NK-cell products: build, print and parse them.

The specification is DOMAIN.md sections 6 and 7. This module only checks *syntax* and check
characters; whether an identifier belongs to the subject, the bag or the batch is the job of the
scan-to-match services. Every malformed input is refused with
:class:`~mfg.domain.errors.ValidationFailed` and a message that says what is wrong and where.

Licence: using ISBT 128 on real products needs an ICCBBA licence and a Facility Identification
Number (FIN) assigned by ICCBBA. :data:`DEMO_FIN` is for demonstrations and tests only.

Data structures and the choices made here
-----------------------------------------

**Donation Identification Number, DIN (data structure 001).** Barcode data ``=appppyynnnnnnff``:

* ``appppyynnnnnn`` (13 characters) is the DIN: the FIN ``apppp``, the 2-digit year ``yy`` and the
  6-digit sequence number ``nnnnnn``. The FIN's first character is a letter A-N or P-Z (no letter O,
  which reads as zero) or a digit 1-9 (no 0); its other four characters are digits 0-9 (ST-001).
  The sequence may be any 6 digits, 000000 included.
* ``ff`` are two flag digits. Accepted (:func:`flag_meaning`): ``00`` not used; ``01``-``04`` and
  ``15``-``19`` container in a set; ``06`` pilot tube; ``07`` test tube; ``08`` donor record; ``20``-``59``
  local use; ``60``-``96`` = 60 + the DIN's check value (and it must be *that* value). Other values
  (``05``, ``09``-``14``, ``97``-``99``) are not in DOMAIN.md's table and are refused.
* Printed eye-readable as ``A9999 26 123456`` (FIN, space, year, space, sequence:
  :meth:`Din.eye_readable`); on the label the flags are printed rotated next to it and the keyboard
  check character boxed after it. The check character is never part of the barcode.
* Keyboard entry (:func:`parse_din_keyboard`) is the 13 DIN characters followed by the check
  character, 14 characters; spaces are ignored and letters are taken as upper case (a DIN has no
  lower-case letters, so nothing changes meaning). Barcode data (:func:`parse_din_barcode`) is taken as
  scanned: only surrounding white space (a scanner's CR/LF suffix) is removed.

**Keyboard check character, ISO/IEC 7064 MOD 37-2** (:func:`mod37_2`). Character values 0-9 -> 0-9,
A-Z -> 10-35, ``*`` -> 36. The character ``n`` places from the right end (n = 1 for the last) is
weighted ``2**n``; ``S`` is the sum of value x weight; the check value is ``(38 - S mod 37) mod 37``,
printed as the character with that value. Because 37 is prime and no weight is a multiple of 37, every
single substitution and every transposition of two adjacent characters changes the check character.

**Product code (data structure 003).** Barcode data ``=<aoooot ds`` (without spaces), 8 characters
after ``=<``:

* ``aoooo``, the product description code (:attr:`ProductCode.description`): ``S`` for cellular
  therapy, then 4 characters A-Z or 0-9. ICCBBA's database assigns ``S`` + 4 digits; letters are
  accepted so a site can configure local codes. Which codes a site may use is configuration, not
  syntax, and is not checked here.
* ``t``, the type of donation: one of :data:`DONATION_TYPES` (ST-001's table, upper and lower case
  are different codes).
* ``ds``, the division: ``00`` undivided; otherwise a first-level division ``A``-``Z`` followed by
  ``0``, or by a second-level division ``a``-``z`` (ST-001). :func:`division_code` numbers the bags of
  a product divided once: bag 1 -> ``A0``, bag 2 -> ``B0`` ... bag 26 -> ``Z0``; there is no bag 27.
  A product filled into one bag is not divided: :func:`division_codes` gives it ``00``.

**Date-times: expiration (data structure 005, ``&>``) and collection (``&*``).** 10 digits
``cyyjjjhhmm`` after the prefix: ``cyy`` the last three digits of the year (``c`` is the century digit:
``0`` for 2000-2099, so 2026 -> ``026``; years 2000-2999 only), ``jjj`` the day of the year 001-366
(366 only in leap years), ``hhmm`` the time on the 24-hour clock **in the local time of the site
whose label it is**. ISBT 128 defines no time zone in the data structure: a hospital's scanner and its
staff read ``cyyjjjhhmm`` as their local time, so a UTC expiry (as this module once wrote) is read hours
late or early wherever the site is not on UTC. :func:`encode_datetime` takes an aware datetime and the
site's zone (``tz``, UTC by default), converts it to that zone and drops seconds (rounding down: an
expiry never moves later); :func:`parse_datetime` reads the digits back in the same zone. The label
prints the zone beside the eye-readable time, since the data cannot carry it. ST-001's "2359 when there
is no time" parses as 23:59 local, because the data cannot tell the two apart.

**Chain of Identity Identifier, COI (data structure 040).** Barcode data ``&/`` + ``CH`` + FIN +
2-digit year + 6-digit sequence (15 characters, :attr:`CoiId.text`). Its keyboard check character is
MOD 37-2 over **all 15 characters after** ``&/``, ``CH`` included (so it differs from the check
character of a DIN with the same FIN, year and sequence). Keyboard entry is those 15 characters plus
the check character; eye-readable ``CH A9999 26 123456``. The COI identifier is the same across every
collection of one therapy event and never replaces the DIN: a bag carries both.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import ClassVar

from .errors import ValidationFailed

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
"""The MOD 37-2 characters in value order: the character for value v is ``ALPHABET[v]``."""
_VALUE = {c: v for v, c in enumerate(ALPHABET)}

DIGITS = "0123456789"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LOWER = UPPER.lower()
FIN_FIRST_CHARACTERS = "ABCDEFGHIJKLMNPQRSTUVWXYZ123456789"
"""Allowed first character of a FIN: A-N, P-Z, 1-9."""
FIN_OTHER_CHARACTERS = DIGITS
"""Allowed second to fifth characters of a FIN."""

DEMO_FIN = "X9999"
"""A demonstration FIN: syntactically valid, not assigned to this project by ICCBBA. Real products
need an ICCBBA licence and the site's own assigned FIN; labels printed with this FIN must say DEMO."""

DIN_PREFIX = "="
PRODUCT_CODE_PREFIX = "=<"
EXPIRATION_PREFIX = "&>"
COLLECTION_PREFIX = "&*"
COI_PREFIX = "&/"
COI_LETTERS = "CH"
DATETIME_PREFIXES = {EXPIRATION_PREFIX: "expiration date-time", COLLECTION_PREFIX: "collection date-time"}

DONATION_TYPES = {
    "0": "not specified",
    "V": "volunteer allogeneic donor",
    "R": "volunteer research donor",
    "S": "volunteer source donor",
    "T": "volunteer therapeutic collection",
    "P": "paid allogeneic donor",
    "r": "paid research donor",
    "s": "paid source donor",
    "A": "autologous, eligible for crossover",
    "1": "for autologous use only",
    "X": "for autologous use only, biohazardous",
    "D": "volunteer directed, eligible for crossover",
    "d": "paid directed, eligible for crossover",
    "2": "for directed recipient use only",
    "L": "for directed recipient use only, limited exposure",
    "E": "for directed recipient use only, medical exception",
    "3": "for directed recipient use only, biohazardous",
    "F": "designated family donor",
}
"""Type of donation (6th character of the product code): the ST-001 codes this system accepts."""

UNDIVIDED = "00"
MAX_DIVISIONS = len(UPPER)
"""First-level divisions ``A0``..``Z0``: a product divided once gives at most 26 bags."""

_CHECK_FLAG_BASE = 60


# --- MOD 37-2 ------------------------------------------------------------------------------------------


def _check_value(chars: str) -> int:
    total: int = sum(_VALUE[c] * 2 ** n for n, c in enumerate(reversed(chars), start=1))
    return (38 - total % 37) % 37


def mod37_2(chars: str) -> str:
    """The ISO/IEC 7064 MOD 37-2 check character of ``chars`` (characters 0-9, A-Z and ``*``)."""
    if not isinstance(chars, str) or not chars:
        raise ValidationFailed("MOD 37-2 needs at least one character to check.")
    problems = [f"character {i} is {c!r}: MOD 37-2 only uses 0-9, A-Z (upper case) and *"
                for i, c in enumerate(chars, start=1) if c not in _VALUE]
    if problems:
        raise ValidationFailed(*problems)
    return ALPHABET[_check_value(chars)]


# --- FIN, year, sequence ---------------------------------------------------------------------------------


def fin_problems(fin: object) -> list[str]:
    if not isinstance(fin, str):
        return [f"FIN must be text, got {type(fin).__name__}"]
    if len(fin) != 5:
        return [f"FIN must be 5 characters, got {len(fin)}: {fin!r}"]
    problems = []
    first = fin[0]
    if first not in FIN_FIRST_CHARACTERS:
        if first == "O":
            why = "the letter O is not used (it reads as zero)"
        elif first == "0":
            why = "a FIN cannot start with the digit 0"
        elif first.islower():
            why = "lower-case letters are not used"
        else:
            why = "it is not a letter or a digit"
        problems.append(f"FIN character 1 is {first!r}: it must be a letter A-N or P-Z or a digit 1-9 ({why})")
    for position, c in enumerate(fin[1:], start=2):
        if c not in FIN_OTHER_CHARACTERS:
            problems.append(f"FIN character {position} is {c!r}: FIN characters 2-5 must be digits 0-9")
    return problems


def _number_problems(name: str, value: object, digits: int) -> list[str]:
    if not isinstance(value, int) or isinstance(value, bool):
        return [f"{name} must be a whole number, got {type(value).__name__}"]
    if not 0 <= value < 10 ** digits:
        return [f"{name} must be 0-{10 ** digits - 1} ({digits} digits), got {value}"]
    return []


def _identity_problems(what: str, fin: object, year: object, sequence: object) -> list[str]:
    return (fin_problems(fin)
            + _number_problems(f"{what} year (last 2 digits of the year)", year, 2)
            + _number_problems(f"{what} sequence number", sequence, 6))


def _split_identity(what: str, text: str) -> tuple[str, int, int]:
    """FIN, year and sequence from 13 characters ``appppyynnnnnn``; every problem is reported."""
    fin, year, sequence = text[:5], text[5:7], text[7:13]
    problems = fin_problems(fin)
    if not _all_digits(year):
        problems.append(f"{what} year (the 2 characters after the FIN) must be 2 digits, got {year!r}")
    if not _all_digits(sequence):
        problems.append(f"{what} sequence number (the last 6 characters) must be 6 digits, got {sequence!r}")
    if problems:
        raise ValidationFailed(*problems)
    return fin, int(year), int(sequence)


def _looks_like_identity(text: str) -> bool:
    """13 characters that are a syntactically valid FIN, year and sequence (so only a check is missing)."""
    return len(text) == 13 and not fin_problems(text[:5]) and _all_digits(text[5:])


def _all_digits(text: str) -> bool:
    return bool(text) and all(c in DIGITS for c in text)


def _without_spaces(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise ValidationFailed(f"{what} must be text, got {type(text).__name__}")
    return text.replace(" ", "").strip().upper()


def _scanned(data: object, what: str) -> str:
    if not isinstance(data, str):
        raise ValidationFailed(f"{what} must be text, got {type(data).__name__}")
    data = data.strip()
    if not data:
        raise ValidationFailed(f"{what} is empty.")
    return data


def _check_entered(what: str, shown: str, expected: str, got: str) -> None:
    if got not in _VALUE:
        raise ValidationFailed(f"{what} check character {got!r} is not valid: check characters are 0-9, A-Z or *")
    if got != expected:
        # The expected character is deliberately not shown: an operator could copy it from the screen
        # and so defeat the check that the identifier was read correctly from the label.
        raise ValidationFailed(
            f"{what} check character {got!r} does not match {shown} as typed: the identifier or its check "
            "character was misread. Re-read both from the label.")


# --- DIN -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Identity:
    """FIN, 2-digit year and 6-digit sequence, validated on creation: the body of a DIN and of a COI id."""

    fin: str
    year: int
    sequence: int

    _what: ClassVar[str] = ""
    _letters: ClassVar[str] = ""  # characters before the FIN ("CH" for a COI identifier)

    def __post_init__(self) -> None:
        problems = _identity_problems(self._what, self.fin, self.year, self.sequence)
        if problems:
            raise ValidationFailed(*problems)

    @property
    def text(self) -> str:
        """The identifier's characters: [letters] + FIN + yy + nnnnnn."""
        return f"{self._letters}{self.fin}{self.year:02d}{self.sequence:06d}"

    @property
    def check(self) -> str:
        """The keyboard check character: MOD 37-2 over all of :attr:`text`."""
        return mod37_2(self.text)

    @property
    def keyboard(self) -> str:
        """What an operator types: the identifier and its check character."""
        return self.text + self.check


@dataclass(frozen=True)
class Din(_Identity):
    """A Donation Identification Number: FIN, 2-digit year, 6-digit sequence (13 characters)."""

    _what: ClassVar[str] = "DIN"

    def flag_check(self) -> str:
        """The flag pair that carries the check value: ``60`` + value (``60``-``96``)."""
        return f"{_CHECK_FLAG_BASE + _VALUE[self.check]:02d}"

    def barcode(self, flags: str = "00") -> str:
        """Barcode data ``=`` + DIN + flags; the flags are validated like scanned ones."""
        _validate_flags(self, flags)
        return DIN_PREFIX + self.text + flags

    def eye_readable(self) -> str:
        """The DIN as printed under the barcode: ``A9999 26 123456`` (flags and check printed apart)."""
        return f"{self.fin} {self.year:02d} {self.sequence:06d}"


def make_din(fin: str, year: int, sequence: int) -> Din:
    """A validated :class:`Din` (FIN syntax, year 0-99, sequence 0-999999)."""
    return Din(fin, year, sequence)


def din_from_text(text: str) -> Din:
    """The :class:`Din` of 13 DIN characters without check character, e.g. a stored DIN (spaces ignored,
    letters taken as upper case)."""
    text = _without_spaces(text, "DIN")
    if len(text) != 13:
        raise ValidationFailed(f"DIN must be 13 characters (FIN 5, year 2, sequence 6), got {len(text)}: {text!r}")
    return Din(*_split_identity("DIN", text))


def check_character(din: str) -> str:
    """The MOD 37-2 keyboard check character of a 13-character DIN (read as :func:`din_from_text`)."""
    return din_from_text(din).check


def flag_meaning(flags: str) -> str:
    """What a DIN flag pair means; refuses pairs outside DOMAIN.md's table (check flags are not
    compared with a DIN here: :meth:`Din.barcode` and :func:`parse_din_barcode` do that)."""
    if not isinstance(flags, str) or len(flags) != 2 or not _all_digits(flags):
        raise ValidationFailed(f"DIN flags must be 2 digits, got {flags!r}")
    n = int(flags)
    if n == 0:
        return "flag not used"
    if 1 <= n <= 4 or 15 <= n <= 19:
        return "container in a set"
    if n == 6:
        return "pilot tube"
    if n == 7:
        return "test tube"
    if n == 8:
        return "donor record"
    if 20 <= n <= 59:
        return "local use"
    if 60 <= n <= 96:
        return f"check value {n - _CHECK_FLAG_BASE} (check character {ALPHABET[n - _CHECK_FLAG_BASE]!r})"
    raise ValidationFailed(
        f"DIN flags {flags!r} are not defined here: use 00, 01-04, 06, 07, 08, 15-19, 20-59 or 60-96")


def _validate_flags(din: Din, flags: str) -> None:
    flag_meaning(flags)
    n = int(flags)
    if 60 <= n <= 96 and flags != din.flag_check():
        given = n - _CHECK_FLAG_BASE
        raise ValidationFailed(
            f"DIN flags {flags!r} give check value {given} ({ALPHABET[given]!r}), but DIN {din.eye_readable()} "
            f"has check value {_VALUE[din.check]} ({din.check!r}): expected flags {din.flag_check()!r}")


def parse_din_barcode(data: str) -> tuple[Din, str]:
    """Scanned DIN barcode data ``=`` + 13 DIN characters + 2 flags -> (DIN, flags)."""
    data = _scanned(data, "DIN barcode data")
    if not data.startswith(DIN_PREFIX):
        raise ValidationFailed(f"DIN barcode data must start with '=', got {data[:1]!r} (data {data!r})")
    if data.startswith(PRODUCT_CODE_PREFIX):
        raise ValidationFailed("This is a product code ('=<', data structure 003), not a DIN.")
    if len(data) > 1 and not (data[1].isascii() and data[1].isalnum()):
        raise ValidationFailed(
            f"{data[:2]!r} identifies another ISBT 128 data structure, not a DIN: after '=' a DIN starts with its FIN")
    if len(data) != 16:
        raise ValidationFailed(
            f"DIN barcode data must be 16 characters ('=', 13 DIN characters, 2 flags), got {len(data)}: {data!r}")
    din = Din(*_split_identity("DIN", data[1:14]))
    flags = data[14:]
    _validate_flags(din, flags)
    return din, flags


def parse_din_keyboard(text: str) -> Din:
    """Keyboard entry: 13 DIN characters then the check character (spaces ignored), check verified."""
    text = _without_spaces(text, "DIN entry")
    if text.startswith(DIN_PREFIX):
        raise ValidationFailed("This looks like barcode data ('='): type the DIN and its boxed check character.")
    if len(text) == 13 and _looks_like_identity(text):
        raise ValidationFailed(
            "The DIN check character is missing: type the 13 DIN characters and then the boxed check character.")
    if len(text) != 14:
        raise ValidationFailed(
            f"DIN entry must be 14 characters (13 DIN characters and the check character), got {len(text)}: {text!r}")
    din = Din(*_split_identity("DIN", text[:13]))
    _check_entered("DIN", f"DIN {din.eye_readable()}", din.check, text[13])
    return din


# --- product code ----------------------------------------------------------------------------------------


def division_code(n: int) -> str:
    """Division code of the n-th bag (from 1) of a product divided once: ``A0``, ``B0`` ... ``Z0``."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise ValidationFailed(f"Bag number must be a whole number, got {type(n).__name__}")
    if not 1 <= n <= MAX_DIVISIONS:
        raise ValidationFailed(
            f"Bag number must be 1-{MAX_DIVISIONS}: divisions are A0-Z0, so a product divides into at most "
            f"{MAX_DIVISIONS} bags; got {n}")
    return UPPER[n - 1] + "0"


def division_codes(count: int) -> list[str]:
    """The division codes of a product filled into ``count`` bags: one bag is the undivided product
    (``00``, ST-001: a division code says the product was divided; a validator reading ``A0`` looks for
    the other divisions), several bags are ``A0``, ``B0`` ... (:func:`division_code`)."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValidationFailed(f"A product is filled into at least one bag, got {count!r}")
    return [UNDIVIDED] if count == 1 else [division_code(n) for n in range(1, count + 1)]


def _division_problems(division: object) -> list[str]:
    if not isinstance(division, str) or len(division) != 2:
        return [f"Division must be 2 characters ('00' undivided, 'A0'-'Z0', or 'Aa'-'Zz'), got {division!r}"]
    if division == UNDIVIDED:
        return []
    first, second = division[0], division[1]
    problems = []
    if first not in UPPER:
        problems.append(f"Division character 1 is {first!r}: it must be an upper-case letter A-Z (or '00' undivided)")
    if second != "0" and second not in LOWER:
        problems.append(f"Division character 2 is {second!r}: it must be 0 or a lower-case letter a-z")
    return problems


@dataclass(frozen=True)
class ProductCode:
    """An ISBT 128 product code: description code (``S`` + 4), type of donation, division."""

    description: str
    donation_type: str
    division: str = UNDIVIDED

    def __post_init__(self) -> None:
        problems = []
        d = self.description
        if not isinstance(d, str) or len(d) != 5:
            problems.append(f"Product description code must be 5 characters ('S' and 4 more), got {d!r}")
        else:
            if d[0] != "S":
                problems.append(f"Product description code must start with 'S' (cellular therapy), got {d[0]!r}")
            problems += [f"Product description code character {i} is {c!r}: it must be A-Z or 0-9"
                         for i, c in enumerate(d[1:], start=2) if c not in UPPER and c not in DIGITS]
        if self.donation_type not in DONATION_TYPES:
            problems.append(f"Type of donation {self.donation_type!r} is not known: use one of "
                            + ", ".join(DONATION_TYPES))
        problems += _division_problems(self.division)
        if problems:
            raise ValidationFailed(*problems)

    @property
    def divided(self) -> bool:
        return self.division != UNDIVIDED

    def barcode(self) -> str:
        """Barcode data ``=<`` + description + type of donation + division."""
        return PRODUCT_CODE_PREFIX + self.description + self.donation_type + self.division


def parse_product_code(data: str) -> ProductCode:
    """Scanned product code data ``=<aoooot ds`` (10 characters) -> :class:`ProductCode`."""
    data = _scanned(data, "Product code data")
    if not data.startswith(PRODUCT_CODE_PREFIX):
        raise ValidationFailed(f"Product code data must start with '=<', got {data[:2]!r}")
    if len(data) != 10:
        raise ValidationFailed(
            f"Product code data must be 10 characters ('=<', 5 description, 1 donation type, 2 division), "
            f"got {len(data)}: {data!r}")
    return ProductCode(data[2:7], data[7], data[8:10])


# --- date-times ------------------------------------------------------------------------------------------


def encode_datetime(prefix: str, moment: datetime, tz: tzinfo = timezone.utc) -> str:
    """``&>`` (expiration) or ``&*`` (collection) + ``cyyjjjhhmm`` in the site's zone ``tz`` (ISBT 128
    date-times are read as local time; see the module docstring), seconds dropped."""
    if prefix not in DATETIME_PREFIXES:
        raise ValidationFailed(f"Date-time prefix must be '&>' (expiration) or '&*' (collection), got {prefix!r}")
    if not isinstance(moment, datetime):
        raise ValidationFailed(f"A date-time is needed, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValidationFailed("The date-time has no time zone: it cannot be converted to the site's time.")
    local = moment.astimezone(tz)
    if not 2000 <= local.year <= 2999:
        raise ValidationFailed(f"ISBT 128 date-times cover the years 2000-2999, got {local.year}")
    day = local.timetuple().tm_yday
    return f"{prefix}{local.year - 2000:03d}{day:03d}{local.hour:02d}{local.minute:02d}"


def parse_datetime(data: str, tz: tzinfo = timezone.utc) -> tuple[str, datetime]:
    """``&>`` or ``&*`` + ``cyyjjjhhmm``, read in the site's zone ``tz`` -> (prefix, aware UTC datetime)."""
    data = _scanned(data, "Date-time data")
    prefix, body = data[:2], data[2:]
    if prefix not in DATETIME_PREFIXES:
        raise ValidationFailed(
            f"Date-time data must start with '&>' (expiration) or '&*' (collection), got {prefix!r}")
    what = DATETIME_PREFIXES[prefix].capitalize()
    if len(body) != 10:
        raise ValidationFailed(f"{what} must be 10 digits after {prefix!r} (cyyjjjhhmm), got {len(body)}: {body!r}")
    if not _all_digits(body):
        raise ValidationFailed(f"{what} must be 10 digits after {prefix!r} (cyyjjjhhmm), got {body!r}")
    year, day, hour, minute = 2000 + int(body[:3]), int(body[3:6]), int(body[6:8]), int(body[8:10])
    problems = []
    days_in_year = 366 if calendar.isleap(year) else 365
    if not 1 <= day <= days_in_year:
        problems.append(f"{what}: day of year {body[3:6]} does not exist in {year} (001-{days_in_year})")
    if hour > 23:
        problems.append(f"{what}: hour {body[6:8]} must be 00-23")
    if minute > 59:
        problems.append(f"{what}: minute {body[8:10]} must be 00-59")
    if problems:
        raise ValidationFailed(*problems)
    wall = datetime(year, 1, 1, hour, minute) + timedelta(days=day - 1)
    return prefix, wall.replace(tzinfo=tz).astimezone(timezone.utc)


# --- chain of identity -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoiId(_Identity):
    """A Chain of Identity Identifier: ``CH`` + FIN + 2-digit year + 6-digit sequence; its check
    character covers all 15 characters after ``&/``, ``CH`` included."""

    _what: ClassVar[str] = "COI"
    _letters: ClassVar[str] = COI_LETTERS

    def barcode(self) -> str:
        return COI_PREFIX + self.text

    def eye_readable(self) -> str:
        """``CH A9999 26 123456`` (the check character is printed boxed after it)."""
        return f"{COI_LETTERS} {self.fin} {self.year:02d} {self.sequence:06d}"


def parse_coi(data: str) -> CoiId:
    """Barcode data ``&/`` + 15 characters, or keyboard entry of the 15 characters and the check
    character (spaces ignored, letters taken as upper case; check verified)."""
    if isinstance(data, str) and data.strip().startswith(COI_PREFIX):
        body = _scanned(data, "COI barcode data")[2:]
        if len(body) != 15:
            raise ValidationFailed(
                f"COI barcode data must be '&/' and 15 characters (CH, FIN 5, year 2, sequence 6), "
                f"got {len(body)} after '&/': {body!r}")
        entered = None
    else:
        text = _without_spaces(data, "COI entry")
        if len(text) == 15 and text.startswith(COI_LETTERS) and _looks_like_identity(text[2:]):
            raise ValidationFailed(
                "The COI check character is missing: type the 15 identifier characters and then the boxed "
                "check character.")
        if len(text) != 16:
            raise ValidationFailed(
                f"COI entry must be 16 characters (CH, FIN 5, year 2, sequence 6, check character), "
                f"got {len(text)}: {text!r}")
        body, entered = text[:15], text[15]
    if not body.startswith(COI_LETTERS):
        raise ValidationFailed(f"COI identifier must start with 'CH', got {body[:2]!r}")
    coi = CoiId(*_split_identity("COI", body[2:]))
    if entered is not None:
        _check_entered("COI", f"COI {coi.eye_readable()}", coi.check, entered)
    return coi
