"""Checkpoints and anchors of the audit trail (issue [3.5] items 4 and 7).

A verify that passes records a sealed checkpoint; `audit verify --since-last` starts from the latest one and
reads only the entries after it, yet catches every forgery after it the full verify catches, and refuses a
checkpoint rewritten outside the application. `audit seal --out` exports a checkpoint to keep off-site;
`audit verify --anchors DIR` checks the trail against it, which catches even someone holding both the database
and the instance's key: they can rewrite the trail, recompute every hash and reseal the head so that the full
verify says intact, but not change the anchor kept out of their reach.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from mfg.audit_key import read_key_ring
from mfg.domain.audit_chain import ChainHead, anchor_seal_problem, seal_head
from mfg.models import AuditCheckpoint, AuditEntry, AuditHead
from mfg.services import audit, audit_anchors
from tests.services.test_audit_seal import _rechain, _renumber
from tests.support import AUDIT_KEY_RING, attacker_engine, drop_guards

ENTRY = AuditEntry.__table__
HEAD = AuditHead.__table__
CHECKPOINT = AuditCheckpoint.__table__


def _audit(app, *args: str):
    return app.test_cli_runner().invoke(args=["audit", *args])


def _events(session, count: int) -> None:
    for n in range(count):
        audit.record_event(session, "test.event", details={"n": n})
    session.commit()


def _last_seq(session) -> int:
    return session.scalar(sa.select(sa.func.max(AuditEntry.seq)))


@pytest.fixture
def engine(app):
    """Whoever can write the database (the schema's owner with two PostgreSQL roles: tests/support.py)."""
    return attacker_engine(app)


@pytest.fixture
def trail(session, make_user):
    """Twenty-four entries (three users, twenty-one events)."""
    for name in ("ann", "bob", "cat"):
        make_user(name)
    _events(session, 21)
    assert _last_seq(session) == 24
    session.rollback()


def _reseal_with_the_real_key(conn: sa.Connection) -> None:
    """What someone holding the instance's key as well can do: seal the head they moved."""
    head = ChainHead(*conn.execute(sa.select(HEAD.c.seq, HEAD.c.entry_hash, HEAD.c.max_at, HEAD.c.unordered_at)).one())
    key_id, key = read_key_ring(AUDIT_KEY_RING).current
    conn.execute(sa.update(HEAD).values(seal_key_id=key_id, seal=seal_head(key, key_id, head)))


# --- the checkpoint a verify leaves -----------------------------------------------------------------

def test_a_verify_that_passes_records_a_sealed_checkpoint_from_which_since_last_starts(app, session, trail):
    full = _audit(app, "verify")
    assert full.exit_code == 0, full.output
    assert "audit trail intact: 24 entries checked (full verify: what an inspection uses)" in full.output
    assert "checkpoint recorded at entry 24 (audit.verified)" in full.output
    checkpoint = session.scalars(sa.select(AuditCheckpoint)).one()
    assert (checkpoint.seq, checkpoint.kind, checkpoint.key_id) == (24, "verified", "t2-current")
    assert checkpoint.created_by.startswith("cli:")
    head_24 = session.execute(sa.select(AuditEntry.entry_hash, AuditEntry.occurred_at)
                              .where(AuditEntry.seq == 24)).one()
    assert checkpoint.entry_hash == head_24.entry_hash and checkpoint.max_at == head_24.occurred_at
    assert anchor_seal_problem(read_key_ring(AUDIT_KEY_RING), checkpoint.anchor()) is None
    event = session.scalars(sa.select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).one()
    assert event.seq == 25 and event.action == "audit.verified"
    assert json.loads(event.after) == {"checkpoint_seq": 24, "entries_checked": 24, "mode": "full"}
    session.rollback()

    since = _audit(app, "verify", "--since-last")
    assert since.exit_code == 0, since.output
    assert f"incremental verify from checkpoint {checkpoint.id} at entry 24" in since.output
    assert "audit trail intact: 1 new entries after the checkpoint" in since.output  # the audit.verified event
    assert "checkpoint recorded at entry 25" in since.output
    _events(session, 5)
    since = _audit(app, "verify", "--since-last")
    assert since.exit_code == 0, since.output
    assert "at entry 25" in since.output and "intact: 6 new entries" in since.output, since.output
    last = session.scalars(sa.select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).one()
    assert json.loads(last.after) == {"checkpoint_seq": 31, "entries_checked": 6, "mode": "since-last",
                                      "from_checkpoint_seq": 25}
    assert audit.verify(session).ok


def test_since_last_without_a_checkpoint_says_so_and_verifies_everything(app, session, trail):
    result = _audit(app, "verify", "--since-last")
    assert result.exit_code == 0, result.output
    assert "no verified checkpoint yet: full verify, from the first entry" in result.output
    assert "audit trail intact: 24 entries checked" in result.output


def test_since_last_reads_only_the_entries_after_the_checkpoint(app, session, trail, engine):
    """Counted by the rows the queries on the audit entries return (each query run again as a count), not by
    time: the checkpoint's own entry, then the new entries, through ``WHERE seq > :n``."""
    _events(session, 76)  # 100 entries
    verified = audit_anchors.verify_full(session)
    assert verified.ok and verified.result.checked == 100
    audit_anchors.record_verified(session, verified)  # checkpoint at 100, audit.verified is 101
    session.commit()
    _events(session, 9)  # 102..110
    statements: list[tuple[str, object]] = []

    def seen(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if "audit_entry" in statement:
            statements.append((statement, parameters))

    sa.event.listen(app.extensions["mfg.db"].engine, "before_cursor_execute", seen)  # what the application reads
    try:
        result = audit_anchors.verify_since_last(session)
    finally:
        sa.event.remove(app.extensions["mfg.db"].engine, "before_cursor_execute", seen)
    assert result.ok and result.start.seq == 100 and result.result.checked == 10, result
    rows_read = 0
    with engine.connect() as conn:
        for statement, parameters in statements:
            rows_read += conn.exec_driver_sql(f"SELECT count(*) FROM ({statement}) AS q", parameters).scalar_one()
    assert rows_read == 1 + 10, statements  # the checkpoint's entry, then the ten after it: not the 110
    assert any("WHERE seq >" in statement for statement, _ in statements), statements  # audit_walk's read
    session.rollback()
    full = audit_anchors.verify_full(session)
    assert full.ok and full.result.checked == 110


def test_a_checkpoint_rewritten_outside_the_application_is_refused(app, session, trail, engine):
    assert _audit(app, "verify").exit_code == 0
    _events(session, 3)
    session.rollback()
    drop_guards(engine, "audit_checkpoint")
    with engine.begin() as conn:  # claim that the trail was verified up to its end: no entry would be walked
        conn.execute(sa.text("UPDATE audit_checkpoint SET seq = 28, entry_hash = (SELECT entry_hash FROM audit_entry "
                             "WHERE seq = 28)"))
    result = _audit(app, "verify", "--since-last")
    assert result.exit_code == 1, result.output
    assert "BROKEN" in result.output and "the anchor at entry 28 does not match its seal" in result.output
    assert "checkpoint recorded" not in result.output
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(AuditCheckpoint)) == 1  # nothing recorded over it
    with engine.begin() as conn:  # a seal of the attacker's making
        conn.execute(sa.text("UPDATE audit_checkpoint SET seal = :seal"), {"seal": "0" * 64})
    result = _audit(app, "verify", "--since-last")
    assert result.exit_code == 1 and "does not match its seal" in result.output, result.output
    assert _audit(app, "verify").exit_code == 0  # the full verify does not rely on checkpoints


def test_a_deleted_checkpoint_makes_since_last_start_from_an_older_one_or_verify_everything(app, session, trail,
                                                                                          engine):
    assert _audit(app, "verify").exit_code == 0  # checkpoint at 24
    _events(session, 2)
    assert _audit(app, "verify").exit_code == 0  # checkpoint at 27
    _events(session, 2)  # 29, 30
    session.rollback()
    first, second = session.scalars(sa.select(AuditCheckpoint).order_by(AuditCheckpoint.id)).all()
    assert (first.seq, second.seq) == (24, 27)
    session.rollback()  # end the read transaction: DROP TRIGGER waits for every lock on the table
    drop_guards(engine, "audit_checkpoint")
    with engine.begin() as conn:
        conn.execute(sa.delete(CHECKPOINT).where(CHECKPOINT.c.id == second.id))
    result = _audit(app, "verify", "--since-last")
    assert result.exit_code == 0, result.output
    assert f"from checkpoint {first.id} at entry 24" in result.output and "intact: 6 new entries" in result.output
    session.rollback()
    with engine.begin() as conn:
        conn.execute(sa.delete(CHECKPOINT))
    result = _audit(app, "verify", "--since-last")
    assert result.exit_code == 0, result.output
    assert "no verified checkpoint yet" in result.output and "intact: 31 entries checked" in result.output


def _edit_after(conn: sa.Connection) -> None:
    conn.execute(sa.text("UPDATE audit_entry SET reason = 'edited' WHERE seq = 27"))


def _edit_after_rehashed(conn: sa.Connection) -> None:
    _edit_after(conn)
    _rechain(conn)


def _insert_after(conn: sa.Connection) -> None:
    _renumber(conn, after=26, by=1)
    conn.execute(sa.text(
        "INSERT INTO audit_entry (seq, occurred_at, user_id, username, action, entity_type, entity_id, "
        "before, after, reason, prev_hash, entry_hash) SELECT 27, occurred_at, user_id, 'bob', 'login.success', "
        "'user_account', '2', NULL, NULL, NULL, prev_hash, entry_hash FROM audit_entry WHERE seq = 26"))
    _rechain(conn)


def _delete_tail(conn: sa.Connection) -> None:
    conn.execute(sa.text("DELETE FROM audit_entry WHERE seq > 27"))
    _rechain(conn)


def _head_moved_back(conn: sa.Connection) -> None:
    conn.execute(sa.text("UPDATE audit_head SET seq = 27, entry_hash = (SELECT entry_hash FROM audit_entry "
                         "WHERE seq = 27)"))


def _rewritten_before(conn: sa.Connection) -> None:
    conn.execute(sa.text("UPDATE audit_entry SET reason = 'edited' WHERE seq = 5"))
    _rechain(conn)


@pytest.mark.parametrize(("forge", "problem"), [
    (_edit_after, "entry 27 was altered"),
    (_edit_after_rehashed, "seal does not match"),
    (_insert_after, "seal does not match"),
    (_delete_tail, "seal does not match"),
    (_head_moved_back, "the trail ends at entry 30 but the application recorded entry 27"),
    (_rewritten_before, "entry 24's hash differs from the anchor's"),
], ids=["edit", "edit rehashed, head moved", "insert", "tail deleted, head moved", "head moved back",
        "rewritten before the checkpoint"])
def test_since_last_catches_a_forgery_after_its_checkpoint(app, session, trail, engine, forge, problem):
    assert _audit(app, "verify").exit_code == 0  # checkpoint at 24, audit.verified at 25
    _events(session, 5)  # 26..30
    session.rollback()
    drop_guards(engine, "audit_entry")
    with engine.begin() as conn:
        forge(conn)
    result = _audit(app, "verify", "--since-last")
    assert result.exit_code == 1, result.output
    assert "BROKEN" in result.output and problem in result.output, result.output
    assert "checkpoint recorded" not in result.output


# --- anchors kept off-site -------------------------------------------------------------------------------

def test_an_exported_checkpoint_is_held_by_the_trail(app, session, trail, tmp_path):
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    out = anchors / "2026-12-06.json"
    result = _audit(app, "seal", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"wrote the checkpoint of the audit trail at entry 24 to {out}" in result.output
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["format"] == "mfg-audit-anchor" and document["version"] == 1
    assert document["site"] == app.config["SITE_NAME"] and document["seq"] == 24 and document["key_id"] == "t2-current"
    assert set(document) == {"format", "version", "site", "seq", "entry_hash", "max_at", "unordered_at", "key_id",
                             "seal", "created_at"}
    checkpoint = session.scalars(sa.select(AuditCheckpoint)).one()
    assert (checkpoint.kind, checkpoint.seq, checkpoint.seal) == ("exported", 24, document["seal"])
    event = session.scalars(sa.select(AuditEntry).where(AuditEntry.seq == 25)).one()
    assert event.action == "audit.checkpoint_exported"
    assert json.loads(event.after) == {"checkpoint_seq": 24, "note": "written to 2026-12-06.json"}
    session.rollback()

    again = _audit(app, "seal", "--out", str(out))  # never overwritten
    assert again.exit_code == 1 and "never overwritten" in again.output, again.output
    assert json.loads(out.read_text(encoding="utf-8")) == document
    _events(session, 3)
    (anchors / "damaged.pdf").write_bytes(b"%PDF-1.7\n")  # read, and reported as not readable
    (anchors / "notes.txt").write_text("not an anchor\n", encoding="utf-8")
    result = _audit(app, "verify", "--anchors", str(anchors))
    assert result.exit_code == 1, result.output
    assert "ANCHOR FAILED  damaged.pdf: not read: not a PDF this can read" in result.output
    (anchors / "damaged.pdf").unlink()
    result = _audit(app, "verify", "--anchors", str(anchors))
    assert result.exit_code == 0, result.output
    assert "OK  2026-12-06.json (entry 24): the trail holds this anchor" in result.output
    assert "anchors: 1 of 1 held by the trail" in result.output and "notes.txt" not in result.output
    refused = _audit(app, "verify", "--anchors", str(anchors), "--since-last")
    assert refused.exit_code == 2 and "goes with the full verify" in refused.output


@pytest.mark.parametrize("rewrite", ["entry rewritten before the anchor", "trail cut before the anchor"])
def test_a_trail_rewritten_by_someone_holding_the_key_is_caught_by_an_older_anchor(app, session, trail, engine,
                                                                                 tmp_path, rewrite):
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    assert _audit(app, "seal", "--out", str(anchors / "older.json")).exit_code == 0  # anchor at 24
    _events(session, 5)  # 25 is audit.checkpoint_exported, then 26..30
    session.rollback()
    drop_guards(engine, "audit_entry")
    with engine.begin() as conn:
        if rewrite == "entry rewritten before the anchor":
            conn.execute(sa.text("UPDATE audit_entry SET after = replace(after, 'bob', 'eve') WHERE seq = 2"))
        else:
            conn.execute(sa.text("DELETE FROM audit_entry WHERE seq > 20"))
        _rechain(conn)  # every later hash recomputed with the project's own unkeyed function, the head moved
        _reseal_with_the_real_key(conn)
    # a perfect forgery for everything inside the system: the full verify says intact
    assert audit.verify(session).ok
    session.rollback()
    result = _audit(app, "verify", "--anchors", str(anchors))
    assert result.exit_code == 1, result.output
    assert "audit trail intact" in result.output
    expected = ("entry 24's hash differs from the anchor's: entry 24 or an entry before it was rewritten after the "
                "anchor was taken" if rewrite == "entry rewritten before the anchor" else
                "the trail ends at entry 20, short of the anchor's entry 24: entries were removed")
    assert f"ANCHOR FAILED  older.json (entry 24): {expected}" in result.output, result.output
    assert "anchors: 0 of 1 held by the trail" in result.output
    assert "checkpoint recorded" not in result.output  # a trail an anchor contradicts is not recorded as verified


@pytest.mark.parametrize("forgery", ["seal edited", "position moved", "unknown key", "not an anchor"])
def test_a_forged_anchor_file_is_reported(app, session, trail, tmp_path, forgery):
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    out = anchors / "anchor.json"
    assert _audit(app, "seal", "--out", str(out)).exit_code == 0
    document = json.loads(out.read_text(encoding="utf-8"))
    if forgery == "seal edited":
        document["seal"] = document["seal"][:-1] + ("0" if document["seal"][-1] != "0" else "1")
    elif forgery == "position moved":  # claim an earlier position the trail holds (its real hash)
        document["seq"] = 3
        document["entry_hash"] = session.scalar(sa.select(AuditEntry.entry_hash).where(AuditEntry.seq == 3))
    elif forgery == "unknown key":
        document["key_id"] = "k9-forged"
    else:
        del document["format"]
    out.write_text(json.dumps(document), encoding="utf-8")
    session.rollback()
    result = _audit(app, "verify", "--anchors", str(anchors))
    assert result.exit_code == 1, result.output
    expected = {"seal edited": "(entry 24): the anchor at entry 24 does not match its seal: it was altered or forged",
                "position moved": "(entry 3): the anchor at entry 3 does not match its seal",
                "unknown key": "sealed with key 'k9-forged', which is not in this instance's audit key ring",
                "not an anchor": "anchor.json: not read: not an audit anchor"}[forgery]
    assert "ANCHOR FAILED  " in result.output and expected in result.output, result.output


def test_check_anchor_is_general(session, trail):
    """The service a signed document's audit position will use: the current anchor, held now and later."""
    anchor = audit_anchors.current_anchor(session)
    assert anchor.seq == 24 and audit_anchors.check_anchor(session, anchor) is None
    _events(session, 2)
    assert audit_anchors.check_anchor(session, anchor) is None
    empty = anchor._replace(seq=0, entry_hash="0" * 64, max_at=None, unordered_at=None)
    key_id, key = read_key_ring(AUDIT_KEY_RING).current
    from mfg.domain.audit_chain import seal_anchor

    assert audit_anchors.check_anchor(session, seal_anchor(key, key_id, empty.head)) is None  # the empty trail
    beyond = seal_anchor(key, key_id, ChainHead(99, "a" * 64, None, None))
    assert "the trail ends at entry 26, short of the anchor's entry 99" in audit_anchors.check_anchor(session, beyond)


def test_no_anchor_is_taken_of_a_head_the_application_did_not_seal(app, session, trail, engine, tmp_path):
    missing = _audit(app, "seal", "--out", str(tmp_path / "no-such-folder" / "anchor.json"))
    assert missing.exit_code == 1 and "is not a folder: nothing recorded" in missing.output, missing.output
    session.rollback()
    with engine.begin() as conn:  # the head moved outside the application: its seal no longer matches
        conn.execute(sa.text("UPDATE audit_head SET seq = 23, entry_hash = (SELECT entry_hash FROM audit_entry "
                             "WHERE seq = 23)"))
    out = tmp_path / "anchor.json"
    refused = _audit(app, "seal", "--out", str(out))
    assert refused.exit_code == 1 and "no anchor taken: the audit head's seal does not match" in refused.output
    assert not out.exists()
    assert session.scalar(sa.select(sa.func.count()).select_from(AuditCheckpoint)) == 0
    with pytest.raises(audit.HeadNotSealed, match="no anchor taken"):
        audit_anchors.current_anchor(session)
