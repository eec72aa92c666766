"""The audit trail: written for every GMP change, append-only in the database, tamper-evident."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from mfg.audit_key import AuditKeyError
from mfg.domain.audit_state import redact
from mfg.domain.errors import DomainError
from mfg.models import AuditEntry, Signature, User
from mfg.services import accounts, audit
from tests.support import PASSWORD, app_refusal, attacker_engine


def _entries(session):
    return list(session.scalars(sa.select(AuditEntry).order_by(AuditEntry.seq)))


def test_create_and_update_are_audited_with_before_after_and_reason(session, make_user):
    user = make_user("olivia")
    session.add(user)
    accounts.set_roles(session, session.get(User, user.id), roles="operator,qa", full_name="Olivia Op",
                       reason="promoted to QA", policy=accounts.Policy(two_person_grants=False))
    session.commit()
    created, updated = _entries(session)[-2:]
    assert created.action == "user_account.create" and created.entity_id == str(user.id)
    assert json.loads(created.after)["username"] == "olivia"
    # the password hash is recorded by its digest alone (what audit verify's state check compares)
    assert json.loads(created.after)["password_hash"] == redact(session.get(User, user.id).password_hash)
    assert user.password_hash not in created.after
    assert updated.action == "user_account.update"
    assert json.loads(updated.before) == {"roles": "operator", "full_name": "Olivia Person"}
    assert json.loads(updated.after) == {"roles": "operator,qa", "full_name": "Olivia Op"}
    assert updated.reason == "promoted to QA"
    assert updated.username == "test-setup"
    assert audit.verify(session).ok


def test_deleting_an_audited_record_is_refused_by_the_application(session, make_user):
    user = session.get(User, make_user("olivia").id)
    session.delete(user)
    with pytest.raises(DomainError, match="never deleted"):
        session.flush()


@pytest.mark.parametrize(("statement", "operation", "table"), [
    ("UPDATE audit_entry SET reason = 'rewritten'", "UPDATE", "audit_entry"),
    ("DELETE FROM audit_entry", "DELETE", "audit_entry"),
    ("UPDATE signature SET meaning = 'verified'", "UPDATE", "signature"),
    ("DELETE FROM signature", "DELETE", "signature"),
    ("DELETE FROM user_account", "DELETE", "user_account"),
    ("UPDATE sop_version SET content = 'changed'", "UPDATE", "sop_version"),  # granted: the trigger refuses
    ("DELETE FROM sop_version", "DELETE", "sop_version"),
])
def test_database_triggers_refuse_rewriting_history(app, session, make_user, approved_sop, statement, operation,
                                                    table):
    """The guard triggers refuse it even to whoever may write the tables (with two PostgreSQL roles, the
    schema's owner); the application's own role is refused as well: by the trigger, or with two roles by its
    privileges, before any trigger runs."""
    assert session.scalar(sa.select(sa.func.count()).select_from(Signature)) == 1
    with pytest.raises(DatabaseError, match="GMP record guard"):
        with attacker_engine(app).begin() as conn:
            conn.execute(sa.text(statement))
    with pytest.raises(DatabaseError, match=app_refusal(app, operation, table)):
        with app.extensions["mfg.db"].engine.begin() as conn:
            conn.execute(sa.text(statement))


def _drop_guards(engine):
    """What an attacker with database access would do first, on ``engine``: the attacker's
    (``tests.support.attacker_engine``)."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for (name,) in conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                                "AND tbl_name = 'audit_entry'")):
                conn.execute(sa.text(f"DROP TRIGGER {name}"))
        else:
            conn.execute(sa.text("DROP TRIGGER audit_entry_refuse_change ON audit_entry"))


@pytest.fixture
def trail(app, session, make_user):
    """A trail of a handful of entries, with the table's guards dropped."""
    for name in ("ann", "bob", "cat"):
        make_user(name)
    result = audit.verify(session)
    assert result.ok and result.checked == 3
    session.rollback()  # end the read transaction: DROP TRIGGER waits for every lock on the table
    engine = attacker_engine(app)
    _drop_guards(engine)
    return engine


def test_verify_catches_an_altered_entry(session, trail):
    with trail.begin() as conn:
        conn.execute(sa.text("UPDATE audit_entry SET after = replace(after, 'bob', 'eve') WHERE seq = 2"))
    result = audit.verify(session)
    assert not result.ok and result.bad_seq == 2 and "altered" in result.problem


def test_verify_catches_a_deleted_entry(session, trail):
    with trail.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_entry WHERE seq = 2"))
    result = audit.verify(session)
    assert not result.ok and result.bad_seq == 2 and "missing" in result.problem


def test_verify_catches_a_deleted_last_entry(session, trail):
    with trail.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_entry WHERE seq = 3"))
    result = audit.verify(session)
    assert not result.ok and "removed" in result.problem


def test_verify_catches_an_inserted_entry(session, trail):
    with trail.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO audit_entry (seq, occurred_at, user_id, username, action, entity_type, entity_id, "
            "before, after, reason, prev_hash, entry_hash) SELECT 4, occurred_at, user_id, username, "
            "'user_account.update', entity_type, entity_id, NULL, '{\"roles\":\"qa\"}', reason, entry_hash, "
            "entry_hash FROM audit_entry WHERE seq = 3"))
    result = audit.verify(session)
    assert not result.ok and result.bad_seq == 4


