"""The sealed audit trail (issue [3.5] item 1): forgeries made the way someone with write access to the
database alone would make them (guards dropped, raw SQL, every later hash recomputed with the project's own
unkeyed ``ChainEntry.compute_hash``, the head moved to match) are reported by ``audit verify``, because
only the holder of the instance's audit key can seal a head.

Each forgery is first shown to be perfect at the level of the unkeyed chain (``check_end`` without the
seal says intact): what catches it is the seal alone.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from mfg import audit_key
from mfg.audit_key import KEYS_INFO, AuditKeyError, read_key_ring
from mfg.domain.audit_chain import GENESIS_HASH, ChainEntry, ChainHead, KeyRing, check_end, next_times, seal_head
from mfg.extensions import db
from mfg.models import AuditEntry, AuditHead
from mfg.services import audit, audit_walk
from tests.support import AUDIT_KEY_RING, DEMO_SOP, attacker_engine, drop_guards

ENTRY = AuditEntry.__table__
HEAD = AuditHead.__table__


def _rechain(conn: sa.Connection) -> None:
    """Recompute every hash with the project's own unkeyed function and move the head to the new end (its
    times too), leaving the head's seal columns as they are."""
    prev, seq, max_at, unordered_at = GENESIS_HASH, 0, None, None
    for row in conn.execute(sa.select(ENTRY).order_by(ENTRY.c.seq)).mappings().all():
        entry = ChainEntry(*(row[name] for name in ChainEntry._fields[:-1]), prev)
        entry_hash = entry.compute_hash()
        conn.execute(sa.update(ENTRY).where(ENTRY.c.seq == entry.seq).values(prev_hash=prev, entry_hash=entry_hash))
        prev, seq = entry_hash, entry.seq
        max_at, unordered_at = next_times(max_at, unordered_at, entry.occurred_at)
    conn.execute(sa.update(HEAD).where(HEAD.c.id == 1).values(seq=seq, entry_hash=prev, max_at=max_at,
                                                               unordered_at=unordered_at))


def _renumber(conn: sa.Connection, *, after: int, by: int) -> None:
    """Shift the sequence numbers of the entries after ``after`` by ``by`` (one row at a time, in the order
    that never collides with the primary key)."""
    seqs = conn.scalars(sa.select(ENTRY.c.seq).where(ENTRY.c.seq > after).order_by(
        ENTRY.c.seq.desc() if by > 0 else ENTRY.c.seq)).all()
    for seq in seqs:
        conn.execute(sa.update(ENTRY).where(ENTRY.c.seq == seq).values(seq=seq + by))


@pytest.fixture
def trail(app, session, make_user):
    """Twenty-four entries (three users, twenty events), verified intact; the guards then dropped."""
    for name in ("ann", "bob", "cat"):
        make_user(name)
    for n in range(21):
        audit.record_event(session, "test.event", details={"n": n})
    session.commit()
    result = audit.verify(session)
    assert result.ok and result.checked == 24, result
    session.rollback()  # end the read transaction: DROP TRIGGER waits for every lock on the table
    engine = attacker_engine(app)
    drop_guards(engine, "audit_entry")
    return engine


def _forge(engine: sa.Engine, change: Callable[[sa.Connection], None]) -> None:
    with engine.begin() as conn:
        change(conn)
        _rechain(conn)


def _assert_caught(app, session, problem: str) -> None:
    session.rollback()
    # the forgery is perfect at the level of the unkeyed chain: without the seal, verify would say intact
    head, _seal = audit.head_and_seal(session)
    walked, _ = audit_walk.walk_trail(session, 0, GENESIS_HASH, None, None, head.seq)  # what verify reads
    unkeyed = check_end(walked, head, None)
    assert unkeyed.ok, unkeyed
    result = audit.verify(session)
    assert not result.ok and problem in result.problem, result
    session.rollback()
    cli = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert cli.exit_code == 1 and "BROKEN" in cli.output and problem in cli.output, cli.output
    # and the application never seals over it: the next GMP change is refused (at its commit, where the
    # transaction's entries are appended: nothing of it is kept)
    with pytest.raises(audit.HeadNotSealed, match="GMP change refused"):
        audit.record_event(session, "test.after_forgery")
        session.commit()
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)
                          .where(AuditEntry.action == "test.after_forgery")) == 0


MISMATCH = "seal does not match"


def test_an_edited_entry_rehashed_with_the_head_moved_is_caught(app, session, trail):
    _forge(trail, lambda conn: conn.execute(sa.text(
        "UPDATE audit_entry SET after = replace(after, 'bob', 'eve') WHERE seq = 2")))
    _assert_caught(app, session, MISMATCH)


@pytest.mark.parametrize("cut", [1, 10])
def test_the_tail_deleted_with_the_head_moved_is_caught(app, session, trail, cut):
    _forge(trail, lambda conn: conn.execute(sa.text("DELETE FROM audit_entry WHERE seq > :keep"),
                                            {"keep": 24 - cut}))
    _assert_caught(app, session, MISMATCH)


