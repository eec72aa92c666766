"""End to end through the browser: the dose belongs to the batch (issue 3.3, deliverable 6).

The demo NK batch of subject NK-001 (dose level DL2) is made through the services, with its labels printed.
Then, in the browser:

* Clara (clinical) opens the subject while the batch awaits QA's review: the dose level cannot be
  reassigned, the page says why (naming the batch) and offers no signing form.
* Once QA has released the batch (through the services), Clara reassigns the subject to DL4 with her
  signature.
* Olivia (operator) reprints the batch's labels with a reason and her signature, and downloads them: every
  label still reads the dose the bags were made for, DL2, not the subject's new DL4.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Browser, expect
from pypdf import PdfReader

from mfg.demo import nk_batch as demo_nk
from mfg.extensions import db
from mfg.models import Batch, Subject, User
from mfg.services import audit, batches, documents, review
from tests.browser.pages import credentials, demo_plant, flash, go, people, row
from tests.support import PASSWORD, open_level, recorded_back, settle_pending_results

CLARA, OLIVIA = "Clara Coordinator", "Olivia Operator"


def _sign(user: User) -> dict:
    return {"signer": user, "password": PASSWORD, "username": user.username, "require_username": True}


def set_up(live_app: Flask, make_user: Callable[..., User]) -> tuple[int, str, int]:
    """Records effective, demo master data, subject NK-001 at DL2, its batch made and labelled, awaiting
    review. Returns (batch id, lot, subject id)."""
    setting = demo_plant(live_app, make_user, {
        "qa2": ("qa", "Lou Loader"), "qa1": ("qa", "Quentin Approver"), "clara": ("clinical", CLARA),
        "olivia": ("operator", OLIVIA), "oscar": ("operator", "Oscar Operator"), "quinn": ("qa", "Quinn Quality")})
    with live_app.app_context():
        session = db.session
        audit.set_actor(session, name="test-setup")
        users = {u.username: u for u in session.scalars(sa.select(User))}
        ended, today = recorded_back()  # its 14-day results can be read today
        subject = demo_nk.seed_demo_subject(session, users["clara"], PASSWORD, today=today)
        batch = demo_nk.run_nk_batch(session, subject=subject, performer=users["olivia"], verifier=users["oscar"],
                                     password=PASSWORD, tz=ZoneInfo(live_app.config["SITE_TIMEZONE"]), now=ended)
        audit.set_actor(session, users["olivia"])
        documents.print_labels(session, batch, reason="", site=setting.site, demo=True, **_sign(users["olivia"]))
        session.commit()
        assert batch.status == "awaiting_review" and batch.dose_level == "DL2"
        return batch.id, batch.lot, subject.id


def release(live_app: Flask, batch_id: int) -> None:
    """QA's conditional release, the 14-day sterility result, the final release (through the services)."""
    with live_app.app_context():
        session = db.session
        users = {u.username: u for u in session.scalars(sa.select(User))}
        quinn, olivia = users["quinn"], users["olivia"]
        batch = batches.get(session, batch_id)
        audit.set_actor(session, quinn)
        for item in review.exceptions(session, batch):
            review.mark_reviewed(session, batch, item.key, user=quinn)
        review.decide(session, batch, decision="conditionally_released", comment="sterility pending", **_sign(quinn))
        audit.set_actor(session, olivia)
        settle_pending_results(session, batch, enterer=olivia, verifier=users["oscar"], tz=ZoneInfo("UTC"))
        audit.set_actor(session, quinn)
        for item in review.exceptions(session, batch):
            if item.key not in review.marks(session, batch):
                review.mark_reviewed(session, batch, item.key, user=quinn)
        review.decide(session, batch, decision="released", comment="final results", **_sign(quinn))
        session.commit()
        assert batch.status == "released"


def test_a_label_reprint_after_a_dose_reassignment_shows_the_dose_the_bags_were_made_for(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    batch_id, lot, subject_id = set_up(live_app, make_user)
    with people(browser, live_server) as person:
        # --- Clara: no reassignment while the batch is open, and the page says why -----------------------
        clara = person("clara", CLARA)
        page = clara.page
        go(page.get_by_role("navigation").get_by_role("link", name="Subjects", exact=True))
        go(page.get_by_role("link", name="NK-001", exact=True))
        expect(page.get_by_role("heading", level=1)).to_have_text("Subject NK-001")
        expect(page.locator("p.hint")).to_contain_text(
            f"The dose level cannot be reassigned now: batch {lot} of subject NK-001 is open (awaiting review)")
        expect(page.get_by_text("Sign: assign dose level", exact=False)).to_have_count(0)

        # --- released: Clara reassigns NK-001 to DL4, signed ----------------------------------------------
        release(live_app, batch_id)
        with live_app.app_context():  # the safety review's decisions that open DL4 (tests/support.open_level)
            audit.set_actor(db.session, name="test-setup")
            open_level(db.session, db.session.scalar(sa.select(User).where(User.username == "clara")), "DL4")
            db.session.commit()
        page.reload()
        expect(page.get_by_text("The dose level cannot be reassigned now")).to_have_count(0)
        page.get_by_text("Sign: assign dose level", exact=False).click()
        dialog = page.locator("details.sign-dialog")
        dialog.get_by_label("Dose level", exact=True).select_option("DL4")
        credentials(clara, dialog)
        go(dialog.get_by_role("button", name=re.compile("^Sign as")))
        expect(flash(page, "Dose level DL4 assigned and signed.")).to_be_visible()
        expect(page.locator("dl.facts")).to_contain_text("DL4: 3.00 × 10⁷ NK cells/kg")

        # --- Olivia reprints the labels: they keep the batch's DL2 ----------------------------------------
        olivia = person("olivia", OLIVIA)
        page = olivia.page
        page.goto(f"/batches/{batch_id}")
        expect(page.locator("dl.facts")).to_contain_text(
            "dose level DL2 (3.00 × 10⁶ NK cells/kg) · weight 62.40 kg, measured")
        go(page.get_by_role("link", name="Documents and labels"))
        expect(page.get_by_role("heading", level=2, name="Reprint the labels")).to_be_visible()
        page.get_by_label("Reason for a reprint", exact=True).fill("Label damaged in transport")
        credentials(olivia, page.locator("fieldset.sign-form"))
        go(page.get_by_role("button", name="Reprint labels and sign"))
        expect(flash(page, "Labels printed (revision 2) and signed.")).to_be_visible()
        reprint = row(page, "2 (reprint 1)")
        with page.expect_download() as download_info:
            reprint.get_by_role("link", name="Download PDF").click()
        data = Path(download_info.value.path()).read_bytes()

    text = re.sub(r"\s+", " ", " ".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages))
    # the label's narrow column may wrap the dose anywhere: compared without white space
    assert "REPRINT 1" in text and "DoselevelDL2(3.00×10⁶NKcells/kg)" in "".join(text.split())
    assert "DL4" not in text and "3.00 × 10⁷" not in text
    with live_app.app_context():
        session = db.session
        subject = session.get(Subject, subject_id)
        batch = session.get(Batch, batch_id)
        assert subject is not None and batch is not None
        assert (subject.dose_level, batch.dose_level, batch.dose_cells_per_kg) == ("DL4", "DL2", 3000000)