def test_verify_catches_a_renumbered_chain(session, trail):
    """Deleting an entry and renumbering the rest still breaks the link of the next entry."""
    with trail.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_entry WHERE seq = 2"))
        conn.execute(sa.text("UPDATE audit_entry SET seq = 2 WHERE seq = 3"))
    result = audit.verify(session)
    assert not result.ok and result.bad_seq == 2


def test_concurrent_appends_never_fork_the_chain(app, make_user):
    """Real threads and connections: every append is serialised by the head row lock."""
    import threading

    from mfg.extensions import db

    errors = []

    def worker(i):
        try:
            with app.app_context():
                s = db.new_session()
                audit.set_actor(s, name=f"thread-{i}")
                for j in range(3):
                    audit.record_event(s, "test.event", details={"i": i, "j": j})
                    s.commit()
                s.close()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with app.app_context():
        s = db.new_session()
        result = audit.verify(s)
        s.close()
    assert result.ok and result.checked == 12


def test_a_change_without_an_actor_is_refused(app):
    from mfg.extensions import db

    with app.app_context():
        s = db.new_session()
        s.add(User(username="x", full_name="X", roles="qa", password_hash="h",
                   password_changed_at=accounts.utcnow()))
        with pytest.raises(RuntimeError, match="without an actor"):
            s.flush()
        s.rollback()


def test_search_filters_and_paginates_newest_first(session, make_user):
    for i in range(7):
        make_user(f"user{i}")
    page, cursor = audit.search(session, audit.AuditFilter(action="user_account.create"), limit=3)
    assert [e.seq for e in page] == [7, 6, 5] and cursor == 5
    page, cursor = audit.search(session, audit.AuditFilter(action="user_account"), before_seq=cursor, limit=3)
    assert [e.seq for e in page] == [4, 3, 2] and cursor == 2
    page, cursor = audit.search(session, audit.AuditFilter(), before_seq=cursor, limit=3)
    assert [e.seq for e in page] == [1] and cursor is None
    page, _ = audit.search(session, audit.AuditFilter(entity_type="user_account", entity_id="3"))
    assert [e.seq for e in page] == [3]
    assert audit.search(session, audit.AuditFilter(username="nobody"))[0] == []


def _pages(session, filters, limit=2):
    seqs, cursor = [], None
    while True:
        page, cursor = audit.search(session, filters, before_seq=cursor, limit=limit)
        seqs += [entry.seq for entry in page]
        if cursor is None:
            return seqs


