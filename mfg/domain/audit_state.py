"""The current state matches the trail (issue [3.5] item 3): pure code, no database.

The audit trail records every change of a GMP record: a ``<table>.create`` entry whose ``after`` holds every
column's value at creation, and a ``<table>.update`` entry whose ``after`` holds the columns that changed. Folding
a table's entries in sequence order gives what each row must hold now; a row that holds anything else was
changed outside the application (a plain UPDATE, the guards dropped first), and the check names its table, row
and column. A row without a creation entry was inserted outside the application; a creation entry whose row is
gone was deleted outside it (the application never deletes an audited record).

Values are compared in the form the trail writes them (``canonical.canonical_json``): datetimes as ISO UTC with
microseconds, dates as ISO dates, booleans, integers, text and None as themselves; numbers (``Numeric`` columns)
through ``number_text`` on both sides, since the trail holds the value as it was in memory (``Decimal("12.50")``)
and the database gives it back at the column's scale (``Decimal("12.5000000000")``).

What the trail cannot vouch for is not compared, and never reported as a mismatch:

* a column whose value the trail never recorded: a column left out of creation entries because another column
  fingerprints it (``Audited.__audit_omit__``: stored file or text contents, checked through their sha256
  column), or a column added by a later migration to rows created before it, until the row's next change;
* a redacted column (the password hash) whose latest entry was written before redaction by digest, as
  ``"[redacted]"``: it is *not checkable* until a later entry carries its digest (``redact``), and is counted as
  such. Entries written since carry ``"sha256:<hex>"``, the sha256 of the value's canonical JSON: it reveals
  nothing useful (the value is itself a salted password hash) and lets the check compare.

Time and memory: one pass over the trail's create and update entries (one ``json.loads`` each) and one over the
audited rows, so O(entries + rows) time, and memory for the after-texts of every row's entries. Measured by
``bench/audit_state.py`` on SQLite (2026-12-06, 2 shared CPUs at load average 8): a trail of 1,000,000 entries
(600,000 creations and 300,000 updates of 600,000 rows, 100,000 events) checked in 17.4 s, as long as the chain
walk of the same run (17.9 s); the raw driver reads the same entries and rows in 3.3 s. PostgreSQL, same machine:
16.1 s (chain walk 15.6 s, raw read 3.0 s). Bound: about 17 s per
million entries on that machine, linear (README, "The current state matches the trail").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from json.scanner import make_scanner
from typing import Any, cast

from .canonical import canonical_json, iso_utc, sha256_hex

_scan = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # (typeshed) — the C scanner json.loads ends in, without the checks around it


def _decode(text: str) -> Any:
    """``json.loads(text)`` for the texts the trail writes (canonical JSON: nothing before or after the value),
    at a third of its cost; anything else through ``json.loads`` itself."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)  # raises json.loads's own error
    return value if end == len(text) else json.loads(text)


OLD_REDACTION = "[redacted]"  # what entries written before digests hold in place of a redacted value
DIGEST_PREFIX = "sha256:"


def redact(value: Any) -> str:
    """What the trail records in place of a redacted value (a password hash): its digest, which the state check
    compares with the digest of what the row holds."""
    return DIGEST_PREFIX + sha256_hex(canonical_json(value))


def number_text(number: Decimal | None) -> str | None:
    """A number as the check compares it: the same text whether it was ``Decimal("12.50")`` in memory or
    ``Decimal("12.5000000000")`` from the database (``models.base.number_text`` uses this)."""
    if number is None:
        return None
    if number == 0:
        return "0"
    return format(number.normalize(), "f")


def _trail_number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return number_text(Decimal(value))
        except InvalidOperation:
            return value
    if isinstance(value, int) and not isinstance(value, bool):
        return number_text(Decimal(value))
    return value


def row_value(value: Any, *, numeric: bool = False) -> Any:
    """A value read from the database in the form the trail writes it."""
    if value is None or isinstance(value, (bool, int, str)) and not numeric:
        return value
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal) or numeric:
        return number_text(value if isinstance(value, Decimal) else Decimal(str(value)))
    return json.loads(canonical_json(value))


@dataclass(frozen=True)
class TableShape:
    """What the check needs to know of an audited table: its numeric and its redacted columns, and the columns it
    leaves out (``excluded``: never GMP data, each with its reason where the service names them)."""

    numeric: frozenset[str] = frozenset()
    redacted: frozenset[str] = frozenset()
    excluded: frozenset[str] = frozenset()
    datetimes: frozenset[str] = frozenset()
    dates: frozenset[str] = frozenset()

    def converters(self) -> dict[str, Callable[[Any], Any]]:
        """How to put a column's value in the trail's form, for the columns whose values are not already in it."""
        found: dict[str, Callable[[Any], Any]] = {}
        found.update((column, _iso_utc_or_none) for column in self.datetimes)
        found.update((column, _iso_date_or_none) for column in self.dates)
        found.update((column, _number_or_none) for column in self.numeric)
        found.update((column, redact) for column in self.redacted)
        return found


def _iso_utc_or_none(value: datetime | None) -> str | None:
    return None if value is None else iso_utc(value)


