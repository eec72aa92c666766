"""QA screens: the review queue, review by exception, deviations through the screens and the signed
decision, on the demo NK batch run to the end (real database, real signatures)."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from mfg.config import RESOURCE_ROOT
from mfg.demo import nk_batch as demo_nk
from mfg.demo import seed as demo
from mfg.extensions import db
from mfg.models import Batch, BatchDecision, Deviation, DocumentRevision, ReviewMark, Signature
from mfg.services import audit, sops
from tests.support import PASSWORD, make_documents

UTC = ZoneInfo("UTC")


@pytest.fixture
def finished_batch(app, make_user):
    """The demo NK batch performed by Olivia and verified throughout by Victor (operator and QA): its id and lot."""
    sops_dir = Path(app.config["SOPS_DIR"])
    shutil.copytree(RESOURCE_ROOT / "sops" / "nk", sops_dir / "nk")
    shutil.copytree(RESOURCE_ROOT / "sops" / "trial", sops_dir / "trial")
    users = {name: make_user(name, roles, full_name=full) for name, roles, full in (
        ("loader", "qa", "Lou Loader"), ("approver", "qa", "Quinn Approver"), ("clara", "clinical", "Clara C"),
        ("olivia", "operator", "Olivia Operator"), ("victor", "operator,qa", "Victor Both"),
        ("quinn", "qa", "Quinn Quality"))}
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        u = {name: s.merge(user) for name, user in users.items()}
        for version in sops.load_directory(s, sops_dir, loader=u["loader"]).loaded:
            sops.approve(s, version, site_timezone="UTC",
                         signer=u["approver"], password=PASSWORD, username=None, require_username=False)
        demo.seed_master_data(s)
        subject = demo_nk.seed_demo_subject(s, u["clara"], PASSWORD)
        batch = demo_nk.run_nk_batch(s, subject=subject, performer=u["olivia"], verifier=u["victor"],
                                     password=PASSWORD, tz=UTC)
        s.commit()
        assert batch.status == "awaiting_review"
        return {"id": batch.id, "lot": batch.lot}


def _text(response) -> str:
    """The page as a reader sees it: tags dropped, entities decoded, white space collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))).split())


def _problems(response) -> list[str]:
    return [html.unescape(p) for p in re.findall(r'<p class="error form-error" role="alert">(.*?)</p>',
                                                 response.get_data(as_text=True))]


def _keys(response) -> list[str]:
    return re.findall(r'<input type="hidden" name="key" value="([^"]+)">', response.get_data(as_text=True))


def _count(app, model, *where) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def _decide(client, batch, decision, username, comment=""):
    return client.post(f"/review/batches/{batch['id']}/decide", data={
        "decide-decision": decision, "decide-comment": comment, "decide-username": username,
        "decide-password": PASSWORD})


def test_the_qa_screens_need_the_qa_role(app, make_user, client, login):
    make_user("olivia", "operator")
    make_user("clara", "clinical")
    make_user("quinn", "qa")
    login("olivia")
    assert "QA review" not in client.get("/batches/").get_data(as_text=True)
    for path in ("/review/", "/review/batches/1"):
        assert client.get(path).status_code == 403, path
    for path in ("/review/batches/1/mark", "/review/batches/1/decide", "/review/deviations/1/investigation",
                 "/review/deviations/1/close"):
        assert client.post(path).status_code == 403, path
    client.post("/auth/logout")
    login("clara")
    assert client.post("/review/batches/1/deviations", data={"deviation-description": "x"}).status_code == 403
    client.post("/auth/logout")
    login("quinn")
    page = client.get("/review/")
    assert page.status_code == 200 and 'href="/review/">QA review</a>' in page.get_data(as_text=True)
    assert "No batch is awaiting review" in _text(page) and "No open deviations." in _text(page)


