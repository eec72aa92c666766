"""Signatures sealed with the audit key (issue [3.5] item 2).

Each forgery is made the way someone with write access to the database alone would make it: the guard
triggers dropped, the record changed, the signature's stored content and hash recomputed with the project's
own unkeyed functions so that they match the changed record. Each is first shown to pass the unkeyed check (the
content matches its hash and the record's content): what catches it is the seal alone, or, for what used to lie
outside the signed content (``in_limits``, ``limit_message``, ``number``), the signed content itself.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from mfg.domain.audit_chain import SignatureManifest, seal_signature, signature_seal_text
from mfg.domain.canonical import canonical_json, sha256_hex
from mfg.domain.errors import DomainError
from mfg.models import AuditEntry, RecordedValue, Signature, SignatureSeal, StepExecution
from mfg.services import signatures
from tests.services.test_batch_engine import perform, plant  # noqa: F401, F811  (the fixture)
from tests.support import attacker_engine, drop_guards


@pytest.fixture
def signed_step(app, plant):  # noqa: F811
    """A room check signed with the temperature out of limits (flagged, commented); every signature sealed and
    intact; then the guards of the records concerned dropped."""
    session = plant["session"]
    ex = perform(plant, "room_check", {"room_temperature": "26.0", "settle_plate_count": "0", "room_status": "Clean"},
                 comments={"room_temperature": "HVAC alarm, QA informed"})
    session.commit()
    value = ex.current_values()["room_temperature"]
    assert not value.in_limits and value.limit_message
    checked, mismatches = signatures.check_all(session)
    assert checked >= 1 and mismatches == []
    ids = (ex.id, value.id, ex.performed_signature_id)
    session.rollback()
    engine = attacker_engine(app)
    drop_guards(engine, "recorded_value", "signature", "signature_seal")
    return engine, ids


def _resign_unkeyed(engine: sa.Engine, session, execution_id: int, signature_id: int) -> None:
    """Recompute the signature's stored content and hash from the (changed) record, as an attacker can."""
    session.expire_all()
    content = canonical_json(session.get(StepExecution, execution_id).signed_content())
    session.rollback()
    with engine.begin() as conn:
            conn.execute(sa.update(Signature.__table__).where(Signature.__table__.c.id == signature_id)
                     .values(content=content, content_sha256=sha256_hex(content)))


def _mismatches(session, signature_id):
    session.expire_all()
    _checked, mismatches = signatures.check_all(session)
    session.rollback()
    return [m.problem for m in mismatches if m.signature_id == signature_id]


def _unkeyed_check_passes(session, signature_id: int) -> None:
    """The forgery is perfect without the key: stored content matches its hash and the record."""
    session.expire_all()
    sig = session.get(Signature, signature_id)
    record = session.get(StepExecution, int(sig.record_id))
    assert sha256_hex(sig.content) == sig.content_sha256 == sha256_hex(canonical_json(record.signed_content()))
    session.rollback()


def test_a_value_changed_with_its_signature_recomputed_is_caught_by_the_seal(app, session, signed_step):
    engine, (execution_id, value_id, signature_id) = signed_step
    with engine.begin() as conn:
        conn.execute(sa.update(RecordedValue.__table__).where(RecordedValue.__table__.c.id == value_id)
                     .values(raw="21.0", text="21.0", number=21, in_limits=True, limit_message=None))
    _resign_unkeyed(engine, session, execution_id, signature_id)
    _unkeyed_check_passes(session, signature_id)
    problems = _mismatches(session, signature_id)
    assert problems and "seal does not match" in problems[0]
    cli = app.test_cli_runner().invoke(args=["audit", "signatures"])
    assert cli.exit_code == 1 and f"signature {signature_id} on step_execution" in cli.output, cli.output


@pytest.mark.parametrize("change", [
    {"in_limits": True},  # unflagged
    {"limit_message": None},
    {"number": 21},  # the number a calculation or a trend reads, the text left as typed
])
def test_what_decides_a_values_meaning_is_inside_the_signed_content(session, signed_step, change):
    engine, (_execution_id, value_id, signature_id) = signed_step
    with engine.begin() as conn:
        conn.execute(sa.update(RecordedValue.__table__).where(RecordedValue.__table__.c.id == value_id)
                     .values(**change))
    assert _mismatches(session, signature_id) == ["the record's content changed after it was signed"]


def test_a_signature_whose_seal_is_deleted_or_forged_is_reported(app, session, signed_step):
    engine, (_execution_id, _value_id, signature_id) = signed_step
    table = SignatureSeal.__table__
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.signature_id == signature_id))
    assert "not sealed" in _mismatches(session, signature_id)[0]
    with engine.begin() as conn:  # a seal made with a key of the attacker's own
        sig = conn.execute(sa.select(Signature.__table__).where(Signature.__table__.c.id == signature_id)).one()
        manifest = SignatureManifest(sig.user_id, sig.username, sig.printed_name, sig.meaning, sig.signed_at,
                                     sig.record_type, sig.record_id, sig.content_sha256, sig.comment)
        conn.execute(sa.insert(table).values(signature_id=signature_id, key_id="k1-forged",
                                             seal=seal_signature(b"x" * 32, "k1-forged", manifest)))
    assert "not in this instance's audit key ring" in _mismatches(session, signature_id)[0]


