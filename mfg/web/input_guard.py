"""The request's NUL guard: a NUL character (U+0000) anywhere in the path, a query argument or a form field
is refused with a 400 before any view, sign-in included, reads it.

No person types a NUL, PostgreSQL cannot hold one in text (a query with it raises, which was a 500) and SQLite
would store it. The per-field rules (:mod:`mfg.domain.inputs`, applied by every form) refuse it too, with
the field's label; this guard covers what no form declares: passwords, query arguments, a field a view
reads from ``request.form`` directly, and a value sent under a name no form has.
"""

from __future__ import annotations

from flask import Flask, abort, request

NUL = "\x00"


def nul_in_request() -> str | None:
    """Where the request carries a NUL ("the field 'reason'"), or ``None`` when it carries none."""
    if NUL in request.path:
        return "the address"
    for source, values in (("query argument", request.args), ("field", request.form)):
        for name, value in values.items(multi=True):
            if NUL in name or NUL in value:
                return f"the {source} {name.replace(NUL, '')!r}"
    for name, upload in request.files.items(multi=True):
        if NUL in name or NUL in (upload.filename or ""):
            return f"the file {name.replace(NUL, '')!r}"
    return None


def _refuse_nul() -> None:
    where = nul_in_request()
    if where is not None:
        abort(400, description=f"Refused: {where} contains a NUL character (U+0000), which no entry may hold. "
                               "Nothing was stored; retype the entry.")


def init_app(app: Flask) -> None:
    """Register the guard before every other request hook (it must run before anything reads the request)."""
    app.before_request_funcs.setdefault(None, []).insert(0, _refuse_nul)
