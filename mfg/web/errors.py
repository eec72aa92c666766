"""Error pages. Domain errors that escape a view become a page with their status and messages.

A database that cannot be reached or written (connection lost, server down, read-only or full file,
busy past the timeout) becomes a 503 page that says so and whether anything may have been saved. That
page is rendered without touching the database: its template uses neither ``current_user`` nor the
base layout, and the request's session is rolled back first.
"""

from __future__ import annotations

from flask import Flask, current_app, g, has_request_context, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

from ..domain.errors import DomainError

_TITLES = {400: "Request refused", 401: "Not signed in", 403: "Not permitted", 404: "Not found",
           405: "Method not allowed", 409: "Conflict", 500: "Server error"}

# What went wrong with the database, in the user's words (see ``database_problem``).
UNAVAILABLE, NOT_WRITABLE, BUSY = "unavailable", "not_writable", "busy"
_HEADLINES = {
    UNAVAILABLE: "The database is unavailable",
    NOT_WRITABLE: "The database cannot be written (it is read-only or full)",
    BUSY: "The database is busy",
}
_ADVICE = {
    UNAVAILABLE: "Try again in a moment. If this keeps happening, tell the system administrator.",
    NOT_WRITABLE: "Pages that only show records may still work. Tell the system administrator.",
    BUSY: "Try again in a moment.",
}
_TITLES_503 = {UNAVAILABLE: "Database unavailable", NOT_WRITABLE: "Database cannot be written",
               BUSY: "Database busy"}
# SQLite primary result codes (sqlite3 exceptions carry the extended code in ``sqlite_errorcode``).
# Others (SQLITE_ERROR: no such table, a syntax error...) are bugs, not outages.
_SQLITE = {3: NOT_WRITABLE,    # SQLITE_PERM
           5: BUSY,            # SQLITE_BUSY
           6: BUSY,            # SQLITE_LOCKED
           7: UNAVAILABLE,     # SQLITE_NOMEM
           8: NOT_WRITABLE,    # SQLITE_READONLY
           10: NOT_WRITABLE,   # SQLITE_IOERR (writing; reading: see _SQLITE_READ_ERRORS)
           11: UNAVAILABLE,    # SQLITE_CORRUPT
           13: NOT_WRITABLE,   # SQLITE_FULL
           14: UNAVAILABLE,    # SQLITE_CANTOPEN
           15: BUSY,           # SQLITE_PROTOCOL
           26: UNAVAILABLE}    # SQLITE_NOTADB
_SQLITE_READ_ERRORS = {266, 522}  # SQLITE_IOERR_READ, SQLITE_IOERR_SHORT_READ
# PostgreSQL SQLSTATEs, by class (first two characters) or in full.
_POSTGRESQL = {"08": UNAVAILABLE,      # connection exception
               "57": UNAVAILABLE,      # operator intervention: shutdown, backend terminated, cancelled
               "58": UNAVAILABLE,      # system error (I/O)
               "53": UNAVAILABLE,      # insufficient resources: out of memory, too many connections
               "53100": NOT_WRITABLE,  # disk full
               "25006": NOT_WRITABLE,  # read-only transaction (a standby)
               "40001": BUSY,          # serialization failure
               "40P01": BUSY,          # deadlock detected
               "55P03": BUSY}          # lock not available
_COMMIT_FLAG = "mfg.commit_attempted"  # in the WSGI environ: per request, also where app contexts nest


def _page(status: int, messages: list[str]):
    return render_template("errors/error.html", status=status, title=_TITLES.get(status, "Error"),
                           messages=messages), status


def database_problem(exc: DBAPIError) -> str | None:
    """``UNAVAILABLE``, ``NOT_WRITABLE`` or ``BUSY``; ``None`` for an error that is a bug, not an outage
    (an integrity or programming error keeps its 500 and its traceback)."""
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return UNAVAILABLE
    code = getattr(exc.orig, "sqlite_errorcode", None)
    if code is not None:
        return UNAVAILABLE if code in _SQLITE_READ_ERRORS else _SQLITE.get(code & 0xFF)
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate:
        return _POSTGRESQL.get(sqlstate, _POSTGRESQL.get(sqlstate[:2]))
    if isinstance(exc, OperationalError):
        return UNAVAILABLE  # raised by the driver itself: connection refused, closed or broken
    return None


def _note_commit(_connection: object) -> None:
    """Connection event, just before the database is asked to commit: from here on, this request
    can no longer say that nothing was saved."""
    if has_request_context():
        request.environ[_COMMIT_FLAG] = True


def _rollback_request_session() -> None:
    session = g.get("db_session")
    if session is None:
        return
    try:
        session.rollback()
    except SQLAlchemyError:  # the connection is gone: the pool discards it, the server rolled back
        current_app.logger.warning("rollback after a database error failed too", exc_info=True)


def _database_page(problem: str):
    if request.environ.get(_COMMIT_FLAG):
        outcome = (f"{_HEADLINES[problem]}, and this happened while saving: what you entered may or may not "
                   "have been stored. Open the record and check before entering anything again.")
    else:
        outcome = f"{_HEADLINES[problem]}; nothing was saved."
    # Rendered straight from the template environment: no context processor runs, so nothing loads
    # the signed-in user (which would query the database again).
    html = current_app.jinja_env.get_template("errors/database.html").render(
        status=503, title=_TITLES_503[problem], messages=[outcome, _ADVICE[problem]])
    headers = {"Retry-After": "30"} if problem in (UNAVAILABLE, BUSY) else {}
    return html, 503, headers


def init_app(app: Flask) -> None:
    event.listen(app.extensions["mfg.db"].engine, "commit", _note_commit)

    @app.errorhandler(DomainError)
    def domain_error(exc: DomainError):
        return _page(exc.http_status, exc.problems)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return _page(400, ["The form was refused: its security token is missing or invalid. "
                           "Reload the page and try again.", str(exc.description)])

    @app.errorhandler(403)
    def forbidden(_exc: HTTPException):
        return _page(403, ["Your account does not have the role this page needs. "
                           "Ask an administrator if you think it should."])

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return _page(exc.code or 500, [exc.description or ""])

    @app.errorhandler(DBAPIError)
    def database_error(exc: DBAPIError):
        problem = database_problem(exc)
        if problem is None:
            raise exc  # a bug, not an outage: Flask's 500 handling, with its traceback
        _rollback_request_session()
        current_app.logger.error("database %s on %s %s: %s", problem.replace("_", " "), request.method,
                                 request.path, str(exc.orig).strip() or type(exc.orig).__name__, exc_info=exc)
        return _database_page(problem)
