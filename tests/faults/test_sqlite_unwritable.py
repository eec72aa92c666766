"""A SQLite database that cannot be written: a read-only file, a full disk.

The file is made read-only the way that works for every user, root included (root ignores file
permissions): it is opened through SQLite's ``mode=ro`` URI (and chmod 0444 as well, which binds an
ordinary user). A full disk is SQLite's own SQLITE_FULL ("database or disk is full"), produced by
``PRAGMA max_page_count`` on the application's connections over a file whose free pages were
vacuumed away, with a write bigger than any page.

Each time: a 503 page that says the database cannot be written and nothing was saved, nothing stored,
pages that only read still work, and the server keeps serving (same gunicorn master and workers).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mfg.extensions import db
from mfg.services import audit
from tests.faults.inprocess import sign_line_clearance, start_batch
from tests.faults.live import OPERATOR_PASSWORD, Client, Gunicorn, alive
from tests.faults.records import assert_whole_line_clearance, counts, half_written, line_clearance

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
NOT_WRITABLE = "The database cannot be written (it is read-only or full); nothing was saved."
SQLITE_MAX_PAGES = 1073741823  # SQLite's default max_page_count


def _path(database_url: str) -> Path:
    return Path(sa.engine.make_url(database_url).database)


def read_only_url(path: Path) -> str:
    return f"sqlite:///file:{path}?mode=ro&uri=true"


@pytest.fixture
def read_only_file(database_url: str) -> Iterator[Path]:
    """The test's SQLite file, chmod 0444 for the duration (restored for the fixture's clean-up)."""
    path = _path(database_url)
    mode = path.stat().st_mode
    yield path
    path.chmod(stat.S_IMODE(mode))


def _make_read_only(path: Path) -> None:
    path.chmod(0o444)
    if os.geteuid() != 0:  # root writes through permissions; the mode=ro URI binds it too
        with pytest.raises(PermissionError):
            open(path, "r+b").close()


@sqlite_only
def test_read_only_database_under_gunicorn_answers_503_for_writes_and_keeps_serving_reads(
        live_instance, read_only_file, inspect_engine, tmp_path):
    log = tmp_path / "gunicorn.log"
    operator = live_instance.operators[0]
    # Before: an operator signed in, with a batch started, on the writable database.
    with Gunicorn(live_instance.path, live_instance.database_url, log) as server:
        client = Client(server.port)
        client.sign_in(operator)
        batch_id = client.start_batch()
        server.stop()  # SIGTERM: the workers finish and close the database
    with inspect_engine.connect() as conn:
        before = counts(conn)

    _make_read_only(read_only_file)
    with Gunicorn(live_instance.path, read_only_url(read_only_file), log, port=client.port) as server:
        # the same browser session, at the same address, now served from the read-only database
        master, workers = server.pid, server.workers()
        for path in ("/batches/", f"/batches/{batch_id}", f"/batches/{batch_id}/step/0/line_clearance/1"):
            status, _, page = client.request("GET", path)
            assert status == 200, (path, page[:500])

        status, location, page = client.sign_line_clearance(batch_id)
        assert status == 503, (status, location, page[:800])
        assert NOT_WRITABLE in page and "Tell the system administrator" in page
        status, _, page = client.request("POST", "/batches/start", {"csrf_token": client.csrf, "code": "DEMO-PROC"})
        assert status == 503 and NOT_WRITABLE in page
        newcomer = Client(server.port)  # signing in writes the audit trail: refused the same way
        status, _, page = newcomer.request("GET", "/auth/login")
        assert status == 200
        status, _, page = newcomer.request("POST", "/auth/login", {
            "csrf_token": newcomer.scrape_csrf(page), "username": live_instance.operators[1],
            "password": OPERATOR_PASSWORD})
        assert status == 503 and NOT_WRITABLE in page

        for _ in range(3):  # and the server goes on serving, with the same processes
            status, _, page = client.request("GET", f"/batches/{batch_id}")
            assert status == 200 and "Line clearance" in page
        assert server.workers() == workers and alive(master)
        log_text = server.log_text()
        assert log_text.count("Booting worker") == 2 + 2  # the first server's two, these two: no restart
        assert "database not writable on POST /batches/" in log_text  # each refusal is logged
        assert "attempt to write a readonly database" in log_text

    assert read_only_file.stat().st_mode & 0o222 == 0
    with inspect_engine.connect() as conn:
        assert counts(conn) == before  # nothing stored, not even an audit entry
        assert line_clearance(conn, batch_id) is None
        assert half_written(conn) == []


def _rollback_journal_copy(source: Path, target: Path) -> None:
    """A copy in rollback-journal mode (as an older copy or backup may be): read-only, it cannot be
    switched to WAL."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")


