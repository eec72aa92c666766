"""The cohort ledger as a signed PDF/A-3b (issue [3.7]): built through the real services (two cohorts opened by
signed escalation decisions, infusions by two-person bedside checks, DLT events signed by the clinic), rendered,
its text read back with pypdf, its signature validated against the site certificate, stored append-only and
accepted by ``verify-pdf``; the batch record and the certificate of analysis name the decision that opened the
batch's dose level."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shutil
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from mfg.config import RESOURCE_ROOT
from mfg.domain import dose, isbt128
from mfg.domain.canonical import canonical_json
from mfg.models import AuditEntry, LedgerDocument, StepExecution, utcnow
from mfg.reports import pdf as pdfs
from mfg.services import bags, clinical, custody, documents, ledger_documents, sops, starting, trial
from tests.support import PASSWORD, app_refusal, eligible_enrolment, open_level

TODAY = date.today()


def _text(data: bytes) -> str:
    """Every page's text, white space runs made one space (a table cell may wrap anywhere)."""
    return " ".join(" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(data)).pages)


@pytest.fixture
def trial_site(app, session, make_user, sops_dir, site_certificate):
    """The NK master records and trial configuration approved; a coordinator, a nurse, an operator and QA; the
    site's signer."""
    shutil.copytree(RESOURCE_ROOT / "sops" / "nk", sops_dir / "nk")
    shutil.copytree(RESOURCE_ROOT / "sops" / "trial", sops_dir / "trial")
    loader, approver = session.merge(make_user("loader", "qa")), session.merge(make_user("approver", "qa"))
    users = {name: session.merge(make_user(name, role, full_name=full))
             for name, role, full in (("clara", "clinical", "Clara Coordinator"), ("nina", "clinical", "Nina Nurse"),
                                      ("olivia", "operator", "Olivia Operator"), ("quinn", "qa", "Quinn Quality"))}
    for version in sops.load_directory(session, sops_dir, loader=loader).loaded:
        sops.approve(session, version, site_timezone="UTC", signer=approver, password=PASSWORD, username=None,
                     require_username=False)
    session.commit()
    users["site"] = pdfs.load_site_signer(app.config, Path(app.instance_path))
    return users


def _subject(session, clara, code: str, level: str):
    """A subject with an eligible donor of their own, assigned ``level`` (opened by signed decisions first), and
    their batch started (which pins the dose and the decision)."""
    donor = clinical.register_donor(session, code=f"D-{code}", abo_rh="A+", relationship="transplant_donor", user=clara)
    panel = {test: "non-reactive" for test in clinical.donor_panel(session)}
    clinical.record_donor_panel(session, donor, results=panel, specimen_date=TODAY - timedelta(days=2), user=clara)
    subject = clinical.enrol_subject(session, code=code, donor=donor, weight_kg="62.4", measured_on=TODAY, user=clara,
                                     **eligible_enrolment(session, TODAY))
    clinical.determine_eligibility(session, donor, eligible=True, summary="complete", user=clara)
    open_level(session, clara, level)
    clinical.assign_dose_level(session, subject, level=level, signer=clara, password=PASSWORD, username=None,
                               require_username=False)
    return subject


def _infuse(session, users, subject, nk_cells: int):
    """Start the subject's batch, give it one bag of ``nk_cells`` and QA's release (set here: made and tested in
    test_bags.py and test_review*.py), and infuse it: the two-person bedside check."""
    batch = starting.start_product_batch(session, subject=subject, user=users["olivia"])
    execution = StepExecution(batch_id=batch.id, sop_version_id=batch.master_records[-1].sop_version_id,
                              stage_id="formulation", step_id="bag_preparation", instance=1,
                              definition_sha256="0" * 64, status="complete", performed_by_id=users["olivia"].id,
                              performed_at=utcnow())
    session.add(execution)
    session.flush()
    [bag] = bags.create(session, batch, execution, [dose.Bag(
        index=1, volume_ml=Decimal("13.4"), nk_cells=nk_cells, viable_cells=nk_cells + 10_000_000,
        expires_at=utcnow() + timedelta(hours=48))])
    batch.status = "released"
    session.flush()

    def scan(name):
        return custody.BedsideScan(user=users[name], username=name, password=PASSWORD,
                                   scanned_din=isbt128.din_from_text(batch.din).barcode("00"),
                                   scanned_coi=isbt128.parse_coi(isbt128.COI_PREFIX + subject.coi).barcode(),
                                   scanned_bag=isbt128.PRODUCT_CODE_PREFIX + bag.product_code)

    custody.bedside_check(session, batch, first=scan("clara"), second=scan("nina"))
    return batch


def _dlt(session, clara, subject, term, grade, attribution, is_dlt):
    return trial.record_dlt(session, subject, term=term, grade=grade, attribution=attribution, onset_on=TODAY,
                            is_dlt=is_dlt, comment="", signer=clara, password=PASSWORD, username=None,
                            require_username=False)


def test_the_cohort_ledger_is_a_signed_pdf_a_with_every_cohort_dlt_and_decision_and_verify_pdf_accepts_it(
        app, session, trial_site, tmp_path, client, login):
    users, site, clara = trial_site, trial_site["site"], trial_site["clara"]
    first = _subject(session, clara, "S-01", "DL1")  # decision 1 starts DL1: cohort 1
    first_batch = _infuse(session, users, first, 62_400_000)  # 1.00 × 10⁶ NK cells/kg: the level exactly
    second = _subject(session, clara, "S-02", "DL2")  # decision 2 escalates to DL2 (with a reason): cohort 2
    second_batch = _infuse(session, users, second, 120_000_000)  # 1.92 × 10⁶/kg: 36 % under DL2
    _dlt(session, clara, first, "Cytokine release syndrome", 3, "probable", True)
    _dlt(session, clara, second, "Fatigue", 1, "unlikely", False)
    session.commit()

    record, content = ledger_documents.issue_ledger(session, site=site, demo=True, user=users["quinn"],
                                                    reason="safety review 1")
    session.commit()
    assert (record.revision, record.filename) == (1, "cohort-ledger-NCT05744440-r1.pdf")
    assert record.content == content and record.sha256 == pdfs.sha256_hex(content)

    # the text: design, each cohort's subjects with their batch, infusion, status, events and doses
    text = _text(content)
    decisions = trial.signed_decisions(session)
    assert [(d.action, d.level) for d, _ in decisions] == [("start", "DL1"), ("escalate", "DL2")]
    (d1, s1), (d2, s2) = decisions
    assert "Cohort ledger · trial NCT05744440" in text and "configuration NK-TRIAL v5" in text
    assert "Rule 3+3" in text and "cohort size 3 · DLT window 30 days after infusion · start level DL1" in text
    assert "achieved dose tolerance 20 %" in text
    book = trial.ledger(session)
    infused = {row.subject.code: row for row in book.rows}
    cohort_1 = text[text.index("Cohort 1 · DL1"):text.index("Cohort 2 · DL2")]
    cohort_2 = text[text.index("Cohort 2 · DL2"):text.index("Counts per level")]
    assert f"Opened by {trial.decision_name(d1, s1)}" in cohort_1
    assert f"S-01 DL1 {first_batch.lot} {infused['S-01'].infused_at:%Y-%m-%d %H:%M} UTC" in cohort_1
    assert f"{infused['S-01'].window_closes:%Y-%m-%d %H:%M} UTC DLT" in cohort_1
    assert "1.00 × 10⁶ · 1.00 × 10⁶" in cohort_1 and "FLAG" not in cohort_1
    assert (f"Adverse event S-01: Cytokine release syndrome, grade 3, attribution probable, onset {TODAY} · DLT: yes "
            "· Performed by Clara Coordinator") in cohort_1
    assert "S-02" not in cohort_1
    assert f"Opened by {trial.decision_name(d2, s2)}" in cohort_2
    assert f"S-02 DL2 {second_batch.lot}" in cohort_2
    assert re.search(r"in DLT window, (29|30) days left", cohort_2)
    assert "3.00 × 10⁶ · 1.92 × 10⁶" in cohort_2
    assert "FLAG S-02: achieved NK dose 36 % from the assigned level (tolerance 20 %)" in cohort_2
    assert f"Adverse event S-02: Fatigue, grade 1, attribution unlikely, onset {TODAY} · DLT: no" in cohort_2
    # the counts, the rule's recommendation, every signed decision with its signature's manifestation
    assert "DL1 1.00 × 10⁶ (1 x 10^6 NK cells/kg) 1 1 0" in text  # evaluable at once with the DLT
    assert "DL2 3.00 × 10⁶ (3 x 10^6 NK cells/kg) 0 0 1 open" in text
    assert book.recommendation.text in text
    signed_at = [f"{s.signed_at:%Y-%m-%d %H:%M} UTC" for s in (s1, s2)]
    assert (f"Escalation decision {d1.id}: start · DL1 · recommended start (DL1) Approved by: Clara Coordinator, "
            f"{signed_at[0]}") in text
    assert (f"Escalation decision {d2.id}: escalate · DL2 (from DL1) · recommended wait (DL1) · reason: "
            f"{d2.reason} Approved by: Clara Coordinator, {signed_at[1]}") in text
    assert "DEMO — NOT FOR CLINICAL USE" in text and "Audit position at issue: entry" in text

    # signed with the site key, for real; the data it shows is what it embeds
    check = pdfs.verify_pdf(content, site.certificate)
    assert check.valid and check.intact and check.trusted, check.reason
    assert check.attachment_name == "cohort-ledger.json"
    embedded = json.loads(check.attachment)
    assert check.attachment == canonical_json(embedded).encode()
    assert [[s["code"] for s in c["subjects"]] for c in embedded["cohorts"]] == [["S-01"], ["S-02"]]
    assert embedded["cohorts"][0]["subjects"][0]["events"][0]["signatures"][0]["printed_name"] == "Clara Coordinator"
    assert embedded["cohorts"][1]["subjects"][0]["achieved_nk_per_kg"] == str(Decimal(120_000_000) / Decimal("62.4"))
    entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.entity_type == "ledger_document"))
    assert entry.action == "ledger_document.create"
    assert entry.reason == "Cohort ledger revision 1 issued: safety review 1"
    assert record.sha256 in entry.after and "content" not in json.loads(entry.after)

    # verify-pdf accepts a filed copy, and nothing else
    filed = tmp_path / record.filename
    filed.write_bytes(content)
    verified = app.test_cli_runner().invoke(args=["verify-pdf", str(filed)])
    assert verified.exit_code == 0, verified.output
    assert "document: Cohort ledger revision 1 issued" in verified.output and "VALID" in verified.output
    assert "no later revision issued" in verified.output
    tampered = bytearray(content)
    tampered[len(tampered) // 3] ^= 0x01
    filed.write_bytes(bytes(tampered))
    assert app.test_cli_runner().invoke(args=["verify-pdf", str(filed)]).exit_code == 1
    unsigned = ledger_documents.render_ledger(embedded, revision=1, reason="x", demo=True, generated_at="now",
                                              anchor=None)
    resigned = pdfs.sign_pdf(unsigned, site, reason="not issued", location="test")  # signed, never stored
    assert not documents.verify(session, resigned, site.certificate).valid

    # every issued revision stays: a second one after another event; the first still verifies; append-only
    _dlt(session, clara, second, "Neutropenia", 4, "possible", True)
    session.commit()
    again, _ = ledger_documents.issue_ledger(session, site=site, demo=True, user=users["quinn"],
                                             reason="safety review 2")
    session.commit()
    assert again.revision == 2 and "Neutropenia, grade 4" in _text(again.content)
    assert [d.revision for d in ledger_documents.ledger_documents(session)] == [1, 2]
    assert ledger_documents.get_ledger_document(session, record.id).content == content
    first_check = documents.verify(session, content, site.certificate)
    assert first_check.valid and "since issue: 1 later revision(s) of the ledger issued" in first_check.summary
    with pytest.raises(sa.exc.DBAPIError, match=app_refusal(app, "UPDATE", "ledger_document")):
        session.execute(sa.update(LedgerDocument).where(LedgerDocument.id == record.id).values(reason="changed"))
    session.rollback()

    # the batch record and the certificate of analysis name the signed decision that opened the batch's level
    line = (f"Dose level DL2 opened by escalation decision {d2.id}: escalate, Approved by Clara Coordinator "
            f"{signed_at[1]}")
    for kind in ("batch_record", "coa"):
        issued = documents.issue(session, second_batch, kind=kind, reason="ledger test", site=site, demo=True,
                                 user=users["quinn"])
        assert line in _text(issued.content), kind
        assert pdfs.verify_pdf(issued.content, site.certificate).valid
    record_first = documents.issue(session, first_batch, kind="batch_record", reason="ledger test", site=site,
                                   demo=True, user=users["quinn"])
    assert (f"Dose level DL1 opened by escalation decision {d1.id}: start, Approved by Clara Coordinator "
            f"{signed_at[0]}") in _text(record_first.content)
    session.commit()
    login("quinn")  # the batch screen names it where it shows the dose
    page = " ".join(client.get(f"/batches/{second_batch.id}").get_data(as_text=True).split())
    assert f"measured {TODAY} · opened by {trial.decision_name(d2, s2)}" in page


def test_a_boin_design_prints_its_target_rate_and_boundaries(trial_site, session):
    """λe and λd from domain.escalation.boin_boundaries (target 0.3: 0.2365 and 0.3585, Liu and Yuan 2015)."""
    book = trial.ledger(session)
    boin = dataclasses.replace(book, design=book.design.model_copy(update={"rule": "boin", "target_dlt_rate": 0.3}))
    content = ledger_documents.ledger_content(session, boin, now=utcnow())
    assert content["design"]["boin"] == {"target": 0.3, "escalate": 0.2365, "de_escalate": 0.3585}
    text = _text(ledger_documents.render_ledger(content, revision=1, reason="design check", demo=False,
                                                generated_at="now", anchor=None))
    assert "BOIN, target DLT rate 0.3 · λe = 0.2365 (escalate if DLT rate ≤ λe) · λd = 0.3585" in text
    assert "No subject assigned to a cohort yet." in text and "None signed yet." in text
    assert "DEMO — NOT FOR CLINICAL USE" not in text