def _iso_date_or_none(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _number_or_none(value: Any) -> Any:
    return row_value(value, numeric=True)


@dataclass(frozen=True)
class Mismatch:
    table: str
    row_id: str
    column: str
    trail: Any  # what the trail says, in canonical form (a digest for a redacted column)
    row: Any  # what the row holds, in the same form

    def describe(self) -> str:
        return (f"{self.table} {self.row_id} {self.column}: trail says {_shown(self.trail)}, "
                f"row holds {_shown(self.row)}")


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass
class StateReport:
    rows_checked: int = 0
    entries_read: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    unrecorded: list[tuple[str, str]] = field(default_factory=list)  # (table, row id): no creation entry
    missing: list[tuple[str, str]] = field(default_factory=list)  # (table, row id): created, row gone
    not_checkable: list[tuple[str, str, str]] = field(default_factory=list)  # (table, row id, column)

    @property
    def ok(self) -> bool:
        return not (self.mismatches or self.unrecorded or self.missing)

    def lines(self) -> list[str]:
        """One line per finding, in the order the CLI prints them."""
        return ([m.describe() for m in self.mismatches]
                + [f"{table} {row_id}: row inserted outside the application (no {table}.create entry)"
                   for table, row_id in self.unrecorded]
                + [f"{table} {row_id}: row deleted outside the application (the trail created it; it is gone)"
                   for table, row_id in self.missing])


class ExpectedState:
    """The trail's create and update entries folded, in sequence order, into what each row must hold.

    Each row keeps the ``after`` texts of its entries as they are (its creation, then its updates), decoded only
    when the row is compared: a JSON text takes a third of the memory of the dictionary it decodes to."""

    def __init__(self, tables: Iterable[str]) -> None:
        self._rows: dict[str, dict[str, str | list[str]]] = {table: {} for table in tables}
        self._created: dict[str, set[str]] = {table: set() for table in self._rows}
        # action -> (table, the table's entries by row, its created ids; None for an update)
        self._actions: dict[str, tuple[str, dict[str, str | list[str]], set[str] | None]] = {}
        for table, rows in self._rows.items():
            self._actions[f"{table}.create"] = (table, rows, self._created[table])
            self._actions[f"{table}.update"] = (table, rows, None)
        self.entries = 0

    def fold_all(self, entries: Iterable[Sequence[Any]]) -> None:
        """Take the entries ``(entity_type, entity_id, action, after)``, in sequence order; entries of other
        tables and other actions are ignored. A creation holds the row's every column, an update the ones it
        changed: each row keeps its creation's and then its updates' texts."""
        actions = self._actions
        folded = 0
        for entity_type, entity_id, action, after in entries:
            found = actions.get(action)
            if found is None or entity_id is None or found[0] != entity_type:
                continue
            _table, rows, created = found
            folded += 1
            after = after or "{}"
            if created is not None:
                rows[entity_id] = after
                created.add(entity_id)
                continue
            known = rows.get(entity_id)
            if known is None:
                rows[entity_id] = [after]
            elif isinstance(known, str):
                rows[entity_id] = [known, after]
            else:
                known.append(after)
        self.entries += folded

    def expected(self, table: str, row_id: str) -> dict[str, Any]:
        """What the trail says row ``row_id`` of ``table`` holds (the columns it recorded)."""
        stored = self._rows[table][row_id]
        if type(stored) is str:
            return cast(dict[str, Any], _decode(stored))
        values: dict[str, Any] = {}
        for after in stored:
            values.update(_decode(after))
        return values

    def compare(self, table: str, columns: Sequence[str], rows: Iterable[tuple[str, Sequence[Any]]],
                shape: TableShape, report: StateReport) -> None:
        """Compare the current ``rows`` of ``table`` (row id, the values of ``columns``) with the trail, into
        ``report``. ``shape`` says how to put each column's value in the trail's form.

        Each row is first put in the trail's form as a whole and compared as a whole (the trail's columns a
        subset of the row's, by equality: one C-level comparison); only a row that differs is looked at column by
        column (:meth:`_differences`), which names each difference and applies the finer rules."""
        expected = self.expected
        created = self._created[table]
        index = {column: i for i, column in enumerate(columns) if column not in shape.excluded}
        convert = [(column, to_trail) for column, to_trail in shape.converters().items() if column in index]
        numeric = [column for column in shape.numeric if column in index]
        excluded = list(shape.excluded)
        keys = list(index)
        picks = [index[column] for column in keys]
        seen: set[str] = set()
        for row_id, values in rows:
            seen.add(row_id)
            if row_id not in created:
                report.unrecorded.append((table, row_id))
                continue
            said = expected(table, row_id)
            held = dict(zip(keys, [values[i] for i in picks], strict=True))
            for column, to_trail in convert:
                held[column] = to_trail(held[column])
            for column in numeric:
                if column in said:
                    said[column] = _trail_number(said[column])
            for column in excluded:
                said.pop(column, None)
            if said.items() <= held.items():
                continue
            self._differences(table, row_id, said, values, index, shape, report)
        report.rows_checked += len(seen)
        report.missing.extend((table, row_id) for row_id in sorted(created - seen, key=_id_order))

    @staticmethod
    def _differences(table: str, row_id: str, said: dict[str, Any], values: Sequence[Any], index: dict[str, int],
                     shape: TableShape, report: StateReport) -> None:
        """One row, column by column: every column the trail recorded (numbers already in the trail's form) against
        what the row holds, into ``report``."""
        convert = shape.converters()
        plain = (str, int, bool, type(None))
        for column, value in said.items():
            i = index.get(column)
            if i is None:
                continue  # left out on purpose, or a column the table no longer has
            held = values[i]
            to_trail = convert.get(column)
            if to_trail is None:
                if held == value and type(held) is type(value):
                    continue
                if not isinstance(held, plain):  # a type the shape did not foresee: the generic form
                    held = row_value(held)
                    if held == value:
                        continue
            elif column in shape.redacted:
                if value == OLD_REDACTION:
                    report.not_checkable.append((table, row_id, column))
                    continue
                held = to_trail(held)
                if held == value:
                    continue
            else:
                held = to_trail(held)
                if held == value:
                    continue
            report.mismatches.append(Mismatch(table, row_id, column, value, held))


def _id_order(row_id: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in row_id.split(","))
