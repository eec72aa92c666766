"""Shared fixtures. Every database test runs on SQLite and, when MFG_TEST_DATABASE_URL is set, again on
PostgreSQL, each time on a database built by the real migrations (triggers included)."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import settings
from sqlalchemy.orm import Session

from mfg import create_app, db_roles
from mfg.audit_key import KEYS_INFO, read_key_ring
from mfg.extensions import db, make_engine
from mfg.migrate import upgrade
from mfg.models import User
from mfg.services import accounts, audit, sops
from tests.support import AUDIT_KEY_RING, DEMO_SOP, OWNER_URLS, PASSWORD, dispose_attacker_engine, token_client_class

PG_URL = os.environ.get("MFG_TEST_DATABASE_URL", "").strip()
# MFG_TEST_PG_TWO_ROLES=1: each PostgreSQL test database is migrated by an owner role and the tests run as an
# application role granted only what the application needs (mfg/db_roles.py, README: Two PostgreSQL roles).
PG_TWO_ROLES = os.environ.get("MFG_TEST_PG_TWO_ROLES", "").strip() not in ("", "0")
_schemas = itertools.count(1)

# Property tests keep no example database in the work tree.
settings.register_profile("mfg", database=None)
settings.load_profile("mfg")


def seal_new_trail(url: str) -> None:
    """What `flask --app mfg init` does after migrating a new database: seal its empty audit trail with the
    instance's audit key (the tests' instances all get ``AUDIT_KEY_RING``)."""
    engine = make_engine(url, poolclass=sa.pool.NullPool)
    try:
        with Session(engine, info={KEYS_INFO: read_key_ring(AUDIT_KEY_RING)}) as session:
            audit.set_actor(session, name="test-setup")
            audit.seal_existing(session)
            session.commit()
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, its empty trail sealed, copied for each test (migrating once keeps the
    suite quick)."""
    path = tmp_path_factory.mktemp("template") / "mfg.sqlite3"
    upgrade(f"sqlite:///{path}")
    seal_new_trail(f"sqlite:///{path}")
    return path


def _pg_admin_engine() -> sa.Engine:
    return sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)


def _pg_url(schema: str, role: str | None = None) -> str:
    url = sa.engine.make_url(PG_URL)
    if role is not None:
        url = url.set(username=role, password=None)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def _pg_roles() -> Iterator[tuple[str, str]]:
    """With MFG_TEST_PG_TWO_ROLES: an owner role and an application role (LOGIN, nothing else) for the test
    session, dropped at its end; the test server must let them log in as MFG_TEST_DATABASE_URL's user does."""
    owner, app = f"mfg_test_owner_{os.getpid()}", f"mfg_test_app_{os.getpid()}"
    engine = _pg_admin_engine()
    with engine.begin() as conn:
        for role in (owner, app):
            conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
    try:
        yield owner, app
    finally:
        with engine.begin() as conn:
            for role in (app, owner):
                conn.execute(sa.text(f'DROP OWNED BY "{role}" CASCADE'))
                conn.execute(sa.text(f'DROP ROLE "{role}"'))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, sqlite_template: Path, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "mfg.sqlite3"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    if not PG_URL:
        pytest.skip("MFG_TEST_DATABASE_URL is not set: PostgreSQL tests skipped")
    schema = f"mfg_test_{os.getpid()}_{next(_schemas)}"
    roles = request.getfixturevalue("_pg_roles") if PG_TWO_ROLES else None
    engine = _pg_admin_engine()
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"' + (f' AUTHORIZATION "{roles[0]}"' if roles else "")))
    url_text = _pg_url(schema)
    if roles:
        url_text = _pg_url(schema, roles[1])
        OWNER_URLS[url_text] = _pg_url(schema, roles[0])  # tests.support.attacker_engine, owner_url
        db_roles.setup(OWNER_URLS[url_text], url_text)
    else:
        upgrade(url_text)
    seal_new_trail(url_text)
    try:
        yield url_text
    finally:
        OWNER_URLS.pop(url_text, None)
        with engine.begin() as conn:
            # A connection the test leaked would make DROP wait forever: fail loudly instead.
            conn.execute(sa.text("SET lock_timeout = '20s'"))
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def make_app(database_url: str, tmp_path: Path, **overrides: object) -> Flask:
    instance = tmp_path / "instance"
    instance.mkdir(exist_ok=True)
    key_file = instance / "audit.key"
    if not key_file.exists():  # the instance's audit key ring, as `flask --app mfg init` makes it
        shutil.copy(AUDIT_KEY_RING, key_file)
        key_file.chmod(0o600)
    sops_dir = tmp_path / "sops"
    sops_dir.mkdir(exist_ok=True)
    config = {"TESTING": True, "SECRET_KEY": "test-secret", "INSTANCE_PATH": instance,
              "DATABASE_URL": database_url, "SOPS_DIR": str(sops_dir), "WTF_CSRF_ENABLED": False,
              "DOCUMENT_WORKER": False}  # tests make documents explicitly (tests/support.make_documents)
    config.update(overrides)
    app = create_app(config)
    app.test_client_class = token_client_class()
    return app


