"""Named counters that are never reused (lot numbers, deviation numbers, later DINs)."""

from __future__ import annotations

from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..models import Counter


def next_value(session: Session, name: str) -> int:
    """Increment and return counter ``name`` (starting at 1), safe under concurrency on both databases.

    The row is created if missing (INSERT ... ON CONFLICT DO NOTHING), then one UPDATE ... RETURNING
    takes the row lock (PostgreSQL) or the write lock (SQLite) until the transaction ends, so two
    transactions never get the same value; a rolled-back transaction gives its value back.
    """
    connection = session.connection()
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    table = cast(sa.Table, Counter.__table__)  # a mapped class's __table__ is typed as a FromClause
    connection.execute(insert(table).values(name=name, value=0).on_conflict_do_nothing())
    return connection.execute(sa.update(table).where(table.c.name == name)
                              .values(value=table.c.value + 1).returning(table.c.value)).scalar_one()
