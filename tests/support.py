"""Constants and helpers shared by tests (fixtures live in conftest.py files)."""

from __future__ import annotations

from pathlib import Path

from mfg.config import RESOURCE_ROOT

PASSWORD = "correct-horse-battery"


def _test_key_ring() -> Path:
    """The audit key ring every test instance gets (tests/conftest.py make_app), its sealed databases too: two
    keys (``t1-old``, ``t2-current``), so that every test also seals with a ring of more than one key. Made
    afresh for each test run, owner-only, in a temporary folder removed at exit: no key is ever committed."""
    import atexit
    import secrets
    import shutil
    import tempfile

    from mfg.audit_key import KEY_BYTES, KeyRing

    folder = Path(tempfile.mkdtemp(prefix="mfg-test-audit-key-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    ring = folder / "audit.key"
    keys = [KeyRing.line(key_id, secrets.token_bytes(KEY_BYTES)) for key_id in ("t1-old", "t2-current")]
    ring.write_text("".join(keys), encoding="utf-8")
    ring.chmod(0o600)
    return ring


AUDIT_KEY_RING = _test_key_ring()
DEMO_SOP = RESOURCE_ROOT / "sops" / "demo" / "DEMO-PROC_v1.yaml"


# Two-role mode (MFG_TEST_PG_TWO_ROLES, tests/conftest.py): the URL of the role that owns each PostgreSQL test
# schema, by the URL the application connects with (its restricted role). Filled by the ``database_url``
# fixture for the duration of its test; empty in one-role mode and on SQLite.
OWNER_URLS: dict[str, str] = {}
_ATTACKER_ENGINE = "tests.attacker_engine"


def owner_url(database_url: str) -> str:
    """The URL of the role that owns the test database ``database_url`` names: in two-role mode the schema
    owner's (the one that migrates: downgrades, raw tampering), otherwise ``database_url`` itself (its role owns
    the tables)."""
    return OWNER_URLS.get(database_url, database_url)


def upgrade_as_owner(database_url: str) -> None:
    """Migrate the test database ``database_url`` names to the newest schema the way `flask --app mfg init`
    does: as its owner, then in two-role mode the application's role granted its privileges again (a table a
    migration created has none). For a test that downgraded the schema (as ``owner_url(database_url)``)."""
    from mfg import db_roles, migrate

    if database_url in OWNER_URLS:
        db_roles.setup(OWNER_URLS[database_url], database_url)
    else:
        migrate.upgrade(database_url)


def two_roles(app) -> bool:  # noqa: ANN001 - a Flask app
    """Whether ``app`` runs as a restricted application role, its schema owned by another (two-role mode)."""
    return app.config["DATABASE_URL"] in OWNER_URLS


def attacker_engine(app):  # noqa: ANN001, ANN201 - a Flask app; a SQLAlchemy engine
    """The engine of someone with write access to ``app``'s database, to play the attacker of issue [3.5] with
    (DROP TRIGGER, ALTER TABLE ... DISABLE TRIGGER, raw UPDATE, DELETE, INSERT beside the application).

    In two-role mode (MFG_TEST_PG_TWO_ROLES) an engine connected as the schema's OWNER role, since the
    application's restricted role is rightly refused all of that (README "Two PostgreSQL roles"); otherwise
    (SQLite, one PostgreSQL role) the application's own engine, whose role owns the tables. Made once per app,
    without a pool (no connection outlives its ``with`` block); ``dispose_attacker_engine`` disposes it, as the
    ``app_factory`` fixture does at teardown. A test that checks what the APPLICATION may not do keeps the
    application's engine, ``app.extensions["mfg.db"].engine``, and expects ``app_refusal(app)``."""
    engine = app.extensions.get(_ATTACKER_ENGINE)
    if engine is None:
        url = app.config["DATABASE_URL"]
        if url in OWNER_URLS:
            from sqlalchemy.pool import NullPool

            from mfg.extensions import make_engine

            engine = make_engine(OWNER_URLS[url], poolclass=NullPool)
        else:
            engine = app.extensions["mfg.db"].engine
        app.extensions[_ATTACKER_ENGINE] = engine
    return engine


def dispose_attacker_engine(app) -> None:  # noqa: ANN001 - a Flask app
    """Dispose the engine ``attacker_engine`` made for ``app``, if it made one of its own."""
    engine = app.extensions.pop(_ATTACKER_ENGINE, None)
    if engine is not None and engine is not app.extensions["mfg.db"].engine:
        engine.dispose()


def app_refusal(app, operation: str, table: str) -> str:  # noqa: ANN001 - a Flask app
    """What refuses the APPLICATION's role ``operation`` (UPDATE, DELETE) on guarded ``table``, as a pattern for
    ``pytest.raises(match=...)``: in two-role mode PostgreSQL's privileges when its grants lack the operation
    (``mfg.db_roles.table_privileges``: no DELETE anywhere, no UPDATE on append-only tables), before any
    trigger runs; otherwise the guard trigger."""
    from mfg import db_roles

    if two_roles(app) and operation not in db_roles.table_privileges(table):
        return f"permission denied for table {table}"
    return "GMP record guard"


def drop_guards(engine, *tables: str) -> None:  # noqa: ANN001 - a SQLAlchemy engine
    """What an attacker with database access does first, on ``engine`` (``attacker_engine``: with two PostgreSQL
    roles the schema owner's): put the guard triggers of ``tables`` out of the way (dropped on SQLite, disabled
    on PostgreSQL)."""
    import sqlalchemy as sa

    with engine.begin() as conn:
        for table in tables:
            if engine.dialect.name == "sqlite":
                for (name,) in conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                                    "AND tbl_name = :table"), {"table": table}):
                    conn.execute(sa.text(f"DROP TRIGGER {name}"))
            else:
                conn.execute(sa.text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))


