"""Signed documents of the demo NK batch: batch record, certificate of analysis and labels, checked by
extracting their text, decoding their barcodes and validating their signatures (no mocks)."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
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


# NK-RELEASE v4's tests on the certificate: (test, method, specification in words)
TESTS = (
    ("Sterility (14-day culture)", "Compendial culture, 14 days", "No growth at 14 days"),
    ("Sterility (preliminary read)", "Automated culture, preliminary read at 48-72 h",
     "No growth at the preliminary read (48-72 h)"),
    ("Gram stain", "Gram stain, smear microscopy", "No organisms seen"),
    ("Endotoxin", "Kinetic chromogenic LAL", "< 5.0 EU/mL"),
    ("Mycoplasma (PCR, pre-wash cells and supernatant)", "Validated qPCR", "Not detected"),
    ("Viability", "Automated count, fluorescent viability dye", "> 70 %"),
    ("CD3-CD56+ (NK purity)", "Flow cytometry (CD3/CD56)", "> 70 % CD3⁻CD56⁺ cells"),
    ("Residual feeder cells", "Flow cytometry (feeder-specific marker)", "< 0.1 %"),
    ("HLA identity", "HLA typing, rapid PCR-SSP", "HLA typing matches the NK donor"),
    ("Specific lysis at 20:1", "4-hour cytotoxicity assay vs K562", "> 20 % lysis at 20:1 effector:target"),
    ("Cell dose as % of the assigned dose level", "Calculated: volume filled × viable cell concentration",
     "80-120 % of the assigned dose level"),
    ("Residual T cells per kg", "Calculated: volume filled × viable cell concentration × CD3⁺ fraction",
     "< 2.00 × 10⁵ CD3⁺ cells/kg"),
    ("Endotoxin per kg", "Calculated: volume filled × endotoxin per mL", "≤ 5 EU/kg"),
)
# What is recorded in the release record but is no test with a specification
NOT_TESTS = ("Total volume sampled", "Volume filled for the subject", "Results against NK-SPEC v2",
             "Spike recovery", "Viable cell concentration", "Samples drawn", "Specification confirmed",
             "Subject weight used", "NK cells delivered per kg", "Biosafety cabinet")


def _squeeze(text: str) -> str:
    return "".join(text.split())


def assert_only_tests(flat: str) -> None:
    for label in NOT_TESTS:
        assert _squeeze(label) not in _squeeze(flat), label
    assert flat.count("Endotoxin") == 2 + flat.count("Endotoxin reader")  # per mL and per kg, nothing else
    assert " pass" not in flat  # the engine's pass/fail column is gone; the result says whether it meets


def assert_sample_and_test_dates(data: bytes) -> None:
    """Every test row has a sample date and, unless pending, a test date (read from the embedded data,
    which is what the certificate prints)."""
    rows = json.loads(pdfs.embedded_file(data))["tests"]
    assert [r["test"] for r in rows] == [t for t, _, _ in TESTS]
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", row["sampled"]), row
        assert row["pending"] or re.fullmatch(r"\d{4}-\d{2}-\d{2}", row["tested"]), row


def assert_site_product_and_storage(flat: str) -> None:
    for statement in ("DEMO Cell Therapy Facility", "1 Example Way", "Demo City, DC 00000, USA",
                      "Allogeneic NK cells, expanded, for infusion",
                      "Store at 2-8 °C. Do not freeze. Do not irradiate."):
        assert _squeeze(statement) in _squeeze(flat), statement


def assert_no_audit_trail(document) -> None:  # noqa: ANN001
    text = " ".join(_text(document.content))
    embedded = pdfs.embedded_file(document.content).decode()
    assert "Audit trail" not in text and "audit_trail" not in embedded and "audit_head" not in embedded
    assert "records" not in json.loads(embedded)  # not the batch snapshot: no manufacturing steps


def assert_no_microseconds(*texts: str) -> None:
    for text in texts:
        assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d+", text) and not re.search(r"T\d{2}:\d{2}:\d{2}", text)


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
    # limits in the one wording people read on the screens (words.limits), never the engine's or a config id
    assert "≥ " in whole and ">= " not in whole and "<= " not in whole and "trial.cd3_limit_per_kg" not in whole
    coa_text = " ".join(_text(coa.content))
    assert "PENDING" in coa_text and "NK-001" in coa_text and "Certificate of analysis" in coa_text
    coa_flat = " ".join(coa_text.split())
    if os.environ.get("MFG_DUMP_DOCUMENTS"):  # for reading what the documents say while changing them
        Path(os.environ["MFG_DUMP_DOCUMENTS"]).write_text("\n".join(_text(coa.content)) + "\n=====\n" + "\n".join(
            _text(documents.revisions(session, batch, "labels")[-1].content)) + "\n=====\n" + "\n".join(pages))
    # NK-RELEASE v4: only the tests with a specification, each with its method and specification in words
    for test, method, specification in TESTS:  # compared without white space: a narrow column wraps anywhere
        assert all(_squeeze(part) in _squeeze(coa_flat) for part in (test, method, specification)), test
    assert coa_flat.count("(PENDING: a supplemental certificate follows") == 2
    for header in ("Test", "Method", "Sampled", "Tested", "Specification", "Result"):
        assert header in coa_flat
    assert_only_tests(coa_flat)
    assert_sample_and_test_dates(coa.content)
    assert_site_product_and_storage(coa_flat)
    assert_no_audit_trail(coa)
    labels = documents.revisions(session, batch, "labels")[-1]
    label_flat = " ".join(" ".join(_text(labels.content)).split())
    assert_site_product_and_storage(label_flat)  # the same statements on the label as on the certificate
    assert "Contains 5 % human serum albumin in 0.9 % sodium chloride" in label_flat
    assert_no_audit_trail(labels)
    assert_no_microseconds(coa_flat, label_flat, " ".join(" ".join(t.split()) for t in pages))
    # the batch record prints its audit trail one line an entry and embeds the whole snapshot, raw entries included
    embedded = json.loads(pdfs.embedded_file(record.content))
    assert embedded["audit_trail"] and "before" in embedded["audit_trail"][0]
    assert "Audit trail of this batch" in whole and "recorded value created" in whole
    assert re.search(r"step execution changed .*status: in_progress → ", whole) or "status:" in whole

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
    if os.environ.get("MFG_DUMP_DOCUMENTS"):
        Path(os.environ["MFG_DUMP_DOCUMENTS"] + ".2").write_text("\n".join(_text(coa2.content)))
    assert "SUPPLEMENTAL" in supplemental and "Supplemental: supersedes revision 1" in supplemental
    assert "pending" not in supplemental.lower()  # final results only: no pending row, no pending review
    for test, method, specification in TESTS:
        assert all(_squeeze(part) in _squeeze(supplemental) for part in (test, method, specification)), test
    assert "No growth · meets" in supplemental
    assert_only_tests(supplemental)
    assert_no_audit_trail(coa2)
    if os.environ.get("MFG_WRITE_COA_EXAMPLE"):  # docs/coa-example.txt: the text QA reads, as extracted
        Path(os.environ["MFG_WRITE_COA_EXAMPLE"]).write_text(
            "# Text extracted with pypdf from the demo batch's certificate of analysis (tests/services/"
            "test_documents.py)\n\n## Revision 1 (conditional release)\n\n" + "\n".join(_text(coa.content))
            + "\n\n## Revision 2 (supplemental, final results)\n\n" + "\n".join(_text(coa2.content)) + "\n",
            encoding="utf-8")
    amended = " ".join(" ".join(t.split()) for t in _text(record2.content))
    assert "pending at release → No growth" in amended  # the pending stays, the result beside it
    assert [d.revision for d in documents.revisions(session, batch, "coa")] == [1, 2]  # every revision kept
    assert documents.verify(session, record.content, site.certificate).valid  # revision 1 still verifies
