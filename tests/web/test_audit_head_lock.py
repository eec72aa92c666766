"""A signed step locks the audit head once, at the end of its transaction (issue 18 item 8).

Every audited change appends to the one audit chain through its head row (``services.audit``), and the lock
on that row is held until COMMIT: on PostgreSQL, every statement run after the lock makes every other signature
of the site wait. So the entries of a transaction are appended once, at commit: the head is locked by one
UPDATE, followed by the entries' INSERT and the UPDATE that seals the new head, then the commit. The statement
count is deterministic, so it is asserted (how long a signature takes under load is bench/load.py's to measure).
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from mfg.extensions import db
from mfg.models import AuditEntry
from mfg.services import audit

from .test_batches_web import _clearance, _start, demo  # noqa: F401 - the fixture

HEAD_LOCK = re.compile(r"^\s*UPDATE audit_head SET seq=audit_head\.seq\b.*\bRETURNING\b", re.S | re.I)
ENTRY_INSERT = re.compile(r"^\s*INSERT INTO audit_entry\b", re.I)
HEAD_SEAL = re.compile(r"^\s*UPDATE audit_head SET seq=%\(seq\)s|^\s*UPDATE audit_head SET seq=\?", re.I)


def _statements(app, action) -> list[str]:
    """The statements ``action`` runs on the application's engine, with "COMMIT" and "ROLLBACK" where the
    transactions end (those are no cursor statements: the connection events say where)."""
    engine = app.extensions["mfg.db"].engine
    seen: list[str] = []

    def statement(conn, cursor, text, parameters, context, executemany):  # noqa: ANN001
        seen.append(text)

    def commit(conn):  # noqa: ANN001
        seen.append("COMMIT")

    def rollback(conn):  # noqa: ANN001
        seen.append("ROLLBACK")

    listeners = [("before_cursor_execute", statement), ("commit", commit), ("rollback", rollback)]
    for name, fn in listeners:
        sa.event.listen(engine, name, fn)
    try:
        action()
    finally:
        for name, fn in listeners:
            sa.event.remove(engine, name, fn)
    return seen


def _under_lock(seen: list[str]) -> list[list[str]]:
    """For each transaction that locked the head: the statements from the lock to its end."""
    held, current = [], None
    for text in seen:
        if current is None and HEAD_LOCK.search(text):
            current = [text]
        elif current is not None and text in ("COMMIT", "ROLLBACK"):
            held.append(current)
            current = None
        elif current is not None:
            current.append(text)
    assert current is None, "a transaction that locked the audit head did not end"
    return held


def test_a_signed_step_locks_the_audit_head_once_for_its_entries_and_the_seal(demo, client, login):  # noqa: F811
    login("olivia")
    batch_id = _start(client)
    with demo.app_context():
        before = db.session.scalar(sa.select(sa.func.max(AuditEntry.seq)))
    responses = []
    seen = _statements(demo, lambda: responses.append(client.post(f"/batches/{batch_id}/step/0/line_clearance/1",
                                                                  data=_clearance())))
    assert responses[0].status_code == 302, responses[0].get_data(as_text=True)
    locks = [text for text in seen if HEAD_LOCK.search(text)]
    held = _under_lock(seen)
    with demo.app_context():
        after = db.session.scalar(sa.select(sa.func.max(AuditEntry.seq)))
        assert audit.verify(db.session).ok
    assert after - before >= 5  # the execution, its values, the signature...: all in the one append
    # (before: 4 locks, 20 statements from the first to the commit on PostgreSQL, 22 on SQLite)
    assert len(locks) == 1 and len(held) == 1, [[" ".join(text.split())[:100] for text in h] for h in held]
    (statements,) = held
    assert len(statements) == 3 and ENTRY_INSERT.search(statements[1]) and HEAD_SEAL.search(statements[2]), held
