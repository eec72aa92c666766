"""Least privilege on PostgreSQL: two roles, one that owns the schema and one the application runs as.

``OWNER_DATABASE_URL`` (env ``MFG_OWNER_DATABASE_URL``) names the owner role: ``flask --app mfg init`` migrates
as the owner, then (re)applies the application role's privileges here, in one place (``grant_statements``).
The application's role (``DATABASE_URL``) then:

- reads every table and inserts into every table; updates the tables the application updates (every table
  whose guard does not refuse UPDATE: ``mfg.migrate.GUARDS``), the audit head among them;
- never updates an append-only table (audit entries, signatures, recorded values...: SELECT and INSERT only),
  never deletes or truncates anything (the application deletes no row: GMP records are deactivated or
  superseded), and only reads ``alembic_version``;
- uses the sequences (``USAGE, SELECT``: nextval and currval), and the schema (``USAGE``, never ``CREATE``);
- owns nothing, so it cannot ALTER, DROP, DISABLE TRIGGER or DROP TRIGGER: PostgreSQL allows those to an
  owner only.

Without an owner URL (SQLite, or one PostgreSQL role) nothing changes: the application's role owns the tables,
and ``init`` and ``qualify`` say so (``app_role_findings``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from . import migrate
from .extensions import make_engine

READ_ONLY = ("SELECT",)
APPEND_ONLY = ("SELECT", "INSERT")
READ_WRITE = ("SELECT", "INSERT", "UPDATE")
# Tables the application only reads: Alembic's revision table (``qualify`` compares it with the package).
READ_ONLY_TABLES = frozenset({"alembic_version"})
# Every table privilege PostgreSQL has (``qualify`` reports any the application's role holds beyond its own).
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


class RoleSetupError(Exception):
    """The two roles cannot be set up as asked (the message says why and what to do)."""


def table_privileges(table: str, guards: Mapping[str, migrate.Guard] | None = None) -> tuple[str, ...]:
    """What the application's role may do on ``table``: decided by the table's guard, so that a table made
    append-only in the database is append-only in the grants too."""
    if table in READ_ONLY_TABLES:
        return READ_ONLY
    guard = (migrate.GUARDS if guards is None else guards).get(table)
    if guard is not None and "UPDATE" in guard.refuse:
        return APPEND_ONLY
    return READ_WRITE


def _double_quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def grant_statements(schema: str, app_role: str, tables: list[str],
                     quote: Callable[[str], str] = _double_quoted) -> list[str]:
    """The SQL that sets the application role's privileges on ``schema`` from scratch (idempotent):
    everything revoked from it and from PUBLIC, then exactly what it needs granted."""
    s, role = quote(schema), quote(app_role)
    statements = [f"REVOKE ALL ON SCHEMA {s} FROM PUBLIC, {role}",
                  f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM PUBLIC, {role}",
                  f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM PUBLIC, {role}",
                  f"GRANT USAGE ON SCHEMA {s} TO {role}"]
    statements += [f"GRANT {', '.join(table_privileges(t))} ON {s}.{quote(t)} TO {role}" for t in sorted(tables)]
    statements.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {role}")
    return statements


@dataclass(frozen=True)
class _Identity:
    role: str
    schema: str | None
    database: str
    superuser: bool


def _identity(connection: sa.Connection) -> _Identity:
    row = connection.execute(sa.text(
        "SELECT current_user, current_schema(), current_database(), "
        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")).one()
    return _Identity(row[0], row[1], row[2], bool(row[3]))


def _tables(connection: sa.Connection, schema: str) -> list[str]:
    return list(connection.execute(sa.text(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')"), {"schema": schema}).scalars())


def _owned_by(connection: sa.Connection, schema: str, role: str) -> list[str]:
    """The schema itself and the objects in it that ``role`` owns, or a role it is a member of."""
    return list(connection.execute(sa.text(
        "SELECT 'schema ' || n.nspname FROM pg_namespace n WHERE n.nspname = :schema "
        "AND pg_has_role(:role, n.nspowner, 'MEMBER') "
        "UNION ALL SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'S', 'v', 'm') "
        "AND pg_has_role(:role, c.relowner, 'MEMBER') ORDER BY 1"), {"schema": schema, "role": role}).scalars())


def _refusal(owner: _Identity, app: _Identity, owned: list[str]) -> str | None:
    if owner.schema is None:
        return f"the owner role {owner.role} has no schema on its search_path"
    if app.role == owner.role:
        return (f"OWNER_DATABASE_URL and DATABASE_URL name the same role ({app.role}): the application needs a "
                "role of its own")
    if app.database != owner.database:
        return f"the two URLs name different databases ({owner.database}, {app.database})"
    if app.superuser:
        return (f"the application's role {app.role} is a superuser: it bypasses every privilege "
                f"(ALTER ROLE {app.role} NOSUPERUSER)")
    if owned:
        return (f"the application's role {app.role} owns {', '.join(owned)} in schema {owner.schema} (itself or "
                f"through a role it is a member of): as a superuser run REASSIGN OWNED BY {app.role} TO "
                f"{owner.role} in this database (or revoke that membership), then init again")
    return None


def setup(owner_url: str, app_url: str) -> list[str]:
    """Migrate as the owner, then give the application's role exactly its privileges on the owner's schema
    (idempotent: ``init`` runs it every time). Returns what was done, line by line. Refuses
    (``RoleSetupError``, before migrating) when the two URLs are one role, other databases, when the
    application's role is a superuser or owns something in the schema; and after granting when the
    application's role does not see the owner's schema."""
    owner_engine = make_engine(owner_url, poolclass=sa.pool.NullPool)
    app_engine = make_engine(app_url, poolclass=sa.pool.NullPool)
    try:
        if owner_engine.dialect.name != "postgresql" or app_engine.dialect.name != "postgresql":
            raise RoleSetupError("OWNER_DATABASE_URL and DATABASE_URL must both be PostgreSQL URLs")
        with app_engine.connect() as conn:
            app = _identity(conn)
        with owner_engine.connect() as conn:
            owner = _identity(conn)
            refusal = _refusal(owner, app, _owned_by(conn, owner.schema, app.role) if owner.schema else [])
        if refusal:
            raise RoleSetupError(refusal)
        assert owner.schema is not None  # refused above otherwise
        migrate.upgrade(owner_url)
        with owner_engine.begin() as conn:
            quote = conn.dialect.identifier_preparer.quote
            tables = _tables(conn, owner.schema)
            for statement in grant_statements(owner.schema, app.role, tables, quote):
                conn.execute(sa.text(statement))
        with app_engine.connect() as conn:
            seen = _identity(conn).schema
        if seen != owner.schema:
            raise RoleSetupError(f"the application's role {app.role} works in schema {seen}, the owner in "
                                 f"{owner.schema}: give both URLs the same search_path")
        return [f"database schema at head, migrated as the owner role {owner.role}",
                f"granted the application's role {app.role} its privileges on the {len(tables)} tables of "
                f"schema {owner.schema}: no UPDATE on append-only tables, no DELETE, TRUNCATE, ALTER or CREATE"]
    finally:
        owner_engine.dispose()
        app_engine.dispose()


def app_role_findings(connection: sa.Connection) -> tuple[list[str], list[str]]:
    """What the connection's own role could do that the application's role should not, as (problems,
    warnings). The one-role set-up (a superuser, or the role that owns the tables) is a warning, as it was the
    only set-up before; a role that owns nothing yet holds more than its grants (UPDATE or DELETE on an
    append-only table, CREATE on the schema...) is a problem. SQLite: none."""
    if connection.dialect.name != "postgresql":
        return [], []
    me = _identity(connection)
    if me.superuser:  # the one-role set-up at its worst: as today, said plainly
        return [], [f"WARNING: the application's role {me.role} is a PostgreSQL superuser: it can alter or drop "
                    "anything, disable the guard triggers included. Set OWNER_DATABASE_URL to a separate owner role, "
                    "give the application a role of its own and run `flask --app mfg init` (README, Two PostgreSQL "
                    "roles)"]
    schema = me.schema or "public"
    owned = _owned_by(connection, schema, me.role)
    if owned:
        return [], [f"WARNING: the application's role {me.role} owns {len(owned)} objects of schema {schema} "
                    f"({', '.join(owned[:3])}{', ...' if len(owned) > 3 else ''}): it could alter the tables and "
                    "disable the guard triggers. Set OWNER_DATABASE_URL to a separate owner role and run "
                    "`flask --app mfg init` (README, Two PostgreSQL roles)"]
    problems = []
    if connection.execute(sa.text("SELECT has_schema_privilege(:s, 'CREATE')"), {"s": schema}).scalar():
        problems.append(f"the application's role {me.role} may create objects in schema {schema}")
    held: dict[str, list[str]] = {}
    for name, privilege in connection.execute(sa.text(
            "SELECT c.relname, p.privilege FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "CROSS JOIN unnest(CAST(:privileges AS text[])) WITH ORDINALITY AS p(privilege, i) "
            "WHERE n.nspname = :schema "
            "AND CASE WHEN c.relkind IN ('r', 'p') THEN has_table_privilege(c.oid, p.privilege) END "
            "ORDER BY c.relname, p.i"), {"schema": schema, "privileges": list(TABLE_PRIVILEGES)}):
        held.setdefault(name, []).append(privilege)
    for table, privileges in sorted(held.items()):
        extra = [p for p in privileges if p not in table_privileges(table)]
        if extra:
            problems.append(f"the application's role {me.role} may {', '.join(extra)} on {table}")
    sequences = list(connection.execute(sa.text(
        # CASE: the planner may test the privilege before the kind (pg_statistic is no sequence)
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :schema "
        "AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'UPDATE') END ORDER BY 1"),
        {"schema": schema}).scalars())
    if sequences:
        problems.append(f"the application's role {me.role} may UPDATE (setval) sequences {', '.join(sequences)}")
    return problems, []
