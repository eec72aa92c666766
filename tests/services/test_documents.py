"""Signed documents of the demo NK batch: batch record, certificate of analysis and labels, checked by
extracting their text, decoding their barcodes and validating their signatures (no mocks)."""

from __future__ import annotations

import io
from zoneinfo import ZoneInfo

import pypdfium2
import pytest
import zxingcpp
from pypdf import PdfReader

from mfg.demo import nk_batch as demo_nk
from mfg.demo import seed as demo
from mfg.domain import isbt128
from mfg.domain.errors import ValidationFailed
from mfg.reports import pdf as pdfs
from mfg.reports.site_certificate import ensure_site_certificate
from mfg.services import batches, deviations, document_jobs, documents, review, signatures
from tests.support import PASSWORD, make_documents, recorded_back, settle_pending_results

from .test_demo_nk import nk_demo  # noqa: F401 - the fixture

UTC = ZoneInfo("UTC")


def _text(data: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]


def _sign(user):
    return {"signer": user, "password": PASSWORD, "username": user.username, "require_username": True}


@pytest.fixture
def site(tmp_path):
    ensure_site_certificate(tmp_path / "key.pem", tmp_path / "cert.pem", "Test site", demo=True)
    return pdfs.SiteSigner.from_files(tmp_path / "key.pem", tmp_path / "cert.pem")