def drop_audit_update_guard(app):  # noqa: ANN001, ANN201 - a Flask app; a SQLAlchemy engine
    """What an attacker with database access would do first: drop the trigger that refuses UPDATE on
    audit entries (SQLite has one per operation, PostgreSQL one for UPDATE and DELETE), as the attacker
    (``attacker_engine(app)``, returned for the rest of the forgery)."""
    import sqlalchemy as sa

    engine = attacker_engine(app)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER audit_entry_refuse_update" if engine.dialect.name == "sqlite" else
                             "DROP TRIGGER audit_entry_refuse_change ON audit_entry"))
    return engine


def documents_worker(app, site, *, demo: bool = True, lease_seconds: float = 120.0):  # noqa: ANN001, ANN201
    """The documents worker's settings for a test app, signing with ``site`` (mfg/document_worker.py)."""
    from mfg import document_worker
    from mfg.extensions import db
    from mfg.services import accounts

    return document_worker.Settings(new_session=lambda: db.new_session(app), policy=accounts.Policy(),
                                    site=lambda: site, demo=demo, lease_seconds=lease_seconds)


def make_documents(app, site, *, demo: bool = True) -> list:  # noqa: ANN001
    """Run the documents worker as an app server's thread does, until no job is left; the documents made."""
    from mfg import document_worker

    outcomes = document_worker.run_pending(documents_worker(app, site, demo=demo))
    assert outcomes and all(o.documents for o in outcomes), outcomes
    return [d for o in outcomes for d in o.documents]


# A demo batch recorded this many days back: its 14-day results (and the preliminary read) can be read today.
DAYS_BACK = 15


def recorded_back():  # noqa: ANN201 - (the moment the recorded process ends, its date)
    from datetime import timedelta

    from mfg.models import utcnow

    ended = utcnow() - timedelta(days=DAYS_BACK)
    return ended, ended.date()


def settle_pending_results(session, batch, *, enterer, verifier, tz) -> list:  # noqa: ANN001
    """Enter every pending result of a conditionally released demo batch with its negative answer (as
    ``enterer``) and have ``verifier`` verify each: the final results, within specification."""
    from mfg.demo.scenarios import NEGATIVE
    from mfg.services import results

    owed = [p for p in results.of_batch(session, batch) if p.status == "pending"]
    for pending in owed:
        answers = results.answers(results.field_of(session, pending)) or []
        answer = next(a for a in NEGATIVE.values() if a in answers)
        results.enter_result(session, pending, raw=answer, comment="", signer=enterer, password=PASSWORD,
                             username=enterer.username, require_username=True, tz=tz)
    for pending in owed:
        results.verify_result(session, pending, signer=verifier, password=PASSWORD, username=verifier.username,
                              require_username=True)
    return owed

