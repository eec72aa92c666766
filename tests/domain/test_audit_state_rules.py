"""The state check's rules (mfg/domain/audit_state.py), without a database: entries folded in order, values
compared in the form the trail writes them, what cannot be compared left alone."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

from mfg.domain.audit_state import OLD_REDACTION, ExpectedState, StateReport, TableShape, redact
from mfg.domain.canonical import canonical_json

SHAPE = TableShape(numeric=frozenset({"number"}), redacted=frozenset({"secret"}), excluded=frozenset({"row_version"}),
                   datetimes=frozenset({"at"}), dates=frozenset({"day"}))
AT = datetime(2026, 12, 6, 15, 0, 1, 250, tzinfo=timezone.utc)


def _check(entries, rows, shape=SHAPE) -> StateReport:
    state = ExpectedState(["thing"])
    state.fold_all(entries)
    report = StateReport()
    state.compare("thing", *_columns(rows), shape, report)
    return report


def _columns(rows):
    """Rows given as dicts, as the check reads them: the columns, then (row id, values) in their order."""
    columns = sorted({column for _row_id, values in rows for column in values})
    return columns, [(row_id, tuple(values.get(column) for column in columns)) for row_id, values in rows]


def _create(row_id: str, **values) -> tuple[str, str, str, str]:
    return ("thing", row_id, "thing.create", canonical_json(values))


def _update(row_id: str, **values) -> tuple[str, str, str, str]:
    return ("thing", row_id, "thing.update", canonical_json(values))


def test_values_from_memory_and_from_the_database_compare_in_the_trails_form():
    created = _create("1", number=Decimal("12.50"), at=AT, day=date(2026, 1, 2), ok=True, note=None, n=3,
                      secret=redact("$argon2id$x"), row_version=1)
    row = {"number": Decimal("12.5000000000"), "at": AT, "day": date(2026, 1, 2), "ok": True, "note": None, "n": 3,
           "secret": "$argon2id$x", "row_version": 7}  # the optimistic-lock counter is not compared
    report = _check([created], [("1", row)])
    assert report.ok and report.rows_checked == 1 and report.lines() == []
    assert _check([_create("1", number=Decimal("0.000"))], [("1", {"number": Decimal("0E-10")})]).ok
    assert _check([_create("1", number=Decimal("100"))], [("1", {"number": Decimal("1E+2")})]).ok


def test_the_latest_entry_wins_and_each_column_is_named():
    entries = [_create("1", status="created", number=Decimal("1.0"), ok=True),
               _update("1", status="in_progress"), _update("1", status="released", ok=False),
               ("thing", "1", "thing.viewed", canonical_json({"status": "ignored"})),  # not a change of the row
               ("other", "1", "other.update", canonical_json({"status": "ignored"}))]
    report = _check(entries, [("1", {"status": "in_progress", "number": Decimal("1.5"), "ok": False})])
    assert sorted(report.lines()) == ['thing 1 number: trail says "1", row holds "1.5"',
                                      'thing 1 status: trail says "released", row holds "in_progress"']


def test_a_redacted_value_is_compared_by_its_digest_and_an_old_marker_is_not_checkable():
    report = _check([_create("1", secret=redact("old-hash"))], [("1", {"secret": "new-hash"})])
    assert report.lines() == [f'thing 1 secret: trail says "{redact("old-hash")}", row holds "{redact("new-hash")}"']
    assert "old-hash" not in report.lines()[0].replace(redact("old-hash"), "")
    older = _check([_create("1", secret=OLD_REDACTION)], [("1", {"secret": "anything"})])
    assert older.ok and older.not_checkable == [("thing", "1", "secret")]
    # until the next change records its digest
    later = _check([_create("1", secret=OLD_REDACTION), _update("1", secret=redact("h2"))], [("1", {"secret": "h3"})])
    assert not later.ok and not later.not_checkable


def test_rows_without_a_creation_entry_and_created_rows_that_are_gone():
    entries = [_create("1", a=1), _create("2", a=2), _create("10", a=10), _update("3", a=3)]
    report = _check(entries, [("1", {"a": 1}), ("3", {"a": 3}), ("4", {"a": 4})])
    assert report.unrecorded == [("thing", "3"), ("thing", "4")]  # an update alone does not create a row
    assert report.missing == [("thing", "2"), ("thing", "10")]
    assert report.lines()[-1] == "thing 10: row deleted outside the application (the trail created it; it is gone)"


def test_a_column_the_trail_never_recorded_is_not_compared():
    """An omitted column (a file's content, fingerprinted by its sha256 column) or one added by a later
    migration to rows created before it: the trail says nothing, so nothing is compared."""
    report = _check([_create("1", a=1)], [("1", {"a": 1, "content": b"...", "added_later": "x"})])
    assert report.ok