@pytest.mark.parametrize("days", [(1, 3, 3, 5, 6), (1, 3, 5, 2, 4, 6, 7)], ids=["in-order", "clock-set-back"])
def test_a_date_range_finds_exactly_its_entries(session, make_user, monkeypatch, days):
    """Every date range, open or closed, pages through exactly its entries newest first, whether the
    entries' times follow their order (the range is found through the time index) or the server clock was
    set back (day 5, then day 2: the range is counted), and verify passes on both trails."""
    start = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
    for i, day in enumerate(days):
        monkeypatch.setattr(audit, "utcnow", lambda day=day: start + timedelta(days=day))
        make_user(f"user{i}")
    entries = _entries(session)
    assert len(entries) == len(days) and audit.verify(session).ok
    bounds = [None] + [start.replace(hour=0, minute=0) + timedelta(days=day) for day in range(9)]
    for since in bounds:
        for until in bounds:
            expected = [e.seq for e in reversed(entries)
                        if (since is None or e.occurred_at >= since) and (until is None or e.occurred_at < until)]
            assert _pages(session, audit.AuditFilter(since=since, until=until)) == expected, (since, until)
            assert _pages(session, audit.AuditFilter(since=since, until=until, username="test-setup")) == expected


def test_verify_catches_a_head_that_hides_the_clock_going_back(app, session, make_user, monkeypatch):
    """The audit trail screen trusts the head's record of the trail's times; clearing it would hide entries
    from a date range, so verify compares it with the entries."""
    start = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
    for i, day in enumerate((3, 1)):
        monkeypatch.setattr(audit, "utcnow", lambda day=day: start + timedelta(days=day))
        make_user(f"user{i}")
    assert audit.verify(session).ok
    session.rollback()
    with attacker_engine(app).begin() as conn:
        conn.execute(sa.text("UPDATE audit_head SET unordered_at = NULL"))
    result = audit.verify(session)
    assert not result.ok and "record of the trail's times" in result.problem


def test_login_events_are_audited(session, make_user):
    make_user("olivia")
    policy = accounts.Policy()
    accounts.authenticate(session, "olivia", PASSWORD, policy)
    user = accounts.get_by_username(session, "olivia")
    accounts.record_sign_out(session, user)
    accounts.record_sign_out(session, user, reason="timeout")
    session.commit()
    actions = [e.action for e in _entries(session)]
    assert actions[-4:] == ["user_account.update", "login.success", "logout", "session.timeout"]


GUARDED = {"audit_entry": {"UPDATE", "DELETE"}, "signature": {"UPDATE", "DELETE"},
           "recorded_value": {"UPDATE", "DELETE"}, "signature_invalidation": {"UPDATE", "DELETE"},
           "batch_master_record": {"UPDATE", "DELETE"}, "audit_head": {"DELETE"}, "user_account": {"DELETE"},
           "sop_version": {"DELETE", "UPDATE"}, "equipment": {"DELETE"}, "material_lot": {"DELETE"},
           "batch": {"DELETE"}, "step_execution": {"DELETE"}, "deviation": {"DELETE"}, "donor": {"DELETE"},
           "donor_test": {"DELETE"}, "subject": {"DELETE"}, "custody_event": {"UPDATE", "DELETE"},
           "product_bag": {"UPDATE", "DELETE"}, "review_mark": {"UPDATE", "DELETE"},
           "batch_decision": {"UPDATE", "DELETE"}, "document_revision": {"UPDATE", "DELETE"}}