def assert_audit_intact(session) -> None:  # noqa: ANN001 - a SQLAlchemy session
    """What `flask --app mfg audit verify` checks: the chain and its seal, and every audited row holding what the
    trail says (issue [3.5] item 3)."""
    from mfg.services import audit, audit_state

    result = audit.verify(session)
    assert result.ok, result
    state = audit_state.check(session)
    assert state.ok and state.rows_checked > 0, state.lines()


def token_client_class():  # noqa: ANN201 - a FlaskClient subclass
    """The test client every test app gets (tests/conftest.py make_app): like a browser running
    ``mfg/static/once.js``, it puts a fresh one-time submission token in each POST's form that carries none
    (``mfg.web.security.SUBMISSION_FIELD``), never in the caller's own dict. A test that sends a token itself
    keeps it (a double tap, a replay). The application refuses a POST without a token
    (tests/web/test_races_web.py checks that with a plain ``FlaskClient``)."""
    import secrets

    from flask.testing import FlaskClient
    from werkzeug.datastructures import MultiDict

    from mfg.web.security import SUBMISSION_FIELD

    class TokenClient(FlaskClient):
        def open(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if kwargs.get("method", "GET").upper() == "POST" and "json" not in kwargs:
                data = kwargs.get("data")
                if data is None:
                    kwargs["data"] = {SUBMISSION_FIELD: secrets.token_hex(16)}
                elif isinstance(data, MultiDict):
                    if SUBMISSION_FIELD not in data:
                        data = data.copy()
                        data.add(SUBMISSION_FIELD, secrets.token_hex(16))
                        kwargs["data"] = data
                elif isinstance(data, dict) and SUBMISSION_FIELD not in data:
                    kwargs["data"] = {**data, SUBMISSION_FIELD: secrets.token_hex(16)}
            return super().open(*args, **kwargs)

    return TokenClient


def open_level(session, clinical_user, level: str, password: str = PASSWORD) -> None:  # noqa: ANN001
    """Sign the escalation decisions (as ``clinical_user``) that open ``level`` with room in its cohort, as the
    demo does (``demo.nk_batch.open_dose_level``): dose planning refuses any level no signed decision opened."""
    from mfg.demo.nk_batch import open_dose_level

    open_dose_level(session, clinical_user, password, level)


def eligible_enrolment(session, today=None) -> dict:  # noqa: ANN001 - a Session and a date
    """The screening arguments of ``clinical.enrol_subject`` for an eligible subject under the effective trial
    configuration, signed by the enrolling user with ``PASSWORD`` (none when it sets no subject eligibility)."""
    from datetime import date

    from mfg.demo.nk_batch import eligible_screening
    from mfg.services import sops

    criteria = sops.trial_configuration(session).subject_eligibility
    if criteria is None:
        return {}
    return {"screening": eligible_screening(criteria, today or date.today()), "password": PASSWORD,
            "username": None, "require_username": False}


def enrolment_form(session, today=None, prefix: str = "subject") -> dict[str, str]:  # noqa: ANN001
    """The enrolment form's screening fields for an eligible subject under the effective trial configuration
    (none when it sets no subject eligibility); the caller adds code, donor, weight and the password."""
    from datetime import date

    from mfg.demo.nk_batch import eligible_screening
    from mfg.services import sops

    criteria = sops.trial_configuration(session).subject_eligibility
    if criteria is None:
        return {}
    screening = eligible_screening(criteria, today or date.today())
    data = {f"{prefix}-age_years": screening.age_years, f"{prefix}-ecog": screening.ecog,
            f"{prefix}-first_treatment_on": str(screening.first_treatment_on)}
    for code, (value, uln, measured_on) in screening.labs.items():
        data[f"{prefix}-lab_{code}_value"] = value
        data[f"{prefix}-lab_{code}_uln"] = uln
        data[f"{prefix}-lab_{code}_on"] = str(measured_on or "")
    for code, answer in screening.exclusions.items():
        data[f"{prefix}-exclusion_{code}"] = "yes" if answer else "no"
    return data
