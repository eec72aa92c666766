"""Does every audited row still hold what the trail says? (issue [3.5] item 3; the rules: ``domain.audit_state``)

One ordered pass over the trail's create and update entries (four columns, Core rows, ``yield_per``), then one
Core select of every ``Audited`` table (every column but the omitted ones, ``__audit_omit__``), compared with
the entries folded. Every audited model is found through the declarative registry, so a new one is covered
without being listed here.

Every write to an audited table goes through the ORM flush, whose listener audits it
(``services.audit._audit_flush``), with two exceptions that change nothing and so need no entry: the no-op
UPDATEs that take a row lock (``rows.lock``: ``id = id``; ``document_jobs._lock``:
``status = status``). Other Core writes touch tables that are not audited (``counter``, ``form_submission``,
``signature_seal``, the audit head and entries).

One kind of column is left out of the check, for a reason: a mapper's ``version_id_col`` (``row_version`` of
batches, step executions, deviations, pending results and clinical alerts). The ORM increments it in the UPDATE
itself, outside the attribute history the audit listener reads, so update entries never carry it. It is not GMP
data: it only makes a second writer of a stale copy fail (optimistic locking), and every update it counts has its
own entry. Every other column the trail records, of every audited table, is checked (a column it never records,
``__audit_omit__``, is fingerprinted by an audited sha256 column).

Runs in the caller's transaction, read only. Cost: O(entries + rows); see ``domain.audit_state`` and the README
for the figures.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain.audit_state import ExpectedState, StateReport, TableShape
from ..models import Audited, Base
from . import audit
from .audit_walk import driver_rows


def audited_tables() -> dict[str, tuple[type[Audited], TableShape]]:
    """Every audited table by name, with its model and what the check needs to know of its columns."""
    found = {}
    for mapper in Base.registry.mappers:
        model = mapper.class_
        if not issubclass(model, Audited):
            continue
        name = cast(sa.Table, mapper.local_table).name
        numeric, datetimes, dates = set(), set(), set()
        for column in mapper.columns:
            kind = column.type.impl if isinstance(column.type, sa.TypeDecorator) else column.type
            if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
                numeric.add(column.key)
            elif isinstance(kind, sa.DateTime):
                datetimes.add(column.key)
            elif isinstance(kind, sa.Date):
                dates.add(column.key)
        # the optimistic-lock counter, not GMP data (module docstring)
        version = mapper.version_id_col
        excluded = frozenset({cast(str, version.key)} if version is not None else ())
        found[name] = (model, TableShape(numeric=frozenset(numeric), redacted=model.__audit_redact__,
                                         excluded=excluded, datetimes=frozenset(datetimes), dates=frozenset(dates)))
    return dict(sorted(found.items()))


def _entries(session: Session, tables: list[str], batch: int = 5000
             ) -> Iterator[tuple[str | None, str | None, str, str | None]]:
    """The create and update entries of ``tables``, in sequence order: the statement through SQLAlchemy (its events
    see it), the rows straight from the driver's cursor (plain text columns: nothing to convert), streamed."""
    actions = [f"{table}.{kind}" for table in tables for kind in ("create", "update")]
    audit.write_pending(session)  # the connection's reads see this transaction's entries
    connection = session.connection()
    mark = "%s" if connection.dialect.name == "postgresql" else "?"
    result = connection.exec_driver_sql(  # stream_results for this statement only (not the session's connection)
        "SELECT entity_type, entity_id, action, after FROM audit_entry "
        f"WHERE action IN ({', '.join(mark for _ in actions)}) ORDER BY seq", tuple(actions),
        execution_options={"stream_results": True})
    try:
        for rows in driver_rows(result, batch):
            yield from rows
    finally:  # closes PostgreSQL's server-side cursor however the caller stops
        result.close()


def _rows(session: Session, model: type[Audited], shape: TableShape, batch_size: int = 5000
          ) -> tuple[list[str], Iterator[tuple[str, Sequence[Any]]]]:
    """The columns read (all but the omitted and the excluded) and the rows: (row id as the trail writes it,
    the columns' values)."""
    mapper = sa.inspect(model)
    columns = [c for c in mapper.columns if c.key not in model.__audit_omit__ and c.key not in shape.excluded]
    keys = [c.key for c in columns]
    primary = [keys.index(c.key) for c in mapper.primary_key]

    def rows() -> Iterator[tuple[str, Sequence[Any]]]:
        result = session.connection().execute(sa.select(*columns).execution_options(yield_per=batch_size))
        try:
            if len(primary) == 1:
                (at,) = primary
                for row in result:
                    yield str(row[at]), row
            else:
                for row in result:
                    yield ",".join(str(row[i]) for i in primary), row
        finally:
            result.close()

    return keys, rows()


def check(session: Session) -> StateReport:
    """Compare every audited row with the trail: mismatched columns, rows inserted and rows deleted outside the
    application (``StateReport.lines``)."""
    tables = audited_tables()
    expected = ExpectedState(tables)
    expected.fold_all(_entries(session, list(tables)))
    report = StateReport(entries_read=expected.entries)
    for name, (model, shape) in tables.items():
        columns, rows = _rows(session, model, shape)
        expected.compare(name, columns, rows, shape, report)
    return report
