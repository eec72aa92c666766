"""Anchors outside the system (issue [3.5] item 4): every signed document carries the sealed audit position at
its issue, in its metadata and on every page; `verify-pdf` checks it against the trail and names what changed in
the data since issue.

The anchor is what still helps against someone holding both the database and the instance's audit key: they can
rewrite the trail and seal the new head (``audit verify`` then says intact), but not the documents already
issued, whose audit position no longer matches the rewritten trail.
"""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from mfg.domain.audit_chain import ChainHead, parse_anchor_keyword, seal_head
from mfg.models import AuditEntry, AuditHead, RecordedValue
from mfg.reports import pdf as pdfs
from mfg.reports.site_certificate import ensure_site_certificate
from mfg.services import audit, documents
from tests.services.test_audit_seal import _rechain
from tests.services.test_batch_engine import perform, plant  # noqa: F401, F811  (the fixture)
from tests.support import attacker_engine, drop_guards


@pytest.fixture
def site(tmp_path):
    ensure_site_certificate(tmp_path / "key.pem", tmp_path / "cert.pem", "Test site", demo=True)
    return pdfs.SiteSigner.from_files(tmp_path / "key.pem", tmp_path / "cert.pem")


@pytest.fixture
def issued(app, plant, site, tmp_path):  # noqa: F811
    """A room check recorded at 26.0 (out of limits, commented), then the batch record issued and saved to a file."""
    session = plant["session"]
    ex = perform(plant, "room_check", {"room_temperature": "26.0", "settle_plate_count": "0", "room_status": "Clean"},
                 comments={"room_temperature": "HVAC alarm, QA informed"})
    session.commit()
    head_at_issue = session.scalar(sa.select(AuditHead.seq))
    record = documents.issue(session, plant["batch"], kind="batch_record", reason="for the anchor test", site=site,
                             demo=True, user=plant["olivia"])
    session.commit()
    path = tmp_path / record.filename
    path.write_bytes(record.content)
    value_id = ex.current_values()["room_temperature"].id
    session.rollback()
    return {"path": path, "content": record.content, "head_at_issue": head_at_issue, "value_id": value_id,
            "site": site, "session": session}


def test_a_document_carries_its_sealed_audit_position_in_metadata_and_on_every_page(app, issued):
    session = issued["session"]
    anchor = parse_anchor_keyword(pdfs.keywords(issued["content"]))
    assert anchor is not None and anchor.seq == issued["head_at_issue"]
    stored = session.scalar(sa.select(AuditEntry.entry_hash).where(AuditEntry.seq == anchor.seq))
    assert anchor.entry_hash == stored
    reader = PdfReader(io.BytesIO(issued["content"]))
    assert "mfg-audit-anchor-v1" in reader.xmp_metadata.pdf_keywords  # the XMP says what the Info dict says
    for page in reader.pages:
        flat = " ".join(page.extract_text().split())
        assert f"Audit position at issue: entry {anchor.seq}" in flat and anchor.key_id in flat
    check = documents.verify(session, issued["content"], issued["site"].certificate)
    assert check.valid, check
    assert any(f"audit position: entry {anchor.seq}" in line and "still extends it" in line for line in check.summary)
    assert not any("room_temperature" in line for line in check.summary)  # nothing it shows has changed


def test_a_value_changed_after_issue_is_named_by_verify_pdf(app, issued):
    """Someone with database access alone changes a recorded value: the document is still the one issued (valid),
    and verify-pdf names the value that no longer says what the document says."""
    session = issued["session"]
    engine = attacker_engine(app)
    drop_guards(engine, "recorded_value")
    with engine.begin() as conn:
        conn.execute(sa.update(RecordedValue.__table__).where(RecordedValue.__table__.c.id == issued["value_id"])
                     .values(raw="21.0", text="21.0", number=21, in_limits=True, limit_message=None))
    session.expire_all()
    check = documents.verify(session, issued["content"], issued["site"].certificate)
    assert check.valid, check
    changed = {line.split(": ", 1)[0].strip(): line.split(": ", 1)[1] for line in check.summary
               if ".values[room_temperature].value." in line}
    where = "records[DEMO-PROC].stages[preparation].steps[room_check].values[room_temperature].value"
    assert changed[f"{where}.text"] == '"26.0 °C" at issue, now "21.0 °C"', check.summary
    assert changed[f"{where}.in_limits"] == "false at issue, now true"


def test_a_trail_rewritten_and_resealed_with_the_key_is_reported_against_the_document(app, issued):
    """Someone holding the database AND the instance key rewrites an entry from before the document's issue,
    recomputes the chain and seals the new head: `audit verify` cannot tell, the document's anchor can."""
    session = issued["session"]
    engine = attacker_engine(app)
    value_entry = session.scalar(sa.select(AuditEntry.seq).where(
        AuditEntry.action == "recorded_value.create", AuditEntry.entity_id == str(issued["value_id"])))
    assert value_entry < issued["head_at_issue"]
    key_id, key = audit.key_ring(session).current
    session.rollback()
    drop_guards(engine, "audit_entry")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_entry SET after = replace(after, '26.0', '21.0') WHERE seq = :seq"),
                     {"seq": value_entry})
        _rechain(conn)
        head = conn.execute(sa.select(AuditHead.seq, AuditHead.entry_hash, AuditHead.max_at,
                                      AuditHead.unordered_at)).one()
        conn.execute(sa.update(AuditHead.__table__).values(seal_key_id=key_id,
                                                           seal=seal_head(key, key_id, ChainHead(*head))))
    assert audit.verify(session).ok  # the key holder's forgery passes the trail's own check
    session.rollback()
    check = documents.verify(session, issued["content"], issued["site"].certificate)
    assert not check.valid
    assert f"entry {issued['head_at_issue']}'s hash differs from the anchor's" in check.reason, check.reason
    session.rollback()
    # and `audit verify --anchors` with the document among the anchors kept off-site
    cli = app.test_cli_runner().invoke(args=["audit", "verify", "--anchors", str(issued["path"].parent)])
    assert cli.exit_code == 1, cli.output
    assert "audit trail intact" in cli.output  # the chain and the key holder's seal say nothing is wrong
    assert issued["path"].name in cli.output and f"entry {issued['head_at_issue']}'s hash differs" in cli.output


def test_verify_anchors_checks_the_documents_in_the_folder(app, issued):
    cli = app.test_cli_runner().invoke(args=["audit", "verify", "--anchors", str(issued["path"].parent)])
    assert cli.exit_code == 0, cli.output
    assert issued["path"].name in cli.output and f"entry {issued['head_at_issue']}" in cli.output