def test_every_guard_survives_the_migrations(app):
    """SQLite drops a table's triggers when a migration rebuilds it: every guard must still be there."""
    engine = app.extensions["mfg.db"].engine
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(sa.text("SELECT tbl_name, sql FROM sqlite_master WHERE type = 'trigger'"))
            found: dict[str, set[str]] = {}
            for table, sql in rows:
                found.setdefault(table, set()).update(op for op in ("UPDATE", "DELETE") if f"BEFORE {op}" in sql)
        else:
            rows = conn.execute(sa.text(
                "SELECT c.relname, t.tgtype FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE NOT t.tgisinternal AND c.relnamespace = to_regnamespace(current_schema())::oid"))
            found = {}
            for table, tgtype in rows:
                ops = {name for bit, name in ((16, "UPDATE"), (8, "DELETE")) if tgtype & bit}
                found.setdefault(table, set()).update(ops)
    for table, operations in GUARDED.items():
        assert operations <= found.get(table, set()), (table, found.get(table))


# --- appended once, at commit (issue 18 item 8) ----------------------------------------------------------

def _stored(session) -> int:
    """The entries in the table as the connection reads it, past the ORM (which appends pending entries first)."""
    return session.connection().execute(sa.select(sa.func.count()).select_from(AuditEntry.__table__)).scalar_one()


def _full_names(session, user_id: int) -> list[str]:
    changes = [json.loads(e.after) for e in _entries(session)
               if e.action == "user_account.update" and e.entity_id == str(user_id)]
    return [change["full_name"] for change in changes if "full_name" in change]


def test_a_transactions_entries_are_appended_at_its_commit_and_its_readers_see_them(session, make_user):
    user = session.get(User, make_user("olivia").id)
    stored = _stored(session)
    user.full_name = "Olivia One"
    session.flush()
    audit.record_event(session, "test.event")
    assert _stored(session) == stored  # recorded, not appended: the head is not locked yet
    page, _ = audit.search(session, audit.AuditFilter())  # a reader in the transaction sees them
    assert [e.action for e in page[:2]] == ["test.event", "user_account.update"]
    assert _stored(session) == stored + 2
    user.full_name = "Olivia Two"  # left for the commit to flush: audited all the same
    session.commit()
    assert _full_names(session, user.id) == ["Olivia One", "Olivia Two"]
    assert _stored(session) == stored + 3 and audit.verify(session).ok


def test_a_rolled_back_transaction_leaves_no_entry_behind(session, make_user):
    user = session.get(User, make_user("olivia").id)
    stored = _stored(session)
    user.full_name = "Olivia Rolled Back"
    session.flush()
    session.rollback()
    session.get(User, user.id).roles = "operator,qa"
    session.commit()
    assert _full_names(session, user.id) == [] and _stored(session) == stored + 1
    assert audit.verify(session).ok


@pytest.mark.parametrize("read_inside", [False, True], ids=["recorded", "appended-inside"])
def test_a_rolled_back_savepoint_takes_its_entries_with_it(session, make_user, read_inside):
    """The entries a savepoint recorded go with its rollback; the ones recorded before it stay, also when a
    reader inside the savepoint had them appended (the database took that append back with the savepoint)."""
    user = session.get(User, make_user("olivia").id)
    user.full_name = "Before Savepoint"
    session.flush()
    savepoint = session.begin_nested()
    user.full_name = "Inside Savepoint"
    session.flush()
    if read_inside:
        assert audit.head_and_seal(session) is not None and _stored(session) >= 3
    savepoint.rollback()
    kept = session.begin_nested()
    user.full_name = "Savepoint Kept"
    session.flush()
    kept.commit()
    session.commit()
    assert _full_names(session, user.id) == ["Before Savepoint", "Savepoint Kept"]
    assert audit.verify(session).ok


def test_gmp_changes_are_refused_at_the_flush_without_a_key_ring(app, session, make_user):
    """The key ring is checked where the change is made, before the transaction goes on, not only at commit."""
    from mfg.extensions import db

    user_id = make_user("olivia").id
    with Session(app.extensions["mfg.db"].engine) as bare:  # a session the application did not give its key ring
        audit.set_actor(bare, name="test")
        bare.get(User, user_id).full_name = "No Key"
        with pytest.raises(AuditKeyError, match="no audit key ring"):
            bare.flush()
    assert _full_names(db.session, user_id) == []
