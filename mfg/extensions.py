"""Extensions, created unbound and bound to an application in ``create_app``.

``db`` is a small session manager rather than Flask-SQLAlchemy: one engine per application, one
session per application context, closed (and so rolled back unless committed) when the context ends.
Services receive the session as an argument and flush; the view or CLI command commits once.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from flask import Flask, current_app, g
from flask_login import LoginManager
from flask_wtf import CSRFProtect
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from .audit_key import KEYS_INFO, KeyFile
from .files import owner_only

log = logging.getLogger(__name__)
_SQLITE_READONLY = 8


def make_engine(url: str, **options: object) -> sa.Engine:
    """Create an engine with the project's connection rules.

    SQLite: the database file owner-only (``files.owner_only``); foreign keys on, WAL journal and a busy
    timeout at every connection, so that concurrent
    writers wait for each other instead of failing at once. A read-only file that is not yet in WAL
    mode cannot be switched: it is still opened, to be read (writes then fail and the error page says
    so). PostgreSQL goes through psycopg 3.
    """
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:") and Path(database).parent.is_dir():
            owner_only(Path(database))  # before SQLite creates it (its -wal and -shm files take its mode)
        engine = sa.create_engine(url, connect_args={"timeout": 30}, **options)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF != _SQLITE_READONLY:
                    raise
                log.warning("SQLite database %s is read-only and not in WAL mode: opened for reading only",
                            engine.url.database)
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, **options)


@dataclass
class _DatabaseState:
    engine: sa.Engine
    sessionmaker: sessionmaker[Session]


class Database:
    def init_app(self, app: Flask) -> None:
        engine = make_engine(app.config["DATABASE_URL"])
        # Every session carries the audit key ring's source: the services seal the audit head with it.
        keys = KeyFile(Path(app.instance_path) / app.config["AUDIT_KEY_FILE"])
        app.extensions["mfg.db"] = _DatabaseState(engine, sessionmaker(engine, expire_on_commit=False,
                                                                       info={KEYS_INFO: keys}))
        app.teardown_appcontext(self._close)

    @staticmethod
    def _state(app: Flask | None = None) -> _DatabaseState:
        return (app or current_app).extensions["mfg.db"]

    @property
    def engine(self) -> sa.Engine:
        return self._state().engine

    @property
    def session(self) -> Session:
        """The session of the current application context, created on first use."""
        if "db_session" not in g:
            g.db_session = self._state().sessionmaker()
        return g.db_session

    def new_session(self, app: Flask | None = None) -> Session:
        """A session outside the request's (for tests, threads and background work)."""
        return self._state(app).sessionmaker()

    @staticmethod
    def _close(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


db = Database()
csrf = CSRFProtect()
login_manager = LoginManager()