def test_the_whole_trail_deleted_and_the_head_reset_is_caught(app, session, trail):
    _forge(trail, lambda conn: conn.execute(sa.text("DELETE FROM audit_entry")))
    _assert_caught(app, session, MISMATCH)


def test_a_middle_entry_deleted_and_the_rest_renumbered_is_caught(app, session, trail):
    def change(conn: sa.Connection) -> None:
        conn.execute(sa.text("DELETE FROM audit_entry WHERE seq = 12"))
        _renumber(conn, after=12, by=-1)

    _forge(trail, change)
    _assert_caught(app, session, MISMATCH)


def test_a_fabricated_login_inserted_and_rehashed_is_caught(app, session, trail):
    def change(conn: sa.Connection) -> None:
        _renumber(conn, after=10, by=1)
        conn.execute(sa.text(
            "INSERT INTO audit_entry (seq, occurred_at, user_id, username, action, entity_type, entity_id, "
            "before, after, reason, prev_hash, entry_hash) SELECT 11, occurred_at, user_id, 'bob', 'login.success', "
            "'user_account', '2', NULL, NULL, NULL, prev_hash, entry_hash FROM audit_entry WHERE seq = 10"))

    _forge(trail, change)
    _assert_caught(app, session, MISMATCH)


def test_a_deleted_seal_is_caught(app, session, trail):
    with trail.begin() as conn:
        conn.execute(sa.text("UPDATE audit_head SET seal = NULL, seal_key_id = NULL"))
    _assert_caught(app, session, "not sealed")
    # init, which runs at every `make run`, does not seal over it: the key ring was here before
    app.config["SOPS_DIR"] = str(DEMO_SOP.parent)
    result = app.test_cli_runner().invoke(args=["init"])
    assert result.exit_code == 1 and "not sealed although" in result.output, result.output


@pytest.mark.parametrize("rewrite", ["unknown key", "other key of the ring", "a key of the attacker's"])
def test_a_rewritten_seal_is_caught(app, session, trail, rewrite):
    def change(conn: sa.Connection) -> None:
        conn.execute(sa.text("UPDATE audit_entry SET reason = 'rewritten' WHERE seq = 5"))
        _rechain(conn)
        head = ChainHead(*conn.execute(sa.select(HEAD.c.seq, HEAD.c.entry_hash, HEAD.c.max_at,
                                                 HEAD.c.unordered_at)).one())
        key_id = {"unknown key": "k9-forged", "other key of the ring": "t1-old",
                  "a key of the attacker's": "t2-current"}[rewrite]
        conn.execute(sa.update(HEAD).values(seal_key_id=key_id,
                                            seal=seal_head(secrets.token_bytes(32), key_id, head)))

    with trail.begin() as conn:
        change(conn)
    _assert_caught(app, session, "not in this instance's audit key ring" if rewrite == "unknown key" else MISMATCH)


def test_an_unkeyed_hash_in_place_of_the_seal_is_caught(app, session, trail):
    """The head's own unkeyed sha256 (the project's published function) is no seal."""
    import hashlib

    with trail.begin() as conn:
        seq, entry_hash = conn.execute(sa.select(HEAD.c.seq, HEAD.c.entry_hash)).one()
        conn.execute(sa.update(HEAD).values(seal=hashlib.sha256(f"{seq}{entry_hash}".encode()).hexdigest()))
    _assert_caught(app, session, MISMATCH)


# --- keys -----------------------------------------------------------------------------------------------

def test_key_rotation_keeps_an_older_seal_verifiable(app, session, make_user):
    make_user("ann")
    key_file = Path(app.instance_path) / "audit.key"
    old_id = session.scalar(sa.select(AuditHead.seal_key_id))
    assert old_id == "t2-current"
    result = app.test_cli_runner().invoke(args=["audit", "rotate-key"])
    assert result.exit_code == 0, result.output
    new_id = read_key_ring(key_file).current[0]
    assert new_id != old_id and f"added audit key {new_id}" in result.output
    assert key_file.stat().st_mode & 0o777 == 0o600
    session.rollback()
    # the rotation's own event is sealed with the new key; the running session's ring was reread
    assert session.scalar(sa.select(AuditHead.seal_key_id)) == new_id
    assert session.scalar(sa.select(AuditEntry.action).order_by(AuditEntry.seq.desc()).limit(1)) == "audit.key_rotated"
    assert audit.verify(session).ok
    verified = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert verified.exit_code == 0 and "WARNING" not in verified.output, verified.output
    session.rollback()
    drop_guards(attacker_engine(app), "audit_entry")
    with attacker_engine(app).begin() as conn:  # a backup's head, sealed before the rotation
        conn.execute(sa.text("UPDATE audit_head SET seq = 1, entry_hash = (SELECT entry_hash FROM audit_entry "
                             "WHERE seq = 1), max_at = (SELECT occurred_at FROM audit_entry WHERE seq = 1)"))
        conn.execute(sa.text("DELETE FROM audit_entry WHERE seq > 1"))
        head = ChainHead(*conn.execute(sa.select(HEAD.c.seq, HEAD.c.entry_hash, HEAD.c.max_at,
                                                 HEAD.c.unordered_at)).one())
        conn.execute(sa.update(HEAD).values(seal_key_id=old_id, seal=seal_head(
            read_key_ring(AUDIT_KEY_RING).get(old_id), old_id, head)))
    verified = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert verified.exit_code == 0 and "intact: 1 entries" in verified.output, verified.output
    assert f"WARNING: the head is sealed with the older key {old_id}, not the current {new_id}" in verified.output
    # a backup's head sealed with the older key still verifies under the rotated ring
    older = read_key_ring(AUDIT_KEY_RING)
    head = ChainHead(3, "a" * 64, None, None)
    rotated = read_key_ring(key_file)
    from mfg.domain.audit_chain import HeadSeal, seal_problem

    assert seal_problem(rotated, head, HeadSeal(old_id, seal_head(older.get(old_id), old_id, head))) is None
    # and a ring without that key cannot vouch for it
    assert "not in this instance's" in seal_problem(KeyRing((rotated.current,)), head,
                                                    HeadSeal(old_id, seal_head(older.get(old_id), old_id, head)))


