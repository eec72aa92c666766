"""Alembic environment: online migrations only, batch mode for SQLite (naming convention on Base)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from mfg.extensions import make_engine
from mfg.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None  # mfg.migrate sets it before running Alembic
    engine = make_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
