"""Least privilege on PostgreSQL (issue 18 item 6): an owner role migrates, the application's role gets only what
it needs. As the application's role every forbidden statement is refused by PostgreSQL's privileges (not by the
guard triggers, which the owner of a table could disable), while the application still works.

PostgreSQL only: skipped without MFG_TEST_DATABASE_URL. The roles are created on the test server for each test
(named with the process id) and dropped afterwards."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from mfg import db_roles, migrate
from mfg.extensions import db
from mfg.models import AuditEntry, Signature
from mfg.services import accounts, audit, sops
from tests.conftest import PG_URL, make_app
from tests.support import DEMO_SOP, PASSWORD

pytestmark = pytest.mark.skipif(not PG_URL, reason="MFG_TEST_DATABASE_URL is not set: PostgreSQL tests skipped")

_count = itertools.count(1)
INSUFFICIENT_PRIVILEGE = "42501"


@dataclass(frozen=True)
class Roles:
    owner: str
    app: str
    schema: str
    owner_url: str
    app_url: str
    admin: sa.Engine


def _url(role: str, schema: str) -> str:
    url = sa.engine.make_url(PG_URL).set(username=role, password=None)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


@pytest.fixture
def roles() -> Iterator[Roles]:
    """An owner role, an application role (both LOGIN, nothing else) and a schema the owner owns, empty."""
    n = f"{os.getpid()}_{next(_count)}"
    owner, app, schema = f"mfg_t_owner_{n}", f"mfg_t_app_{n}", f"mfg_t_roles_{n}"
    admin = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{owner}" LOGIN'))
        conn.execute(sa.text(f'CREATE ROLE "{app}" LOGIN'))
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{owner}"'))
    try:
        yield Roles(owner, app, schema, _url(owner, schema), _url(app, schema), admin)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text("SET lock_timeout = '20s'"))
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            for role in (app, owner):
                conn.execute(sa.text(f'DROP OWNED BY "{role}" CASCADE'))
                conn.execute(sa.text(f'DROP ROLE "{role}"'))
        admin.dispose()


def _instance(url: str, tmp_path: Path, site: Path, **overrides: object):  # noqa: ANN202 - a Flask app
    """An app on ``url`` whose instance has the test session's site key and certificate (init keeps them)."""
    app = make_app(url, tmp_path, **overrides)
    app.config["SOPS_DIR"] = str(DEMO_SOP.parent)
    instance = Path(app.instance_path)
    for name, key in (("key.pem", "SIGNING_KEY_FILE"), ("cert.pem", "SIGNING_CERT_FILE")):
        (instance / app.config[key]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(site / name, instance / app.config[key])
    return app


@pytest.fixture
def two_roles(roles: Roles, tmp_path: Path, _site_material: Path):
    """An instance initialised the way the README says: `flask --app mfg init` with both URLs; returns the app
    (whose DATABASE_URL is the application's role) and the roles."""
    app = _instance(roles.app_url, tmp_path, _site_material, OWNER_DATABASE_URL=roles.owner_url)
    result = app.test_cli_runner().invoke(args=["init"])
    assert result.exit_code == 0, result.output
    assert f"migrated as the owner role {roles.owner}" in result.output
    assert f"granted the application's role {roles.app}" in result.output
    try:
        yield app, roles
    finally:
        app.extensions["mfg.db"].engine.dispose()


def _refused(conn: sa.Connection, statement: str) -> str | None:
    """None when PostgreSQL refuses ``statement`` for want of privilege; else what happened instead."""
    savepoint = conn.begin_nested()
    try:
        conn.execute(sa.text(statement))
    except sa.exc.DBAPIError as exc:
        savepoint.rollback()
        state = getattr(exc.orig, "sqlstate", None)
        return None if state == INSUFFICIENT_PRIVILEGE else f"{statement}: failed otherwise ({state}: {exc.orig})"
    savepoint.rollback()
    return f"{statement}: allowed"


def _first_column(conn: sa.Connection, table: str) -> str:
    return conn.execute(sa.text(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = :t ORDER BY ordinal_position LIMIT 1"), {"t": table}).scalar_one()


def _use_the_application(app) -> None:  # noqa: ANN001 - a Flask app
    """What the application does on every kind of table: accounts (sequences, audit appends and the head
    update), a master record loaded and approved (a signature, updates of a guarded table)."""
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        loader = accounts.create_user_at_setup(s, username="loader", full_name="Loader Person", roles="qa",
                                               password=PASSWORD, policy=accounts.Policy())
        approver = accounts.create_user_at_setup(s, username="approver", full_name="Approver Person", roles="qa",
                                                 password=PASSWORD, policy=accounts.Policy())
        s.commit()
        version = sops.load_directory(s, DEMO_SOP.parent, loader=loader).loaded[0]
        sops.approve(s, version, site_timezone="UTC", signer=approver, password=PASSWORD, username="approver",
                     require_username=True)
        s.commit()
        assert s.scalar(sa.select(sa.func.count()).select_from(Signature)) == 1
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) >= 3


def test_the_application_role_is_refused_every_forbidden_statement(two_roles):
    app, roles = two_roles
    engine = app.extensions["mfg.db"].engine
    refused_otherwise = []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_user, current_schema()")).one() == (roles.app, roles.schema)
        tables = list(conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).scalars())
        assert {"audit_entry", "audit_head", "signature", "alembic_version"} <= set(tables)
        statements = []
        for table in tables:
            column = _first_column(conn, table)
            statements += [f"DELETE FROM {table}", f"TRUNCATE {table}", f"ALTER TABLE {table} ADD COLUMN evil int",
                           f"DROP TABLE {table}", f"CREATE TRIGGER evil BEFORE INSERT ON {table} FOR EACH ROW "
                                                  f"EXECUTE FUNCTION {migrate.REFUSE_FUNCTION}()"]
            if "UPDATE" not in db_roles.table_privileges(table):
                statements.append(f"UPDATE {table} SET {column} = {column}")
        for trigger in migrate.guard_triggers("postgresql").values():
            statements += [f"ALTER TABLE {trigger.table} DISABLE TRIGGER {trigger.name}",
                           f"DROP TRIGGER {trigger.name} ON {trigger.table}"]
        statements += ["ALTER TABLE audit_entry DISABLE TRIGGER ALL", "ALTER TABLE signature DISABLE TRIGGER USER",
                       "CREATE TABLE evil (id int)", f"CREATE TABLE {roles.schema}.evil (id int)",
                       "CREATE VIEW evil AS SELECT 1 AS one", "CREATE SEQUENCE evil",
                       "CREATE FUNCTION evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                       f"CREATE OR REPLACE FUNCTION {migrate.REFUSE_FUNCTION}() RETURNS trigger LANGUAGE plpgsql "
                       "AS 'BEGIN RETURN NEW; END'",
                       "UPDATE audit_entry SET reason = 'rewritten'", "UPDATE signature SET meaning = 'rewritten'",
                       "ALTER SEQUENCE user_account_id_seq RESTART WITH 1", "SELECT setval('user_account_id_seq', 1)"]
        refused_otherwise = [problem for statement in statements if (problem := _refused(conn, statement))]
    assert refused_otherwise == []
    # and the application works as this role, guards and chain intact
    _use_the_application(app)
    runner = app.test_cli_runner()
    verified = runner.invoke(args=["audit", "verify"])
    assert verified.exit_code == 0 and "audit trail intact" in verified.output, verified.output
    assert runner.invoke(args=["audit", "signatures"]).exit_code == 0
    with app.app_context():
        assert migrate.guard_problems(db.session.connection()) == []
        assert db_roles.app_role_findings(db.session.connection()) == ([], [])
    # init again (a later upgrade) re-applies the same grants and leaves everything working
    again = runner.invoke(args=["init"])
    assert again.exit_code == 0, again.output
    _still = runner.invoke(args=["audit", "verify"])
    assert _still.exit_code == 0, _still.output


def test_a_grant_beyond_the_policy_is_a_qualification_problem(two_roles, tmp_path):
    app, roles = two_roles
    with roles.admin.begin() as conn:
        conn.execute(sa.text(f'GRANT UPDATE, TRUNCATE ON "{roles.schema}".audit_entry TO "{roles.app}"'))
        conn.execute(sa.text(f'GRANT CREATE ON SCHEMA "{roles.schema}" TO "{roles.app}"'))
        conn.execute(sa.text(f'GRANT DELETE ON "{roles.schema}".form_submission TO "{roles.app}"'))
        conn.execute(sa.text(f'GRANT UPDATE ON SEQUENCE "{roles.schema}".user_account_id_seq TO "{roles.app}"'))
    with app.app_context():
        problems, warnings = db_roles.app_role_findings(db.session.connection())
    assert warnings == []
    assert problems == [f"the application's role {roles.app} may create objects in schema {roles.schema}",
                        f"the application's role {roles.app} may UPDATE, TRUNCATE on audit_entry",
                        f"the application's role {roles.app} may DELETE on form_submission",
                        f"the application's role {roles.app} may UPDATE (setval) sequences user_account_id_seq"]
    failed = app.test_cli_runner().invoke(args=["qualify", "--out", str(tmp_path / "iq")])
    assert failed.exit_code == 1 and f"FAIL  {ROLES_CHECK}" in failed.output
    # init puts the grants back as they should be
    assert app.test_cli_runner().invoke(args=["init"]).exit_code == 0
    with app.app_context():
        assert db_roles.app_role_findings(db.session.connection()) == ([], [])


def test_one_role_owning_the_tables_is_a_warning(roles, tmp_path, _site_material):
    app = _instance(roles.owner_url, tmp_path, _site_material)
    result = app.test_cli_runner().invoke(args=["init"])
    assert result.exit_code == 0, result.output
    assert f"WARNING: the application's role {roles.owner} owns" in result.output
    with app.app_context():
        problems, warnings = db_roles.app_role_findings(db.session.connection())
    assert problems == [] and len(warnings) == 1 and "could alter the tables and disable the guard" in warnings[0]
    qualified = app.test_cli_runner().invoke(args=["qualify", "--out", str(tmp_path / "iq")])
    assert qualified.exit_code == 0, qualified.output
    assert f"PASS  {ROLES_CHECK} (with a warning)" in qualified.output
    app.extensions["mfg.db"].engine.dispose()


@pytest.mark.parametrize("case", ["same role", "app owns the schema", "app is a member of the owner",
                                  "app is a superuser"])
def test_init_refuses_roles_that_would_not_separate_anything(roles, tmp_path, case):
    app_url = roles.owner_url if case == "same role" else roles.app_url
    with roles.admin.begin() as conn:
        if case == "app owns the schema":
            conn.execute(sa.text(f'ALTER SCHEMA "{roles.schema}" OWNER TO "{roles.app}"'))
            conn.execute(sa.text(f'GRANT ALL ON SCHEMA "{roles.schema}" TO "{roles.owner}"'))
        elif case == "app is a member of the owner":
            conn.execute(sa.text(f'GRANT "{roles.owner}" TO "{roles.app}"'))
        elif case == "app is a superuser":
            conn.execute(sa.text(f'ALTER ROLE "{roles.app}" SUPERUSER'))
    app = make_app(app_url, tmp_path, OWNER_DATABASE_URL=roles.owner_url)
    app.config["SOPS_DIR"] = str(DEMO_SOP.parent)
    result = app.test_cli_runner().invoke(args=["init"])
    assert result.exit_code == 1
    expected = {"same role": "name the same role", "app is a superuser": "is a superuser"}.get(
        case, f"owns schema {roles.schema}")
    assert expected in result.output, result.output
    with roles.admin.connect() as conn:  # refused before migrating: nothing was created
        assert conn.execute(sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = :s"),
                            {"s": roles.schema}).scalar() == 0
    app.extensions["mfg.db"].engine.dispose()


ROLES_CHECK = "The application's database role cannot alter the record's tables"


def test_an_installation_with_two_roles_qualifies_without_a_warning(two_roles, tmp_path):
    app, roles = two_roles
    result = app.test_cli_runner().invoke(args=["qualify", "--out", str(tmp_path / "iq")])
    assert result.exit_code == 0, result.output
    assert f"PASS  {ROLES_CHECK}\n" in result.output and "WARNING" not in result.output
    assert f"the application's role {roles.app} owns nothing in schema {roles.schema}" in result.output
