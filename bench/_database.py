"""The database a benchmark runs on: a SQLite file in its temporary folder, or a fresh PostgreSQL schema
dropped at the end (the URL's search_path points the app at it)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa


def temporary_database(url: str | None, tmp: Path, *, prefix: str,
                       sqlite_name: str = "bench.sqlite3") -> tuple[str, Callable[[], None]]:
    """(database URL, a function that removes it)."""
    if not url:
        return f"sqlite:///{tmp / sqlite_name}", lambda: None
    schema = f"{prefix}_{os.getpid()}_{int(time.time())}"
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))

    full = sa.engine.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return full.render_as_string(hide_password=False), drop