@pytest.mark.parametrize("column,value", [("printed_name", "Someone Else"), ("meaning", "reviewed"),
                                          ("username", "oscar")])
def test_a_rewritten_manifest_is_caught_by_the_seal(session, signed_step, column, value):
    engine, (_execution_id, _value_id, signature_id) = signed_step
    with engine.begin() as conn:
        conn.execute(sa.update(Signature.__table__).where(Signature.__table__.c.id == signature_id)
                     .values(**{column: value}))
    problems = _mismatches(session, signature_id)
    assert problems and "seal does not match" in problems[0]


def test_a_signature_seal_is_never_a_head_seal():
    manifest = SignatureManifest(1, "ann", "Ann", "performed", __import__("datetime").datetime(
        2026, 12, 6, tzinfo=__import__("datetime").timezone.utc), "step_execution", "1", "0" * 64, None)
    text = signature_seal_text("k1", manifest)
    assert text.startswith("mfg signature seal v1\nk1\n") and json.loads(text.split("\n", 2)[2])["username"] == "ann"


def test_once_signatures_are_sealed_a_missing_seal_is_never_sealed_over(app, session, signed_step):
    """After the upgrade (init marks it with signature.sealed_existing), a signature found without a seal had it
    removed: `audit seal-existing` refuses, even when every seal was removed."""
    engine, (_execution_id, _value_id, signature_id) = signed_step
    assert signatures.seal_existing(session) == 0  # what init does: nothing to seal, the point marked
    session.commit()
    with engine.begin() as conn:
        conn.execute(sa.delete(SignatureSeal.__table__))
    session.expire_all()
    with pytest.raises(DomainError, match="were sealed before"):
        signatures.seal_existing(session)
    session.rollback()
    cli = app.test_cli_runner().invoke(args=["audit", "seal-existing"])
    assert cli.exit_code == 1 and "were sealed before" in cli.output, cli.output
    assert "not sealed" in _mismatches(session, signature_id)[0]


def test_the_upgrade_seals_signatures_that_never_had_one(app, session, plant):  # noqa: F811
    perform(plant, "room_check", {"room_temperature": "21.0", "settle_plate_count": "0", "room_status": "Clean"})
    session.commit()
    engine = attacker_engine(app)
    session.rollback()
    drop_guards(engine, "signature_seal")
    with engine.begin() as conn:  # a trail signed before migration 0017
        conn.execute(sa.delete(SignatureSeal.__table__))
    session.expire_all()
    assert all("not sealed" in m.problem for m in signatures.check_all(session)[1])
    session.rollback()
    cli = app.test_cli_runner().invoke(args=["audit", "seal-existing"])  # what init does at the upgrade
    assert cli.exit_code == 0 and "made before signatures were sealed" in cli.output, cli.output
    count = session.scalar(sa.select(sa.func.count()).select_from(Signature))
    assert count >= 1 and signatures.check_all(session) == (count, [])
    event = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "signature.sealed_existing"))
    assert json.loads(event.after)["sealed"] == count and "not that they are what" in event.after
    assert signatures.seal_existing(session) == 0  # once marked: nothing sealed, nothing recorded
    assert session.scalar(sa.select(sa.func.count()).where(AuditEntry.action == "signature.sealed_existing")) == 1


def test_a_signature_made_with_the_first_form_of_a_steps_content_still_verifies(session, signed_step):
    """A signature made before form 2 (no "form" key) is checked against the record's form-1 content."""
    engine, (execution_id, _value_id, signature_id) = signed_step
    session.expire_all()
    content = canonical_json(session.get(StepExecution, execution_id).signed_content(form=1))
    session.rollback()
    assert '"form"' not in content
    with engine.begin() as conn:  # as such a signature is after the upgrade sealed it
        conn.execute(sa.update(Signature.__table__).where(Signature.__table__.c.id == signature_id)
                     .values(content=content, content_sha256=sha256_hex(content)))
        conn.execute(sa.delete(SignatureSeal.__table__).where(SignatureSeal.__table__.c.signature_id == signature_id))
    session.expire_all()
    signatures._seal(session, [session.get(Signature, signature_id)])
    session.commit()
    assert _mismatches(session, signature_id) == []
    with engine.begin() as conn:  # and form 1 still holds the value's text
        conn.execute(sa.text("UPDATE recorded_value SET text = '21.0' WHERE id = :id"), {"id": _value_id})
    assert _mismatches(session, signature_id) == ["the record's content changed after it was signed"]