@pytest.fixture
def app_factory(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def factory(**overrides: object) -> Flask:
        app = make_app(database_url, tmp_path, **overrides)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        dispose_attacker_engine(app)
        app.extensions["mfg.db"].engine.dispose()


@pytest.fixture
def app(app_factory: Callable[..., Flask]) -> Flask:
    return app_factory()


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    """The application's session inside an app context, acting as a test fixture user."""
    with app.app_context():
        audit.set_actor(db.session, name="test-setup")
        yield db.session


@pytest.fixture
def make_user(app: Flask) -> Callable[..., User]:
    """Create and commit a user with ``PASSWORD``; returns the user (detached-safe: no expiry on commit)."""

    def factory(username: str, roles: str = "operator", *, full_name: str | None = None,
                temporary: bool = False, password: str = PASSWORD) -> User:
        with app.app_context():
            s = db.session
            audit.set_actor(s, name="test-setup")
            name = full_name or username.title() + " Person"
            if temporary:  # as an administrator makes it: the password is not the owner's, signing roles pending
                user = accounts.create_user(s, username=username, full_name=name, roles=roles, password=password,
                                            policy=accounts.Policy())
            else:  # the set-up path (accounts.create_user_at_setup): own password, roles effective
                user = accounts.create_user_at_setup(s, username=username, full_name=name, roles=roles,
                                                     password=password, policy=accounts.Policy())
            s.commit()
            return user

    return factory


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def login(client) -> Callable[..., object]:
    def do_login(username: str, password: str = PASSWORD, *, follow: bool = False):
        return client.post("/auth/login", data={"username": username, "password": password},
                           follow_redirects=follow)

    return do_login

@pytest.fixture
def sops_dir(app) -> Path:
    return Path(app.config["SOPS_DIR"])


@pytest.fixture
def approved_sop(session, make_user, sops_dir):
    """DEMO-PROC v1 loaded by one QA user and approved (signed) by another."""
    shutil.copy(DEMO_SOP, sops_dir / DEMO_SOP.name)
    loader = make_user("loader", "qa")
    approver = make_user("approver", "qa")
    session.add_all([loader, approver])
    version = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    sops.approve(session, version, site_timezone="UTC", signer=approver, password=PASSWORD, username="approver",
                 require_username=True)
    session.commit()
    return version


@pytest.fixture(scope="session")
def _site_material(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One site key and certificate per test session (RSA-3072 takes a while to generate)."""
    from mfg.reports.site_certificate import ensure_site_certificate

    directory = tmp_path_factory.mktemp("site")
    ensure_site_certificate(directory / "key.pem", directory / "cert.pem", "Test site", demo=True)
    return directory


@pytest.fixture
def site_certificate(app: Flask, _site_material: Path) -> Path:
    """The app's instance/ holds a site signing key and certificate, as `flask --app mfg init` makes them."""
    import shutil

    instance = Path(app.instance_path)
    for name, key in (("key.pem", "SIGNING_KEY_FILE"), ("cert.pem", "SIGNING_CERT_FILE")):
        target = instance / app.config[key]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(_site_material / name, target)
    return instance / app.config["SIGNING_CERT_FILE"]
