"""Alembic, driven from code: the migrations live inside the package (``mfg/migrations``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

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
#
# The SQL of each guard comes from one place (``guard_triggers``): the migrations execute it, and
# ``flask --app mfg qualify`` compares a live database with it (``GUARDS``: the guards of the newest schema).

REFUSE_FUNCTION = "mfg_refuse_change"
_PG_REFUSE_BODY = """
BEGIN
  RAISE EXCEPTION 'GMP record guard: % on % refused', TG_OP, TG_TABLE_NAME;
END """


@dataclass(frozen=True)
class Guard:
    """What the database refuses on one table: these operations, and any change to these columns."""

    refuse: tuple[str, ...] = ()
    immutable: tuple[str, ...] = ()


APPEND_ONLY = ("UPDATE", "DELETE")
NEVER_DELETED = ("DELETE",)

# Every guard of the newest schema. A migration that adds or changes a guard changes this too; a test
# migrates a new database to head and compares its triggers with it, on SQLite and PostgreSQL.
GUARDS: dict[str, Guard] = {
    "audit_entry": Guard(APPEND_ONLY),
    "signature": Guard(APPEND_ONLY),
    "signature_seal": Guard(APPEND_ONLY),  # migration 0017
    "audit_head": Guard(NEVER_DELETED),
    "audit_checkpoint": Guard(APPEND_ONLY),  # migration 0018
    "user_account": Guard(NEVER_DELETED),
    "role_grant": Guard(NEVER_DELETED, immutable=("user_id", "role", "requested_by_id", "requested_by",
                                                  "requested_at")),  # migration 0019
    "sop_version": Guard(NEVER_DELETED, immutable=("code", "version", "kind", "title", "content", "sha256",
                                                   "loaded_at", "loaded_by_id")),
    "recorded_value": Guard(APPEND_ONLY),
    "signature_invalidation": Guard(APPEND_ONLY),
    "batch_master_record": Guard(APPEND_ONLY),
    "equipment": Guard(NEVER_DELETED),
    "material_lot": Guard(NEVER_DELETED),
    # the dose pinned at start (migration 0013) never changes
    "batch": Guard(NEVER_DELETED, immutable=("dose_level", "dose_cells_per_kg", "dose_label", "weight_kg",
                                             "weight_measured_on", "dose_signature_id", "trial_config_version_id",
                                             "escalation_decision_id")),  # migration 0021
    "step_execution": Guard(NEVER_DELETED),
    "deviation": Guard(NEVER_DELETED),
    "donor": Guard(NEVER_DELETED),
    "donor_test": Guard(NEVER_DELETED),
    "subject": Guard(NEVER_DELETED),
    "subject_screening": Guard(APPEND_ONLY),  # migration 0021
    "screening_finding": Guard(APPEND_ONLY),  # migration 0021
    "dlt_event": Guard(APPEND_ONLY),  # migration 0021
    "escalation_decision": Guard(APPEND_ONLY),  # migration 0021
    "ledger_document": Guard(APPEND_ONLY),  # migration 0022
    "custody_event": Guard(APPEND_ONLY),
    "product_bag": Guard(APPEND_ONLY),
    "review_mark": Guard(APPEND_ONLY),
    "batch_decision": Guard(APPEND_ONLY),
    "document_revision": Guard(APPEND_ONLY),
    "qualification_record": Guard(APPEND_ONLY),
    "pending_result": Guard(NEVER_DELETED, immutable=("batch_id", "execution_id", "field_id", "pending_value_id",
                                                      "label", "method", "sampled_at", "due_at", "decision_id",
                                                      "created_at")),
    "bag_block": Guard(APPEND_ONLY),
    "clinical_alert": Guard(NEVER_DELETED, immutable=("batch_id", "deviation_id", "finding", "raised_at")),
    # a job changes state (claimed, done): never deleted, and what it was asked to make never changes
    "document_job": Guard(NEVER_DELETED, immutable=("batch_id", "decision_id", "kinds", "reason", "created_at",
                                                    "created_by_id")),
}


@dataclass(frozen=True)
class Trigger:
    """One guard trigger as a migration creates it. ``sql`` is the CREATE TRIGGER statement; on PostgreSQL
    the trigger also names its function (``function``, whose body is ``function_body``), and ``events``,
    ``row`` say when it fires."""

    name: str
    table: str
    sql: str
    events: frozenset[str]
    row: bool = True
    function: str | None = None
    function_body: str | None = None


def _function_sql(name: str, body: str) -> str:
    return f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $${body}$$"


def refuse_triggers(dialect: str, table: str, operations: tuple[str, ...]) -> list[Trigger]:
    """The triggers that make ``table`` refuse ``operations`` (and TRUNCATE on PostgreSQL)."""
    if dialect == "sqlite":
        return [Trigger(name, table, f"CREATE TRIGGER {name} BEFORE {operation} ON {table} BEGIN SELECT "
                                     f"RAISE(ABORT, 'GMP record guard: {operation} on {table} refused'); END",
                        frozenset({operation}))
                for operation in operations for name in [f"{table}_refuse_{operation.lower()}"]]
    return [Trigger(f"{table}_refuse_change", table,
                    f"CREATE TRIGGER {table}_refuse_change BEFORE {' OR '.join(operations)} ON {table} "
                    f"FOR EACH ROW EXECUTE FUNCTION {REFUSE_FUNCTION}()",
                    frozenset(operations), True, REFUSE_FUNCTION, _PG_REFUSE_BODY),
            Trigger(f"{table}_refuse_truncate", table,
                    f"CREATE TRIGGER {table}_refuse_truncate BEFORE TRUNCATE ON {table} "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION {REFUSE_FUNCTION}()",
                    frozenset({"TRUNCATE"}), False, REFUSE_FUNCTION, _PG_REFUSE_BODY)]


def immutable_trigger(dialect: str, table: str, columns: tuple[str, ...]) -> Trigger:
    """The trigger that refuses an UPDATE changing any of ``columns`` of ``table``."""
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in columns)
    message = f"GMP record guard: {', '.join(columns)} of {table} are immutable"
    name = f"{table}_immutable"
    if dialect == "sqlite":
        return Trigger(name, table, f"CREATE TRIGGER {name} BEFORE UPDATE ON {table} WHEN {changed} "
                                    f"BEGIN SELECT RAISE(ABORT, '{message}'); END", frozenset({"UPDATE"}))
    changed = changed.replace(" IS NOT ", " IS DISTINCT FROM ")
    body = f"""
