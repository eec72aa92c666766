"""Reading the audit trail for a verify: fast, and in parts, one process per core (issue [3.5] item 8).

The chain's rules are checked by one function, ``domain.audit_chain.walk``; this module only feeds it. A full
verify of a million entries is bound by reading them and by the Python work per entry (the canonical text and
its sha256), so two things make it fast:

* **Rows straight from the driver.** The entries are read through the DB-API cursor of the session's own
  connection (same transaction), as plain tuples, with the time already in the form the hash covers: PostgreSQL
  formats it (``to_char``, in the server); SQLite's stored text ``YYYY-MM-DD HH:MM:SS.ffffff`` (what SQLAlchemy
  always writes) becomes ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in SQL, and any other stored form is read through the
  column type's own conversion, exactly as the ORM reads it (a time that is not one is reported as altered).
* **Parts.** Past :data:`PARALLEL_FROM` entries, the trail is cut into contiguous parts; the earlier parts are
  walked by worker processes (``spawn``: nothing of the parent's connections is shared), each with its own
  connection, and the last part by the caller, on the session's connection, while the workers run. Then the
  caller may do other work of its own (``alongside``: the state check). The parts are joined in order: a part
  was walked from a guessed start (the stored hash of the entry before it, and that entry's time as the trail's
  latest); if the parts before it did not end exactly there, it is walked again from where they did end, in
  this process. So the result is always that of one walk from the start; the parts only make it sooner.

What a worker reads is bounded by the head read first (entries ``after < seq <= upto``, all below it); entries
never change once written (the database refuses it), so the worker's own snapshot sees what the caller's does,
except entries the caller's transaction has not committed: the part of a worker that cannot see them ends early and
is walked again by the caller, as is the part of a worker that failed. The last part, read by the caller, has no
upper bound: entries added past the head outside the application are found as before.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime
from operator import itemgetter
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain.audit_chain import Row, Walked, walk
from ..domain.canonical import iso_utc
from ..models import AuditEntry

log = logging.getLogger(__name__)
PARALLEL_FROM = 100_000  # entries to walk before parts pay for starting a process (about half a second)
BATCH = 5000
T = TypeVar("T")

# SQLite: the stored text as the hash covers it when it has the form SQLAlchemy writes, else NULL (read below)
_SQLITE_AT = ("CASE WHEN length(occurred_at) = 26 AND substr(occurred_at, 11, 1) = ' ' "
              "THEN substr(occurred_at, 1, 10) || 'T' || substr(occurred_at, 12) || 'Z' END")
_POSTGRESQL_AT = "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
_REST = "user_id, username, action, entity_type, entity_id, before, after, reason, prev_hash, entry_hash"


def _at_column(dialect: str) -> str:
    return _POSTGRESQL_AT if dialect == "postgresql" else _SQLITE_AT


def _mark(dialect: str) -> str:
    return "%s" if dialect == "postgresql" else "?"


def driver_rows(result: sa.CursorResult[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    """Batches of ``result``'s rows straight from the driver's cursor (no Row objects), the first batch being the
    row SQLAlchemy may already have taken from the cursor (a streamed result buffers one row when it starts), as
    SQLAlchemy gives it: the same values when the statement has no typed columns, converted when it has."""
    first = result.fetchone()
    if first is None:
        return
    yield [tuple(first)]
    cursor = result.cursor
    while batch := cursor.fetchmany(size):
        yield batch


def _rows(connection: sa.Connection, after: int, upto: int | None,
          time_of: Callable[[Any], datetime | None]) -> Iterator[Row]:
    """The stored entries ``after < seq (<= upto)`` in order, as ``walk`` reads them: the statement goes through
    SQLAlchemy (its events see it), the rows come straight from the driver's cursor, streamed (PostgreSQL: a
    server-side cursor; the rows are never all held)."""
    dialect = connection.dialect.name
    mark = _mark(dialect)
    sql = f"SELECT seq, {_at_column(dialect)}, {_REST} FROM audit_entry WHERE seq > {mark}"
    params: tuple[int, ...] = (after,)
    if upto is not None:
        sql += f" AND seq <= {mark}"
        params += (upto,)
    # per statement: Connection.execution_options() would change the session's connection for good
    result = connection.exec_driver_sql(sql + " ORDER BY seq", params, execution_options={"stream_results": True})
    try:
        at_of = itemgetter(1)
        for batch in driver_rows(result):
            if None in map(at_of, batch):  # a time not in the form the application writes: read it as the ORM does
                batch = [row if row[1] is not None else _reread(connection, row, time_of) for row in batch]
            yield from batch
    finally:  # stopping early (a break found) must still close PostgreSQL's server-side cursor
        result.close()


def _reread(connection: sa.Connection, row: Row, time_of: Callable[[Any], datetime | None]) -> Row:
    mark = _mark(connection.dialect.name)
    stored = connection.exec_driver_sql(f"SELECT occurred_at FROM audit_entry WHERE seq = {mark}", (row[0],)).scalar()
    try:
        at = time_of(stored)
    except (TypeError, ValueError):
        at = None  # not a time at all: walk() reports the entry as altered
    return (row[0], None if at is None else iso_utc(at), *row[2:])


def _time_reader(dialect: sa.Dialect) -> Callable[[Any], datetime | None]:
    """The column type's own reading of a stored time (what the ORM would give)."""
    column = AuditEntry.__table__.c.occurred_at
    process = column.type._cached_result_processor(dialect, None)  # noqa: SLF001 - the type's public contract
    return process if process is not None else (lambda value: value)


