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


def drop_audit_update_guard(engine) -> None:  # noqa: ANN001 - a SQLAlchemy engine
    """What an attacker with database access would do first: drop the trigger that refuses UPDATE on
    audit entries (SQLite has one per operation, PostgreSQL one for UPDATE and DELETE)."""
    import sqlalchemy as sa

    with engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER audit_entry_refuse_update" if engine.dialect.name == "sqlite" else
                             "DROP TRIGGER audit_entry_refuse_change ON audit_entry"))


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