@sqlite_only
def test_read_only_database_not_in_wal_mode_still_serves_reads(demo_app, app_factory, client, login, tmp_path):
    """``make_engine`` switches every SQLite connection to WAL; on a read-only file that is not in WAL
    mode the switch itself fails. The connection must still be usable for reading."""
    login("olivia")
    batch_id = start_batch(client)
    copy = tmp_path / "journal-mode-delete.sqlite3"
    _rollback_journal_copy(_path(demo_app.config["DATABASE_URL"]), copy)
    _make_read_only(copy)

    read_only = app_factory(DATABASE_URL=read_only_url(copy))
    reader = read_only.test_client()
    cookie = demo_app.config["SESSION_COOKIE_NAME"]
    reader.set_cookie(cookie, client.get_cookie(cookie).value)  # the same browser session
    with read_only.app_context():
        assert db.session.execute(sa.text("PRAGMA journal_mode")).scalar_one() == "delete"
        before = counts(db.session.connection())
    for path in ("/batches/", f"/batches/{batch_id}"):
        response = reader.get(path)
        assert response.status_code == 200, (path, response.get_data(as_text=True)[:500])
    response = sign_line_clearance(reader, batch_id)
    assert response.status_code == 503 and NOT_WRITABLE in response.get_data(as_text=True)
    assert reader.get(f"/batches/{batch_id}").status_code == 200
    with read_only.app_context():
        assert counts(db.session.connection()) == before


class DiskFull:
    """While ``full``, no connection of the application may grow the file by one page: before each
    statement, ``PRAGMA max_page_count`` follows ``full`` (it cannot go below the current size, so 1
    means: as it is now)."""

    def __init__(self, engine: sa.Engine):
        self.engine, self.full = engine, False
        event.listen(engine, "before_cursor_execute", self._before_execute)

    def _before_execute(self, conn, _cursor, _statement, _params, _context, _executemany) -> None:
        dbapi_connection = conn.connection.dbapi_connection
        if conn.connection.info.get("disk_full", False) != self.full:
            dbapi_connection.execute(f"PRAGMA max_page_count = {1 if self.full else SQLITE_MAX_PAGES}").close()
            conn.connection.info["disk_full"] = self.full

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before_execute)


@sqlite_only
def test_full_disk_is_a_503_that_stores_nothing_and_reads_go_on(demo_app, client, login):
    login("olivia")
    batch_id = start_batch(client)
    engine = demo_app.extensions["mfg.db"].engine
    engine.dispose()
    with engine.connect() as conn:  # no free pages left to reuse: any growth needs a new page
        conn.exec_driver_sql("VACUUM")
        assert conn.exec_driver_sql("PRAGMA freelist_count").scalar_one() == 0
        before = counts(conn)
    disk = DiskFull(engine)
    try:
        disk.full = True
        # 8,000 characters of comments: more than a page (4,096 bytes) for the audit trail alone
        response = sign_line_clearance(client, batch_id, comments="Observed and noted. " * 100)
        page = response.get_data(as_text=True)
        assert response.status_code == 503, page
        assert NOT_WRITABLE in page and "Pages that only show records may still work" in page
        assert "Retry-After" not in response.headers  # retrying will not help: an administrator must act
        assert client.get(f"/batches/{batch_id}").status_code == 200  # reads still work
        assert client.get("/batches/").status_code == 200
        with engine.connect() as conn:
            assert counts(conn) == before
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"

        disk.full = False  # space freed: the same submission now succeeds, whole
        response = sign_line_clearance(client, batch_id, comments="Observed and noted. " * 100)
        assert response.status_code == 302, response.get_data(as_text=True)
    finally:
        disk.close()
    with demo_app.app_context():
        conn = db.session.connection()
        olivia = conn.execute(sa.text("SELECT id FROM user_account WHERE username = 'olivia'")).scalar_one()
        assert_whole_line_clearance(conn, line_clearance(conn, batch_id), olivia)
        assert half_written(conn) == []
        assert audit.verify(db.session).ok