def _guess(connection: sa.Connection, seq: int) -> tuple[str | None, str | None]:
    """The stored hash and time of entry ``seq``: where the walk of the parts before it should end (its time as
    the trail's latest: true unless the clock was set back; a wrong guess costs a second walk, never a wrong
    answer)."""
    dialect = connection.dialect.name
    found = connection.exec_driver_sql(f"SELECT entry_hash, {_at_column(dialect)} FROM audit_entry "
                                       f"WHERE seq = {_mark(dialect)}", (seq,)).first()
    return (None, None) if found is None else (found[0], found[1])


Start = tuple[str | None, str | None, str | None]  # a part's start: stored hash, latest time, out-of-order time


def _walk_part(url: str, after: int, upto: int, start: Start | None) -> tuple[Start, Walked]:
    """A worker process: walk entries ``after < seq <= upto`` on a connection of its own, from ``start`` (None:
    the guess, ``_guess``); returns the start used with the result."""
    from ..extensions import make_engine  # a worker imports what it needs once

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if start is None:
                start = (*_guess(connection, after), None)
            walked = walk(_rows(connection, after, upto, _time_reader(connection.dialect)), after, start[0] or "",
                          start[1], start[2])
            return start, walked
    finally:
        engine.dispose()


def _workers() -> int:
    """Processes besides the caller's: one per further core this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(0, min(cores - 1, 7))


def _url(session: Session) -> str | None:
    """The URL a worker connects with, or None when a worker could not see this database (in memory)."""
    url = session.connection().engine.url
    if url.get_backend_name() == "sqlite" and (not url.database or url.database == ":memory:"
                                               or url.database.startswith("file:")):
        return None
    return url.render_as_string(hide_password=False)


def walk_trail(session: Session, seq: int, entry_hash: str, max_at: str | None, unordered_at: str | None,
               head_seq: int, *, alongside: Callable[[], T] | None = None, alongside_share: float = 0.0,
               parallel_from: int | None = None, workers: int | None = None) -> tuple[Walked, T | None]:
    """Walk the trail after position ``seq`` (stored hash ``entry_hash``, the trail's times there) to its end,
    as one ``walk`` would; meanwhile run ``alongside`` in this process, if given, and return its result too.

    ``head_seq``: the head read first, which places the parts. ``alongside_share``: about how much of the walk
    ``alongside`` costs, so that this process, which also walks the last part, takes a smaller one."""
    connection = session.connection()
    time_of = _time_reader(connection.dialect)
    span = head_seq - seq
    count = _workers() if workers is None else workers
    url = _url(session) if count and span >= (PARALLEL_FROM if parallel_from is None else parallel_from) else None
    if url is None:
        walked = walk(_rows(connection, seq, None, time_of), seq, entry_hash, max_at, unordered_at)
        return walked, (alongside() if alongside is not None else None)

    # parts 0..count-1 to the workers, the last (smaller when this process has other work) to this one
    own = max(0.05, min(0.9, (1 - alongside_share) / (count + 1)))
    cuts = [seq + round(span * (1 - own) * i / count) for i in range(count + 1)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
        futures = [pool.submit(_walk_part, url, cuts[i], cuts[i + 1],
                               (entry_hash, max_at, unordered_at) if i == 0 else None) for i in range(count)]
        guess: Start = (*_guess(connection, cuts[-1]), None)
        last = walk(_rows(connection, cuts[-1], None, time_of), cuts[-1], guess[0] or "", guess[1])
        beside = alongside() if alongside is not None else None
        parts: list[tuple[int, int | None, Start, Walked | None]] = [
            (cuts[i], cuts[i + 1], *_outcome(future, cuts[i], cuts[i + 1])) for i, future in enumerate(futures)]
    parts.append((cuts[-1], None, guess, last))

    def again(done: Walked, upto: int | None) -> Walked:
        return walk(_rows(connection, done.seq, upto, time_of), done.seq, done.entry_hash, done.max_at)

    return join(Walked(0, None, None, seq, entry_hash, max_at, unordered_at), parts, again), beside


def _outcome(future: Future[tuple[Start, Walked]], after: int, upto: int) -> tuple[Start, Walked | None]:
    """A worker's start and result; a worker that failed (it could not start, or lost its connection) leaves its
    part to be walked again by the caller: slower, never a different answer."""
    try:
        return future.result()
    except Exception:  # noqa: BLE001 - any failure of the worker: its part is walked here instead
        log.warning("audit verify: the worker process for entries %d to %d failed; walking them here", after + 1,
                    upto, exc_info=True)
        return (None, None, None), None


def join(start: Walked, parts: list[tuple[int, int | None, Start, Walked | None]],
         again: Callable[[Walked, int | None], Walked]) -> Walked:
    """The parts' results, in order, as one walk from ``start`` (the position before the first part, nothing
    checked yet): a part walked from a start that is not exactly where the walk so far ended, or not walked at all
    (None), is walked ``again`` from there (``again(done, upto)``); the first break ends it. Pure; ``after`` and
    ``upto`` of each part are its bounds (``upto`` None: to the trail's end)."""
    done = start
    for after, upto, guessed, part in parts:
        if done.problem is not None:
            break
        if part is None or (done.seq, done.entry_hash, done.max_at) != (after, guessed[0], guessed[1]):
            part = again(done, upto)
        unordered = max((at for at in (done.unordered_at, part.unordered_at) if at is not None), default=None)
        done = part._replace(checked=done.checked + part.checked, unordered_at=unordered)
    return done