def test_qa_reviews_closes_a_deviation_and_releases_conditionally_through_the_screens(
        finished_batch, app, site_certificate, client, login):
    batch = finished_batch
    review_url = f"/review/batches/{batch['id']}"

    # an operator opens a deviation by hand (as from the batch page) and may read it, without QA's forms
    login("olivia")
    opened = client.post(f"{review_url}/deviations",
                         data={"deviation-description": "Label printer jammed once; label reprinted"})
    assert opened.status_code == 302, _text(opened)
    with app.app_context():
        deviation = db.session.scalar(sa.select(Deviation).where(Deviation.batch_id == batch["id"]))
        dev_id, number = deviation.id, deviation.number
    assert opened.location.endswith(f"/review/deviations/{dev_id}")
    page = _text(client.get(f"/review/deviations/{dev_id}"))
    assert number in page and "Label printer jammed once" in page and "Olivia Operator" in page and "open" in page
    assert "Save investigation" not in page and "Close and sign" not in page
    assert client.get("/review/").status_code == 403
    client.post("/auth/logout")

    # QA's queue: the batch with its counts, and the open deviation with its link
    login("quinn")
    queue = client.get("/review/")
    text = _text(queue)
    assert batch["lot"] in text and "NK-001" in text and "awaiting review" in text
    row = re.search(r"<tr>\s*<td>NK-001</td>.*?</tr>", queue.get_data(as_text=True), re.S).group(0)
    # 1 open deviation; 3 items not yet reviewed (the deviation and NK-RELEASE v3's two pending sterility reads)
    assert re.findall(r"<td[^>]*>(\d+)</td>", row) == ["1", "3"]
    assert f'href="/review/deviations/{dev_id}">{number}</a>' in queue.get_data(as_text=True)
    assert f'href="{review_url}"' in queue.get_data(as_text=True)

    # the review page: the pending sterility result and the deviation, each to be marked reviewed
    response = client.get(review_url)
    page, text = response.get_data(as_text=True), _text(response)
    assert response.status_code == 200
    assert "pending result" in text and "Sterility (14-day culture)" in text and "recorded as Pending" in text
    assert "Sterility (preliminary automated-culture read): Sterility (preliminary read)" in text
    assert f"{number} (open)" in text and f'href="/batches/{batch["id"]}">Full batch record</a>' in page
    assert re.search(rf'href="/batches/{batch["id"]}/execution/\d+">Step record</a>', page)
    assert "NK-EXPAND v2" in text and "sha256 " in text
    assert _keys(response) == [k for k in _keys(response) if k.startswith(("pending:", "deviation:"))]
    assert len(_keys(response)) == 3
    assert "Release is not possible yet:" in text and f"Deviations still open: {number}" in text
    assert 'name="decide-username"' in page  # the first signature of the session

    # release refused while the deviation is open: 400, the messages shown, nothing stored
    refused = _decide(client, batch, "released", "quinn")
    assert refused.status_code == 400
    problems = " ".join(_problems(refused))
    assert f"Deviations still open: {number}" in problems and "Results are still pending" in problems
    assert _count(app, BatchDecision) == 0

    # the deviation through its screens: refused findings, then findings, then closed with a signature
    dev_url = f"/review/deviations/{dev_id}"
    assert "Save investigation" in _text(client.get(dev_url))
    bad = client.post(f"{dev_url}/investigation", data={"inv-classification": "major", "inv-investigation": "jam",
                                                        "inv-root_cause": "", "inv-impact": "none"})
    assert bad.status_code == 400
    assert set(_problems(bad)) >= {"Root cause is required.", "A major deviation needs a CAPA reference."}
    done = client.post(f"{dev_url}/investigation", data={
        "inv-classification": "minor", "inv-investigation": "Printer log reviewed",
        "inv-root_cause": "Worn feed roller", "inv-impact": "No impact: the reprint was scanned back",
        "inv-capa_reference": ""})
    assert done.status_code == 302, _text(done)
    with app.app_context():
        row_version = db.session.get(Deviation, dev_id).row_version
    closed = client.post(f"{dev_url}/close", data={"close-username": "quinn", "close-password": PASSWORD,
                                                   "row_version": row_version})
    assert closed.status_code == 302, _text(closed)
    page = _text(client.get(dev_url))
    assert "closed and signed" in page and "Worn feed roller" in page and "minor" in page
    assert "Approved by Quinn Quality (quinn)" in page and "Save investigation" not in page
    assert _count(app, Signature, Signature.record_type == "deviation", Signature.meaning == "approved") == 1

    # marking the items: one with a comment, a second mark of the same item is refused
    keys = _keys(client.get(review_url))
    pending = next(k for k in keys if k.startswith("pending:"))
    marked = client.post(f"{review_url}/mark", data={"key": pending, "comment": "14-day culture ongoing"})
    assert marked.status_code == 302
    again = client.post(f"{review_url}/mark", data={"key": pending})
    assert again.status_code == 400 and any("already marked reviewed" in p for p in _problems(again))
    assert client.post(f"{review_url}/mark", data={"key": "value:999999"}).status_code == 400
    for key in keys:
        if key != pending:
            assert client.post(f"{review_url}/mark", data={"key": key}).status_code == 302
    text = _text(client.get(review_url))
    assert "Reviewed by Quinn Quality at" in text and "14-day culture ongoing" in text and "Mark reviewed" not in text
    assert _count(app, ReviewMark, ReviewMark.batch_id == batch["id"]) == 3
    client.post("/auth/logout")

    # Victor holds QA but verified the steps: the page says so, and his signed decision is refused
    login("victor")
    text = _text(client.get(review_url))
    assert "Victor Both performed or verified a step of this batch" in text
    refused = _decide(client, batch, "conditionally_released", "victor")
    assert refused.status_code == 400
    assert any("performed or verified a step" in p for p in _problems(refused))
    assert _count(app, BatchDecision) == 0
    client.post("/auth/logout")

    # a QA user who did no step releases conditionally: the manifestation and the pending result are shown
    login("quinn")
    text = _text(client.get(review_url))
    assert "Conditional release is possible." in text and "Release is not possible yet:" in text
    decided = _decide(client, batch, "conditionally_released", "quinn")
    assert decided.status_code == 302, _text(decided)
    with app.app_context():
        assert db.session.get(Batch, batch["id"]).status == "conditionally_released"
    assert _count(app, Signature, Signature.record_type == "batch_decision", Signature.meaning == "released") == 1
    text = _text(client.get(review_url))
    assert "conditionally released, signed. Documents being prepared: batch record, certificate of analysis." \
        in text  # the decision committed at once; its documents come from the worker, after it
    assert "Documents being prepared: the batch record and certificate of analysis of QA's decision" in text
    assert "Documents being prepared" in _text(client.get(f"/batches/{batch['id']}/documents"))
    with app.app_context():
        assert db.session.scalars(sa.select(DocumentRevision.kind)).all() == []
    from mfg.reports.pdf import load_site_signer

    make_documents(app, load_site_signer(app.config, Path(app.instance_path)))  # the worker's pass
    text = _text(client.get(review_url))
    assert "Documents being prepared" not in text
    assert "Documents being prepared" not in _text(client.get(f"/batches/{batch['id']}"))
    with app.app_context():
        issued = db.session.scalars(sa.select(DocumentRevision.kind).order_by(DocumentRevision.id)).all()
    assert issued == ["batch_record", "coa"]  # generated once, signed and stored
    assert "Released by Quinn Quality (quinn)" in text and " UTC" in text
    assert "Pending at this decision: Sterility (14-day culture) (recorded as Pending)" in text
    assert "Conditionally released" in text
    queue = _text(client.get("/review/"))
    assert batch["lot"] in queue and "conditionally released" in queue and "No open deviations." in queue