def test_release_issues_a_signed_batch_record_and_certificate_and_labels_scan(
        nk_demo, app, session, make_user, site):  # noqa: F811
    quinn = session.merge(make_user("quinn", "qa", full_name="Quinn Quality"))
    olivia = nk_demo["olivia"]
    demo.seed_master_data(session)
    ended, today = recorded_back()  # the 14-day results can be read today
    subject = demo_nk.seed_demo_subject(session, nk_demo["clara"], PASSWORD, today=today)
    batch = demo_nk.run_nk_batch(session, subject=subject, performer=olivia, verifier=nk_demo["oscar"],
                                 password=PASSWORD, tz=UTC, now=ended)
    session.commit()

    # labels: printed, then a reprint needs a reason, is signed and counted, and shows in QA's review
    first = documents.print_labels(session, batch, reason="", site=site, demo=True, **_sign(olivia))
    with pytest.raises(ValidationFailed, match="reprint needs a reason"):
        documents.print_labels(session, batch, reason=" ", site=site, demo=True, **_sign(olivia))
    again = documents.print_labels(session, batch, reason="label smudged", site=site, demo=True, **_sign(olivia))
    session.commit()
    assert (first.revision, again.revision) == (1, 2)
    assert signatures.for_record(session, again)[0].meaning == "performed"
    assert "REPRINT 1" in _text(again.content)[0] and "REPRINT" not in _text(first.content)[0]
    image = pypdfium2.PdfDocument(again.content)[0].render(scale=600 / 72).to_pil()
    decoded = {b.text for b in zxingcpp.read_barcodes(image)}
    din = isbt128.din_from_text(batch.din)
    coi = isbt128.parse_coi(isbt128.COI_PREFIX + subject.coi)
    assert {din.barcode("00"), "=<S9999V00", coi.barcode()} <= decoded
    assert "label reprint" in [i.kind for i in review.exceptions(session, batch)]

    deviation = deviations.open_by_hand(session, batch, description="Incubator door ajar 2 min on day 9", user=olivia)
    deviations.investigate(session, deviation, classification="minor", investigation="Door alarm log reviewed",
                       root_cause="Latch not engaged", impact="None: temperature and CO2 stayed in range",
                       capa_reference="", user=quinn)
    deviations.close(session, deviation, **_sign(quinn))
    for item in review.exceptions(session, batch):
        review.mark_reviewed(session, batch, item.key, user=quinn)
    _decision, job = documents.decide_and_request_documents(session, batch, decision="conditionally_released",
                                                            comment="", **_sign(quinn))
    session.commit()  # the decision commits with its documents job, and no document yet
    assert job.status == "pending" and job.kind_list == ["batch_record", "coa"]
    assert document_jobs.documents_pending(session, batch) and not documents.revisions(session, batch, "coa")
    record, coa = make_documents(app, site)  # the worker, after the decision's transaction
    assert not document_jobs.documents_pending(session, batch)
    assert record.created_by_id == coa.created_by_id == quinn.id

    pages = _text(record.content)
    assert record.pages == len(pages) > 5
    assert all(f"Page {n} of {len(pages)}" in text for n, text in enumerate(pages, start=1))
    assert all(batch.lot in text and coi.eye_readable() in text for text in pages)  # lot and COI on every page
    whole = " ".join(pages).replace("\n", " ")
    for master in batches.records(batch):  # every step of every record, with its manifestations
        for stage in master.stages:
            assert stage.title in whole
            for step in stage.steps:
                assert step.title in whole, step.title
    assert deviation.number in whole and "Latch not engaged" in whole and "Approved by: Quinn Quality" in whole
    assert "Performed by: Olivia Person (olivia)" in whole and "Verified by: Oscar Person (oscar)" in whole
    assert "Released by: Quinn Quality (quinn)" in whole and "sha256" in whole
    assert "DEMO" in whole and "Viable NK cells per culture day" in whole
    coa_text = " ".join(_text(coa.content))
    assert "PENDING" in coa_text and "NK-001" in coa_text and "Certificate of analysis" in coa_text
    # NK-RELEASE v3: every final-product test with its method and specification; both sterility reads pending
    coa_flat = " ".join(coa_text.split())
    for test, method in (("Sterility (14-day culture)", "Compendial culture, 14 days"),
                         ("Sterility (preliminary read)", "Automated culture, preliminary read at 48-72 h"),
                         ("Gram stain", "Gram stain, smear microscopy"),
                         ("Endotoxin", "Kinetic chromogenic LAL"),
                         ("Mycoplasma (PCR, pre-wash cells and supernatant)", "Validated qPCR"),
                         ("Specific lysis at 20:1", "4-hour cytotoxicity assay vs K562"),
                         ("Cell dose as % of the assigned dose level", "calculated")):
        assert test in coa_flat and method in coa_flat, test
    assert coa_flat.count("(PENDING: a supplemental certificate follows") == 2
    assert "Method" in coa_flat and "80" in coa_flat.partition("Cell dose as % of the assigned dose level")[2][:80]

    check = documents.verify(session, record.content, site.certificate)
    assert check.valid and "revision 1" in check.summary[1]
    tampered = bytearray(record.content)
    tampered[len(tampered) // 3] ^= 0x01
    assert not documents.verify(session, bytes(tampered), site.certificate).valid

    # the preliminary read and the 14-day result: their own result entries, verified; reviewed; the final
    # release issues new revisions (the supplemental certificate)
    settle_pending_results(session, batch, enterer=olivia, verifier=nk_demo["oscar"], tz=UTC)
    for item in review.exceptions(session, batch):
        if item.key not in review.marks(session, batch):
            review.mark_reviewed(session, batch, item.key, user=quinn)
    documents.decide_and_request_documents(session, batch, decision="released", comment="final results",
                                           **_sign(quinn))
    session.commit()
    record2, coa2 = make_documents(app, site)
    assert (record2.revision, coa2.revision) == (2, 2)
    supplemental = " ".join(" ".join(t.split()) for t in _text(coa2.content))
    assert "SUPPLEMENTAL" in supplemental and "Supplemental: supersedes revision 1" in supplemental
    assert "No growth (final result; pending at release" in supplemental
    amended = " ".join(" ".join(t.split()) for t in _text(record2.content))
    assert "pending at release → No growth" in amended  # the pending stays, the result beside it
    assert [d.revision for d in documents.revisions(session, batch, "coa")] == [1, 2]  # every revision kept
    assert documents.verify(session, record.content, site.certificate).valid  # revision 1 still verifies
