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


def seal_new_trail(url: str, instance: Path) -> None:
    """What `flask --app mfg init` does for a new database: create the instance's audit key ring (if absent)
    and seal the empty audit trail with it, so the app can append (it refuses to, unsealed)."""
    from sqlalchemy.orm import Session

    from mfg.audit_key import KEYS_INFO, KeyFile, create_key_file
    from mfg.extensions import make_engine
    from mfg.services import audit

    key_file = instance / "audit.key"
    create_key_file(key_file)
    engine = make_engine(url, poolclass=sa.pool.NullPool)
    try:
        with Session(engine, info={KEYS_INFO: KeyFile(key_file)}) as session:
            audit.set_actor(session, name="bench")
            audit.seal_existing(session)
            session.commit()
    finally:
        engine.dispose()
