"""Alembic, driven from code: the migrations live inside the package (``mfg/migrations``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


# --- database guards, used by migrations ------------------------------------------------------
# Append-only tables refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) in the database itself, so
# not even a bug in the application can rewrite history. SQLite drops a table's triggers when batch
# mode rebuilds it: a migration that batch-alters a guarded table must call the guard again.

_PG_REFUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION mfg_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'GMP record guard: % on % refused', TG_OP, TG_TABLE_NAME;
END $$
"""


def append_only(op, table: str) -> None:  # noqa: ANN001 - alembic's op proxy
    """Refuse UPDATE and DELETE on ``table``."""
    _refuse(op, table, ("UPDATE", "DELETE"))


def never_deleted(op, table: str) -> None:  # noqa: ANN001
    """Refuse DELETE on ``table`` (GMP records are deactivated or superseded, never deleted)."""
    _refuse(op, table, ("DELETE",))


def _refuse(op, table: str, operations: tuple[str, ...]) -> None:  # noqa: ANN001
    if op.get_context().dialect.name == "sqlite":
        for operation in operations:
            op.execute(f"CREATE TRIGGER {table}_refuse_{operation.lower()} BEFORE {operation} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, 'GMP record guard: {operation} on {table} refused'); END")
        return
    op.execute(_PG_REFUSE_FUNCTION)
    op.execute(f"CREATE TRIGGER {table}_refuse_change BEFORE {' OR '.join(operations)} ON {table} "
               "FOR EACH ROW EXECUTE FUNCTION mfg_refuse_change()")
    op.execute(f"CREATE TRIGGER {table}_refuse_truncate BEFORE TRUNCATE ON {table} "
               "FOR EACH STATEMENT EXECUTE FUNCTION mfg_refuse_change()")


def immutable_columns(op, table: str, columns: tuple[str, ...]) -> None:  # noqa: ANN001
    """Refuse an UPDATE that changes any of ``columns`` (the other columns may still move)."""
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in columns)
    message = f"GMP record guard: {', '.join(columns)} of {table} are immutable"
    if op.get_context().dialect.name == "sqlite":
        op.execute(f"CREATE TRIGGER {table}_immutable BEFORE UPDATE ON {table} WHEN {changed} "
                   f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
        return
    changed = changed.replace(" IS NOT ", " IS DISTINCT FROM ")
    op.execute(f"""
CREATE OR REPLACE FUNCTION {table}_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF {changed} THEN RAISE EXCEPTION '{message}'; END IF;
  RETURN NEW;
END $$""")
    op.execute(f"CREATE TRIGGER {table}_immutable BEFORE UPDATE ON {table} "
               f"FOR EACH ROW EXECUTE FUNCTION {table}_immutable()")
