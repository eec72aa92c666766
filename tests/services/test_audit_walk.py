"""The trail walked in parts, by worker processes (``services.audit_walk``, issue [3.5] item 8): whatever the
trail holds, the parts give exactly what one walk from the start gives, on SQLite and PostgreSQL.

Real worker processes (spawned, each with its own connection) on the test's real database; the part sizes are
made small (``parallel_from=1``, or ``audit_walk.PARALLEL_FROM`` for the commands) so that a trail of a few dozen
entries is cut. Each case compares the parts' result, field by field, with the single walk's, and says what that
is: an intact trail, an entry altered in a worker's part, an entry missing where two parts meet (the next part
then starts from a wrong guess and is walked again), and the clock set back (the trail's latest time is not the
time of the entry at the cut, so the guess is wrong again).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from mfg.domain.audit_chain import GENESIS_HASH, ChainEntry, next_times
from mfg.models import AuditEntry, AuditHead
from mfg.services import audit, audit_walk
from tests.support import attacker_engine, drop_guards

ENTRY = AuditEntry.__table__
HEAD = AuditHead.__table__
ENTRIES = 60


@pytest.fixture
def trail(app, session):
    """Sixty events, committed; the attacker's guards dropped."""
    for n in range(ENTRIES):
        audit.record_event(session, "test.event", details={"n": n})
    session.commit()
    assert audit.verify(session).checked == ENTRIES
    session.rollback()
    engine = attacker_engine(app)
    drop_guards(engine, "audit_entry", "audit_head")
    return engine


def _walk(session, workers: int):
    session.rollback()
    head, _seal = audit.head_and_seal(session)
    walked, _ = audit_walk.walk_trail(session, 0, GENESIS_HASH, None, None, head.seq, parallel_from=1,
                                      workers=workers)
    session.rollback()
    return walked


def _same_in_parts(session):
    """The single walk's result, after checking that one and two workers give exactly it."""
    alone = _walk(session, 0)
    for workers in (1, 2):
        assert _walk(session, workers) == alone, workers
    return alone


def _rechain(conn: sa.Connection) -> None:
    """Recompute every hash with the project's own unkeyed function, and the head's position and times."""
    prev, seq, max_at, unordered_at = GENESIS_HASH, 0, None, None
    for row in conn.execute(sa.select(ENTRY).order_by(ENTRY.c.seq)).mappings().all():
        entry = ChainEntry(*(row[name] for name in ChainEntry._fields[:-1]), prev)
        prev, seq = entry.compute_hash(), entry.seq
        conn.execute(sa.update(ENTRY).where(ENTRY.c.seq == seq).values(prev_hash=entry.prev_hash, entry_hash=prev))
        max_at, unordered_at = next_times(max_at, unordered_at, entry.occurred_at)
    conn.execute(sa.update(HEAD).where(HEAD.c.id == 1).values(seq=seq, entry_hash=prev, max_at=max_at,
                                                               unordered_at=unordered_at))


def test_an_intact_trail_walked_in_parts_is_walked_whole(session, trail):
    walked = _same_in_parts(session)
    assert walked.problem is None and walked.checked == ENTRIES and walked.seq == ENTRIES


def test_an_entry_altered_in_a_workers_part_is_the_first_break(session, trail):
    with trail.begin() as conn:
        conn.execute(sa.text("UPDATE audit_entry SET reason = 'rewritten' WHERE seq = 7"))
    walked = _same_in_parts(session)
    assert walked.problem == "entry 7 was altered: its content does not match its hash" and walked.checked == 6


@pytest.mark.parametrize("seq", [20, 30, 31])  # 30: the last entry of the first of two parts; 20: of three
def test_an_entry_missing_where_two_parts_meet_is_found(session, trail, seq):
    with trail.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_entry WHERE seq = :seq"), {"seq": seq})
    walked = _same_in_parts(session)
    assert walked.problem == f"entry {seq} is missing (next is {seq + 1}): deleted" and walked.checked == seq - 1


