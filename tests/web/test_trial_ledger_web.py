"""The cohort ledger screen (issue [3.7] items 4 and 6): open to the clinical and QA roles; the clinic signs
adverse events and the safety review's decision from it; refusals name the rule; the subject page names the cohort
and the decision that opened the level."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from mfg.config import RESOURCE_ROOT
from mfg.demo import nk_batch as demo_nk
from mfg.extensions import db
from mfg.models import EscalationDecision, Signature, Subject
from mfg.services import audit, sops
from tests.support import PASSWORD


@pytest.fixture
def trial_app(app, make_user):
    sops_dir = Path(app.config["SOPS_DIR"])
    shutil.copytree(RESOURCE_ROOT / "sops" / "nk", sops_dir / "nk")
    shutil.copytree(RESOURCE_ROOT / "sops" / "trial", sops_dir / "trial")
    loader, approver = make_user("loader", "qa"), make_user("approver", "qa")
    make_user("clara", "clinical", full_name="Clara Coordinator")
    make_user("quinn", "qa", full_name="Quinn Quality")
    make_user("olivia", "operator")
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        for version in sops.load_directory(s, sops_dir, loader=s.merge(loader)).loaded:
            sops.approve(s, version, site_timezone="UTC", signer=s.merge(approver), password=PASSWORD,
                         username=None, require_username=False)
        s.commit()
    return app


def _text(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


def _decision(client, level, reason="", based_on=""):
    return client.post("/trial/decisions", data={"decision-level": level, "decision-reason": reason,
                                                 "decision-based_on": based_on, "decision-username": "clara",
                                                 "decision-password": PASSWORD})


def test_the_clinic_opens_the_start_level_and_planning_follows_the_decision(trial_app, client, login):
    login("clara")
    page = client.get("/trial/")
    assert page.status_code == 200
    text = _text(page)
    assert "Open to new subjects no level: no escalation decision has been signed" in text
    assert "Recommendation start (DL1): no level is open yet: open the start level DL1" in text
    skipped = _decision(client, "DL2", reason="faster")
    assert skipped.status_code == 400 and "DL2 skips a level: at most DL1 may be opened now" in _text(skipped)
    assert _decision(client, "DL1").status_code == 302
    with trial_app.app_context():
        decision = db.session.scalar(sa.select(EscalationDecision))
        assert (decision.action, decision.level) == ("start", "DL1")
        assert db.session.scalar(sa.select(Signature.meaning).where(Signature.record_type == "escalation_decision"))\
            == "approved"
        clara = db.session.scalar(sa.select(Subject.id).limit(1))
        assert clara is None
        audit.set_actor(db.session, name="test-setup")
        from mfg.models import User

        user = db.session.scalar(sa.select(User).where(User.username == "clara"))
        subject = demo_nk.seed_demo_subject(db.session, user, PASSWORD, code="S-01", dose_level=None)
        db.session.commit()
        subject_id = subject.id
    refused = client.post(f"/clinical/subjects/{subject_id}/dose",
                          data={"level": "DL2", "username": "clara", "password": PASSWORD})
    assert refused.status_code == 400
    assert f"dose level DL2 is not open: escalation decision {decision.id} (DL1, Approved by Clara Coordinator" \
        in _text(refused)
    assert client.post(f"/clinical/subjects/{subject_id}/dose",
                       data={"level": "DL1", "username": "clara", "password": PASSWORD}).status_code == 302
    subject_page = _text(client.get(f"/clinical/subjects/{subject_id}"))
    assert f"Cohort 1, opened by escalation decision {decision.id} (DL1" in subject_page
    ledger = _text(client.get("/trial/"))
    assert "S-01 DL1" in ledger and "assigned" in ledger
    # a second decision made on the ledger shown before the first is refused, naming the first
    stale = _decision(client, "DL1", based_on="")
    assert stale.status_code == 400 and "was signed after the ledger you decided on was shown" in _text(stale)


def test_qa_reads_the_ledger_and_signs_nothing_there_an_operator_cannot_open_it(trial_app, client, login):
    login("quinn")
    page = client.get("/trial/")
    assert page.status_code == 200
    assert 'action="/trial/decisions"' not in page.get_data(as_text=True)
    assert 'action="/trial/events"' not in page.get_data(as_text=True)
    assert _decision(client, "DL1").status_code == 403
    client.post("/auth/logout")
    login("olivia")
    assert client.get("/trial/").status_code == 403


def test_the_ledger_is_issued_as_a_signed_pdf_and_downloaded(trial_app, site_certificate, client, login):
    """Clinical or QA issue it with a reason (the service's tests check its content and signature:
    tests/reports/test_cohort_ledger_pdf.py); an operator cannot; the revision is listed and downloads as issued."""
    login("olivia")
    assert client.post("/trial/documents", data={"issue-reason": "meeting"}).status_code == 403
    client.post("/auth/logout")
    login("quinn")
    refused = client.post("/trial/documents", data={"issue-reason": ""})
    assert refused.status_code == 400 and "Say why the ledger is issued now." in _text(refused)
    assert client.post("/trial/documents", data={"issue-reason": "safety review meeting"}).status_code == 302
    page = client.get("/trial/")
    assert "Cohort ledger revision 1 issued and signed with the site key." in _text(page)
    link = re.search(r'href="(/trial/documents/\d+\.pdf)"', page.get_data(as_text=True)).group(1)
    pdf = client.get(link)
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    with trial_app.app_context():
        from mfg.models import LedgerDocument

        stored = db.session.scalar(sa.select(LedgerDocument))
        assert (stored.revision, stored.reason, stored.content) == (1, "safety review meeting", pdf.data)
