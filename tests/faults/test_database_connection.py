"""The PostgreSQL connection lost, in the middle of a request that writes and between requests.

In-process (Flask test client) against the real PostgreSQL: the application's own backend is ended
with ``pg_terminate_backend`` from a separate administrator connection, at a chosen point of the
request (a SQLAlchemy event of the test fires once). No mocks: the server really drops the connection
and rolls its transaction back; the application sees what it would see in production.

Also a database server that is not there at all (nothing listening): no PostgreSQL needed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mfg.extensions import db
from mfg.services import audit
from tests.faults.inprocess import sign_line_clearance, start_batch
from tests.faults.live import free_port
from tests.faults.records import assert_whole_line_clearance, counts, half_written, line_clearance
from tests.support import PASSWORD

postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
WRITES = ("INSERT", "UPDATE", "DELETE")


class Terminator:
    """Ends the application connection's PostgreSQL backend once, at the action's first write statement or just
    before COMMIT (whichever the test arms), and waits until the backend is gone."""

    def __init__(self, app_engine: sa.Engine, admin_url: str):
        self.engine = app_engine
        self.admin = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
        self.armed: str | None = None
        self.terminated: list[tuple[int, str]] = []  # (backend pid, the statement it had just run)
        event.listen(app_engine, "after_cursor_execute", self._after_execute)
        event.listen(app_engine, "commit", self._before_commit)

    def close(self) -> None:
        event.remove(self.engine, "after_cursor_execute", self._after_execute)
        event.remove(self.engine, "commit", self._before_commit)
        self.admin.dispose()

    def _after_execute(self, conn, _cursor, statement, _params, _context, _executemany) -> None:
        # the action's first write: the claim of the form's one-time token (request bookkeeping, in the same
        # transaction) comes before it and is passed over
        if (self.armed == "first write" and statement.lstrip().split(None, 1)[0].upper() in WRITES
                and "form_submission" not in statement.split("(", 1)[0]):
            self._terminate(conn, statement)

    def _before_commit(self, conn) -> None:
        if self.armed == "commit":
            self._terminate(conn, "COMMIT (not yet sent)")

    def _terminate(self, conn, statement: str) -> None:
        self.armed = None
        pid = conn.connection.dbapi_connection.info.backend_pid
        with self.admin.connect() as admin:
            # with a timeout, pg_terminate_backend returns once the backend has exited
            assert admin.execute(sa.text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid}).scalar_one()
        self.terminated.append((pid, " ".join(statement.split())[:80]))


@pytest.fixture
def terminator(demo_app, database_url) -> Iterator[Terminator]:
    found = Terminator(demo_app.extensions["mfg.db"].engine, database_url)
    yield found
    found.close()


def _stored(app) -> dict[str, int]:
    with app.app_context():
        return counts(db.session.connection())


def _check_nothing_half_written(app) -> None:
    with app.app_context():
        assert half_written(db.session.connection()) == []
        assert audit.verify(db.session).ok


@postgresql_only
def test_connection_lost_after_the_first_write_is_a_503_that_stores_nothing(demo_app, terminator, client, login):
    login("olivia")
    batch_id = start_batch(client)
    before = _stored(demo_app)

    terminator.armed = "first write"
    response = sign_line_clearance(client, batch_id)

    assert len(terminator.terminated) == 1 and terminator.terminated[0][1].startswith("INSERT INTO step_execution")
    page = response.get_data(as_text=True)
    assert response.status_code == 503, page
    assert "The database is unavailable; nothing was saved." in page and "Try again" in page, page[page.find("<main>"):]
    assert response.headers["Retry-After"] == "30"
    assert _stored(demo_app) == before  # the server rolled the transaction back: no execution, value,
    with demo_app.app_context():  # signature or audit entry
        assert line_clearance(db.session.connection(), batch_id) is None

    # The next requests succeed on a new connection (the dead one was discarded), and the step can be
    # signed as if the failed attempt had never happened.
    assert client.get(f"/batches/{batch_id}").status_code == 200
    response = sign_line_clearance(client, batch_id)
    assert response.status_code == 302 and response.location.endswith(f"/batches/{batch_id}")
    with demo_app.app_context():
        conn = db.session.connection()
        olivia = conn.execute(sa.text("SELECT id FROM user_account WHERE username = 'olivia'")).scalar_one()
        assert_whole_line_clearance(conn, line_clearance(conn, batch_id), olivia)
    _check_nothing_half_written(demo_app)


@postgresql_only
def test_connection_lost_at_commit_is_a_503_that_does_not_claim_nothing_was_saved(demo_app, terminator, client,
                                                                                   login):
    """Once COMMIT may have been sent, the application cannot know whether it took effect: the page
    says so and sends the user to the record instead of promising that nothing was stored."""
    login("olivia")
    batch_id = start_batch(client)
    before = _stored(demo_app)

    terminator.armed = "commit"
    response = sign_line_clearance(client, batch_id)

    assert [statement for _, statement in terminator.terminated] == ["COMMIT (not yet sent)"]
    page = response.get_data(as_text=True)
    assert response.status_code == 503, page
    assert "nothing was saved" not in page
    assert "may or may not have been stored" in page and "check before entering anything again" in page
    # Here the backend ended before COMMIT reached it, so in fact nothing was stored.
    assert _stored(demo_app) == before
    response = sign_line_clearance(client, batch_id)
    assert response.status_code == 302, response.get_data(as_text=True)
    _check_nothing_half_written(demo_app)


@postgresql_only
def test_connections_ended_between_requests_are_replaced_unnoticed(app_factory, approved_sop, make_user,
                                                                     database_url):
    """An administrator ends every backend of the application (found by its application_name) while
    they sit idle in the pool: the next signed step succeeds (pool_pre_ping) and nothing is lost."""
    name = f"mfg-fault-{uuid.uuid4().hex[:8]}"
    url = sa.engine.make_url(database_url).update_query_dict({"application_name": name})
    app = app_factory(DATABASE_URL=url.render_as_string(hide_password=False))
    make_user("olivia", "operator", full_name="Olivia Operator")
    from datetime import date, timedelta

    from mfg.services import masterdata

    with app.app_context():
        audit.set_actor(db.session, name="test-setup")
        masterdata.add_equipment(db.session, identifier="BSC-01", equipment_type="biosafety cabinet",
                                 calibration_due=date.today() + timedelta(days=30))
        db.session.commit()
    client = app.test_client()
    assert client.post("/auth/login", data={"username": "olivia", "password": PASSWORD}).status_code == 302
    batch_id = start_batch(client)

    admin = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            ended = conn.execute(sa.text(
                "SELECT pid, pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE application_name = :n"),
                {"n": name}).all()
    finally:
        admin.dispose()
    assert ended and all(ok for _, ok in ended), ended  # the app's pooled connection(s), now dead

    response = sign_line_clearance(client, batch_id)
    assert response.status_code == 302, response.get_data(as_text=True)
    with app.app_context():
        conn = db.session.connection()
        olivia = conn.execute(sa.text("SELECT id FROM user_account WHERE username = 'olivia'")).scalar_one()
        assert_whole_line_clearance(conn, line_clearance(conn, batch_id), olivia)
    _check_nothing_half_written(app)


def test_database_server_not_there_is_a_503_page_not_a_crash(tmp_path):
    """Nothing listens where the database should be: every page that needs it answers 503 with the
    message (rendered without the database), pages that do not need it still work."""
    from mfg import create_app

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere?connect_timeout=5"
    app = create_app({"TESTING": True, "SECRET_KEY": "test-secret", "INSTANCE_PATH": tmp_path,
                      "DATABASE_URL": url, "WTF_CSRF_ENABLED": False})
    try:
        client = app.test_client()
        assert client.get("/auth/login").status_code == 200  # the sign-in form needs no database
        for response in (client.post("/auth/login", data={"username": "olivia", "password": "x" * 12}),
                         client.post("/auth/login", data={"username": "olivia", "password": "x" * 12})):
            page = response.get_data(as_text=True)
            assert response.status_code == 503, page
            assert "The database is unavailable; nothing was saved." in page
            assert "olivia" not in page
    finally:
        app.extensions["mfg.db"].engine.dispose()