def test_the_clock_set_back_gives_the_same_times_in_parts(app, session, trail):
    """Entry 10 in the future: the later parts guessed the trail's latest time wrong and are walked again. The
    chain is recomputed and the head moved, so the walk passes and only the times tell the parts apart."""
    with trail.begin() as conn:
        at = conn.scalar(sa.select(ENTRY.c.occurred_at).where(ENTRY.c.seq == 10))
        conn.execute(sa.update(ENTRY).where(ENTRY.c.seq == 10).values(occurred_at=at + timedelta(days=3)))
        _rechain(conn)
    walked = _same_in_parts(session)
    assert walked.problem is None and walked.checked == ENTRIES
    assert walked.unordered_at is not None and walked.max_at > walked.unordered_at


def test_the_full_verify_in_parts_finds_a_forged_row_and_an_entry_past_the_head(app, session, trail, make_user,
                                                                              monkeypatch):
    """The command, with the trail cut into parts (the state check then runs beside the workers)."""
    monkeypatch.setattr(audit_walk, "PARALLEL_FROM", 1)
    user = make_user("ann")
    session.commit()
    run = app.test_cli_runner().invoke
    session.rollback()
    result = run(args=["audit", "verify"])
    assert result.exit_code == 0 and "audit trail intact" in result.output, result.output
    assert "current state matches the trail" in result.output, result.output
    with trail.begin() as conn:
        conn.execute(sa.text("UPDATE user_account SET full_name = 'Someone Else' WHERE id = :id"), {"id": user.id})
    result = run(args=["audit", "verify"])
    assert result.exit_code == 1 and f"user_account {user.id} full_name: trail says" in result.output, result.output
    with trail.begin() as conn:
        conn.execute(sa.text("UPDATE user_account SET full_name = :name WHERE id = :id"),
                     {"name": user.full_name, "id": user.id})
    with trail.begin() as conn:  # an entry added past the head, the head left where it was
        last = conn.execute(sa.select(ENTRY).where(ENTRY.c.seq == sa.select(sa.func.max(ENTRY.c.seq))
                                                   .scalar_subquery())).mappings().one()
        added = ChainEntry(*({**last, "seq": last["seq"] + 1}[name] for name in ChainEntry._fields[:-1]),
                           last["entry_hash"])  # hashed as the application hashes: only the head tells
        conn.execute(sa.insert(ENTRY).values({**added._asdict(), "entry_hash": added.compute_hash()}))
    result = run(args=["audit", "verify"])
    assert result.exit_code == 1 and "entries were removed or added" in result.output, result.output


def test_entries_this_transaction_has_not_committed_are_walked_too(session, trail, monkeypatch):
    """The workers' connections cannot see them: the parts they end early are walked again by the caller. (Sixty
    committed, a hundred not: the worker's part, the first half, ends at 80.)"""
    monkeypatch.setattr(audit_walk, "PARALLEL_FROM", 1)
    session.rollback()
    for n in range(100):
        audit.record_event(session, "test.uncommitted", details={"n": n})
    result = audit.verify(session)
    assert result.ok and result.checked == ENTRIES + 100, result
    session.rollback()


def test_a_worker_that_fails_leaves_its_part_to_the_caller(session, trail, monkeypatch, caplog):
    """Workers that cannot open the database (a path that does not exist): the caller walks their parts itself,
    says so in the log, and the answer is the single walk's, breaks included."""
    monkeypatch.setattr(audit_walk, "_url", lambda _session: "sqlite:////nonexistent-folder/none.sqlite3")
    with trail.begin() as conn:
        conn.execute(sa.text("UPDATE audit_entry SET reason = 'rewritten' WHERE seq = 7"))
    walked = _same_in_parts(session)
    assert walked.problem == "entry 7 was altered: its content does not match its hash"
    assert "the worker process for entries 1 to 30 failed; walking them here" in caplog.text