def test_gmp_changes_are_refused_without_a_key_ring(app, session):
    engine = app.extensions["mfg.db"].engine
    with Session(engine) as bare:  # a session the application did not give its key ring
        audit.set_actor(bare, name="test")
        with pytest.raises(AuditKeyError, match="no audit key ring"):
            audit.record_event(bare, "test.event")
    (Path(app.instance_path) / "audit.key").unlink()
    with pytest.raises(AuditKeyError, match="run `flask --app mfg init`"):
        audit.record_event(session, "test.event")
    session.rollback()
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 1 and "no audit key ring" in result.output


def test_a_trail_written_before_sealing_is_sealed_by_the_command_that_says_from_where(app, session, make_user):
    """The upgrade path (issue [3.5] item 5): a head never sealed (as migration 0016 leaves it) is sealed by
    `audit seal-existing`, which records audit.sealed with the first entry it vouches for, and says so."""
    make_user("ann")
    make_user("bob")
    session.rollback()
    with attacker_engine(app).begin() as conn:  # what a trail looked like before this change
        conn.execute(sa.text("UPDATE audit_head SET seal = NULL, seal_key_id = NULL"))
    assert "not sealed" in audit.verify(session).problem
    session.rollback()
    result = app.test_cli_runner().invoke(args=["audit", "seal-existing"])
    assert result.exit_code == 0, result.output
    assert "only from this point on" in result.output and "entries 1 to 2 were written before it" in result.output
    sealed = session.scalars(sa.select(AuditEntry).where(AuditEntry.seq == 3)).one()
    assert sealed.action == "audit.sealed" and '"vouches_from_seq":3' in sealed.after
    marker = session.scalars(sa.select(AuditEntry).where(AuditEntry.seq == 4)).one()  # then the signatures'
    assert marker.action == "signature.sealed_existing" and '"sealed":0' in marker.after
    assert audit.verify(session).ok
    again = app.test_cli_runner().invoke(args=["audit", "seal-existing"])
    assert again.exit_code == 0 and "only from" not in again.output  # sealed already: nothing to do
    session.rollback()
    with attacker_engine(app).begin() as conn:  # the seal removed afterwards is not sealed over
        conn.execute(sa.text("UPDATE audit_head SET seal = NULL, seal_key_id = NULL"))
    refused = app.test_cli_runner().invoke(args=["audit", "seal-existing"])
    assert refused.exit_code == 1 and "sealed before (entry 3" in refused.output, refused.output


def test_init_creates_the_key_ring_owner_only_and_a_fresh_trail_verifies(app_factory, tmp_path, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("a fresh database file: SQLite")
    from mfg.config import RESOURCE_ROOT

    instance = tmp_path / "fresh-instance"
    app = app_factory(INSTANCE_PATH=instance, DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.sqlite3'}",
                      SOPS_DIR=str(RESOURCE_ROOT / "sops"))
    shutil.copytree(tmp_path / "instance", instance, ignore=shutil.ignore_patterns("audit.key"))  # no key yet
    runner = app.test_cli_runner()
    result = runner.invoke(args=["init"])
    assert result.exit_code == 0, result.output
    key_file = instance / "audit.key"
    assert "created the audit key ring" in result.output and "sealed the audit trail (empty)" in result.output
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(read_key_ring(key_file).keys) == 1
    verified = runner.invoke(args=["audit", "verify"])
    # one entry: signature.sealed_existing, marking that every signature from here on is sealed as it is made
    assert verified.exit_code == 0 and "intact: 1 entries checked" in verified.output, verified.output
    again = runner.invoke(args=["init"])  # safe to run again: the key is kept, nothing sealed twice
    assert again.exit_code == 0 and "created the audit key ring" not in again.output, again.output
    assert audit_key.create_key_file(key_file) is False


def test_the_session_carries_the_instance_key_ring(app):
    with app.app_context():
        assert db.session.info[KEYS_INFO]().current[0] == "t2-current"