BEGIN
  IF {changed} THEN RAISE EXCEPTION '{message}'; END IF;
  RETURN NEW;
END """
    return Trigger(name, table,
                   f"CREATE TRIGGER {name} BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()",
                   frozenset({"UPDATE"}), True, name, body)


def guard_triggers(dialect: str, guards: dict[str, Guard] | None = None) -> dict[str, Trigger]:
    """Every trigger of ``guards`` (default: the newest schema's), by name."""
    found: dict[str, Trigger] = {}
    for table, guard in (GUARDS if guards is None else guards).items():
        triggers = refuse_triggers(dialect, table, guard.refuse) if guard.refuse else []
        if guard.immutable:
            triggers.append(immutable_trigger(dialect, table, guard.immutable))
        found.update((t.name, t) for t in triggers)
    return found


def _create(op, triggers: list[Trigger]) -> None:  # noqa: ANN001 - alembic's op proxy
    functions = {t.function: t.function_body for t in triggers if t.function is not None}
    for name, body in functions.items():
        op.execute(_function_sql(name, body or ""))
    for trigger in triggers:
        op.execute(trigger.sql)


def append_only(op, table: str) -> None:  # noqa: ANN001 - alembic's op proxy
    """Refuse UPDATE and DELETE on ``table``."""
    _create(op, refuse_triggers(op.get_context().dialect.name, table, APPEND_ONLY))


def never_deleted(op, table: str) -> None:  # noqa: ANN001
    """Refuse DELETE on ``table`` (GMP records are deactivated or superseded, never deleted)."""
    _create(op, refuse_triggers(op.get_context().dialect.name, table, NEVER_DELETED))


def immutable_columns(op, table: str, columns: tuple[str, ...]) -> None:  # noqa: ANN001
    """Refuse an UPDATE that changes any of ``columns`` (the other columns may still move)."""
    _create(op, [immutable_trigger(op.get_context().dialect.name, table, columns)])


# --- what a live database has, against the above (``flask --app mfg qualify``) ----------------------

def schema_revisions(connection: sa.Connection) -> tuple[set[str], set[str]]:
    """The database's current Alembic revision(s) and the newest the package carries."""
    current = set(MigrationContext.configure(connection).get_current_heads())
    return current, set(ScriptDirectory(str(MIGRATIONS)).get_heads())


def _normalised(sql: str) -> str:
    return " ".join(sql.split())


# tgtype bits of pg_trigger (PostgreSQL's include/catalog/pg_trigger.h)
_PG_ROW, _PG_BEFORE = 1, 2
_PG_EVENTS = {"INSERT": 4, "DELETE": 8, "UPDATE": 16, "TRUNCATE": 32}


def guard_problems(connection: sa.Connection) -> list[str]:
    """Every way the database's guard triggers differ from ``GUARDS``: a trigger missing, disabled,
    firing on other events, calling another function, or with other SQL; a trigger the schema does not
    have. Empty when every guard is in place as the migrations made it."""
    dialect = connection.dialect.name
    expected = guard_triggers(dialect)
    problems = []
    if dialect == "sqlite":
        found: dict[str, tuple[Any, ...]] = {name: (table, sql) for name, table, sql in connection.execute(sa.text(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'"))}
        for name, trigger in expected.items():
            if name not in found:
                problems.append(f"trigger {name} on {trigger.table} is missing")
            elif found[name][0] != trigger.table or _normalised(found[name][1]) != _normalised(trigger.sql):
                problems.append(f"trigger {name} on {found[name][0]} was changed: {found[name][1]}")
    else:
        rows = connection.execute(sa.text(
            "SELECT t.tgname, c.relname, t.tgenabled, t.tgtype, p.proname, p.prosrc FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_proc p ON p.oid = t.tgfoid WHERE NOT t.tgisinternal AND n.nspname = current_schema()"))
        found = {row[0]: row[1:] for row in rows}
        for name, trigger in expected.items():
            if name not in found:
                problems.append(f"trigger {name} on {trigger.table} is missing")
                continue
            table, enabled, kind, function, source = found[name]
            enabled = enabled.decode() if isinstance(enabled, bytes) else enabled
            events = {event for event, bit in _PG_EVENTS.items() if kind & bit}
            if table != trigger.table:
                problems.append(f"trigger {name} is on {table}, not {trigger.table}")
            if enabled not in ("O", "A"):
                problems.append(f"trigger {name} on {table} is disabled (tgenabled {enabled})")
            if (events != trigger.events or not kind & _PG_BEFORE or bool(kind & _PG_ROW) != trigger.row
                    or function != trigger.function):
                problems.append(f"trigger {name} on {table} fires on other events or calls another function "
                                f"({function})")
            elif _normalised(source) != _normalised(trigger.function_body or ""):
                problems.append(f"function {function}() of trigger {name} was changed")
    for name in sorted(set(found) - set(expected)):
        problems.append(f"trigger {name} on {found[name][0]} is not part of the schema")
    return problems
