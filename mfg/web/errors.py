"""Error pages. Domain errors that escape a view become a page with their status and messages."""

from __future__ import annotations

from flask import Flask, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from ..domain.errors import DomainError

_TITLES = {400: "Request refused", 401: "Not signed in", 403: "Not permitted", 404: "Not found",
           405: "Method not allowed", 409: "Conflict", 500: "Server error"}


def _page(status: int, messages: list[str]):
    return render_template("errors/error.html", status=status, title=_TITLES.get(status, "Error"),
                           messages=messages), status


def init_app(app: Flask) -> None:
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
