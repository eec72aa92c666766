"""End to end through the browser: QA's review and release of a complete NK batch (sops/nk, sops/trial).

The batch is made through the services (the demo data set: Olivia performs every step, Victor verifies
every step that needs it) and a deviation is opened by hand; the sterility result is still pending. Then:

* Victor, who is operator and QA, may not decide on the batch he verified: a release and a conditional
  release are both refused ("performed or verified a step") and nothing is recorded.
* Quinn (QA) reviews by exception: the pending result and the open deviation are listed; a conditional
  release is refused while the deviation is open. She investigates and closes the deviation (signed),
  marks every item reviewed and releases conditionally: the signed batch record and certificate of
  analysis are issued.
* The batch record, downloaded from the batch's documents page, carries a valid site signature and
  names Quinn as the releaser.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Browser, Locator, Page, expect
from pypdf import PdfReader

from mfg.demo import nk_batch as demo_nk
from mfg.extensions import db
from mfg.models import BatchDecision, DocumentRevision, Signature, User
from mfg.reports.pdf import load_site_signer, verify_pdf
from mfg.services import audit, batches, deviations, documents, review, signatures
from tests.browser.pages import Person, credentials, demo_plant, flash, go, people, row
from tests.support import PASSWORD, make_documents

VICTOR, QUINN = "Victor Both", "Quinn Quality"
DEVIATION_TEXT = "Incubator door found ajar for about 2 minutes during the day 9 feed."


# --- setup through the services ----------------------------------------------------------------------

@dataclass(frozen=True)
class Plant:
    batch_id: int
    lot: str
    deviation: str  # its number, DEV-YYYY-NNNN


def set_up_plant(live_app: Flask, make_user: Callable[..., User]) -> Plant:
    """The NK master records and the trial configuration effective (loaded by one QA user, approved by
    another), the demo master data, the people of the flow, one complete demo batch awaiting review with
    a deviation opened by hand, and the site's signing key and certificate."""
    demo_plant(live_app, make_user, {
        "qa2": ("qa", "Lou Loader"), "qa1": ("qa", "Quentin Approver"), "clara": ("clinical", "Clara Coordinator"),
        "olivia": ("operator", "Olivia Operator"), "victor": ("operator,qa", VICTOR), "quinn": ("qa", QUINN)})
    with live_app.app_context():
        session = db.session
        audit.set_actor(session, name="test-setup")
        users = {u.username: u for u in session.scalars(sa.select(User))}
        subject = demo_nk.seed_demo_subject(session, users["clara"], PASSWORD)
        batch = demo_nk.run_nk_batch(session, subject=subject, performer=users["olivia"], verifier=users["victor"],
                                     password=PASSWORD, tz=ZoneInfo(live_app.config["SITE_TIMEZONE"]))
        audit.set_actor(session, users["olivia"])
        deviation = deviations.open_by_hand(session, batch, description=DEVIATION_TEXT, user=users["olivia"])
        session.commit()
        assert batch.status == "awaiting_review"
        return Plant(batch.id, batch.lot, deviation.number)


# --- people and small page helpers ---------------------------------------------------------------------


def alerts(page: Page) -> Locator:
    return page.get_by_role("alert")


def status(page: Page) -> Locator:
    return page.get_by_role("heading", level=1).locator(".status")


def open_review(person: Person, lot: str) -> None:
    """From anywhere: the nav link "QA review", then the batch's "Review" button."""
    page = person.page
    go(page.get_by_role("navigation").get_by_role("link", name="QA review", exact=True))
    expect(page.get_by_role("heading", level=1)).to_have_text("QA review")
    go(row(page.locator("section.review-batches"), lot).get_by_role("link", name="Review"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Review of batch {lot}")


def review_items(page: Page) -> Locator:
    return page.locator("section.review-items tbody").get_by_role("row")


def decision_section(page: Page) -> Locator:
    return page.locator("section.decision")


def decide(person: Person, decision: str) -> None:
    """Choose ``decision`` on the review page and sign it."""
    section = decision_section(person.page)
    section.get_by_label(decision, exact=True).check()
    credentials(person, section)
    go(section.get_by_role("button", name="Sign the decision"))


# --- the flow ------------------------------------------------------------------------------------------

def test_release_refused_with_an_open_deviation_and_to_a_participant_then_granted(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    plant = set_up_plant(live_app, make_user)
    lot, dev = plant.lot, plant.deviation
    with people(browser, live_server) as person:
        # --- Victor verified every step: he may not decide on the batch ------------------------------------
        victor = person("victor", VICTOR)
        page = victor.page
        open_review(victor, lot)
        expect(status(page)).to_have_text("awaiting review")
        own = f"{VICTOR} performed or verified a step of this batch and may not decide on it."
        problems = decision_section(page).locator("ul.decision-problems")
        expect(problems).to_contain_text(f"Release is not possible yet: {own}")  # shown before he acts
        # the guard refuses every decision to him: the screen offers no decision to sign (a hand-made POST
        # is refused with the same reasons: tests/web/test_review_web.py)
        expect(decision_section(page).locator("form")).to_have_count(0)
        expect(decision_section(page).get_by_role("button", name="Sign the decision")).to_have_count(0)
        expect(status(page)).to_have_text("awaiting review")
        expect(decision_section(page).locator("ul.decisions")).to_have_count(0)

        # --- Quinn: the exceptions; a conditional release is refused while the deviation is open -----------
        quinn = person("quinn", QUINN)
        page = quinn.page
        open_review(quinn, lot)
        items = review_items(page)
        expect(items).to_have_count(3)  # NK-RELEASE v3: the 14-day culture and the preliminary read, the deviation
        expect(page.locator("section.review-items h2")).to_contain_text("3 of 3 not yet reviewed")
        pending = row(page, "pending result").first
        expect(pending.get_by_role("cell")).to_have_text(
            ["pending result", re.compile(r"^Sterility \(14-day culture\)\s+Step record$"), "recorded as Pending",
             re.compile("Mark reviewed")])
        deviation_row = row(page, "deviation")
        expect(deviation_row.get_by_role("cell").nth(1)).to_have_text(f"{dev} (open)")
        expect(deviation_row.get_by_role("cell").nth(2)).to_have_text(DEVIATION_TEXT)
        expect(page.locator("section.deviations").get_by_role("listitem")).to_have_text(
            [f"{dev} (manual, open): {DEVIATION_TEXT}"])
        expect(decision_section(page).locator("ul.decision-problems")).to_contain_text(
            f"Deviations still open: {dev}. Close them before release.")

        # the guard refuses both releases for now: only the rejection is offered to sign
        decision = decision_section(page)
        expect(decision.get_by_label("Conditionally released", exact=True)).to_have_count(0)
        expect(decision.get_by_label("Released", exact=True)).to_have_count(0)
        expect(decision.get_by_label("Rejected", exact=True)).to_have_count(1)
        expect(status(page)).to_have_text("awaiting review")

        # --- the deviation: investigated, then closed with her signature ----------------------------------
        go(deviation_row.get_by_role("link", name=f"{dev} (open)"))
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Deviation {dev} open")
        investigation = page.locator("section.investigation")
        investigation.get_by_label("Classification", exact=True).select_option("minor")
        investigation.get_by_label("Investigation", exact=True).fill(
            "Door alarm log and the incubator's temperature and CO2 trend reviewed: the door was ajar for "
            "1 min 50 s; temperature stayed within 36.5-37.5 °C and CO2 within 4.5-5.5 %.")
        investigation.get_by_label("Root cause", exact=True).fill("Door not latched after the feed.")
        investigation.get_by_label("Impact on this and other batches", exact=True).fill(
            "None: culture conditions stayed within limits; no other batch in the incubator.")
        go(investigation.get_by_role("button", name="Save investigation"))
        expect(flash(page, f"Investigation of {dev} recorded.")).to_be_visible()
        expect(page.get_by_role("definition").filter(has_text="Door not latched after the feed.")).to_be_visible()

        page.get_by_text("Sign: Approved by", exact=True).click()
        dialog = page.locator("section.close details.sign-dialog")
        expect(dialog).to_have_attribute("open", "")
        credentials(quinn, dialog)
        go(dialog.get_by_role("button", name="Close and sign as Approved by"))
        expect(flash(page, f"Deviation {dev} closed and signed.")).to_be_visible()
        quinn.signed = True
        expect(status(page)).to_have_text("closed")
        expect(page.locator("dl.facts")).to_contain_text(f"Approved by {QUINN} (quinn)")

        # --- back on the review page: every item marked reviewed ------------------------------------------
        go(page.get_by_role("link", name=f"Review of {lot}"))
        expect(deviation_row.get_by_role("cell").nth(1)).to_have_text(f"{dev} (closed)")
        mark = page.get_by_role("button", name="Mark reviewed")
        for left in (3, 2, 1):
            expect(mark).to_have_count(left)
            go(mark.first)
            expect(flash(page, "Marked reviewed.")).to_be_visible()
        expect(mark).to_have_count(0)
        expect(page.locator("section.review-items h2")).to_contain_text("0 of 3 not yet reviewed")
        expect(items.get_by_text(f"Reviewed by {QUINN} at")).to_have_count(3)
        problems = decision_section(page).locator("ul.decision-problems")
        expect(problems).to_contain_text("Conditional release is possible.")
        expect(problems).to_contain_text(
            "Release is not possible yet: Results are still pending (Sterility (14-day culture); "
            "Sterility (preliminary automated-culture read): Sterility (preliminary read))")

        # --- the conditional release, signed with the password only ---------------------------------------
        decide(quinn, "Conditionally released")
        expect(flash(page, f"Batch {lot}: conditionally released, signed.")).to_have_text(
            f"Batch {lot}: conditionally released, signed. Documents being prepared: batch record, "
            "certificate of analysis.")
        expect(page.locator(".documents-pending")).to_contain_text("Documents being prepared")
        make_documents(live_app, load_site_signer(live_app.config, Path(live_app.instance_path)))  # the worker
        page.reload()
        expect(page.locator(".documents-pending")).to_have_count(0)
        expect(status(page)).to_have_text("conditionally released")
        decided = decision_section(page).locator("ul.decisions").get_by_role("listitem")
        expect(decided).to_have_count(1)
        expect(decided).to_contain_text(
            "Conditionally released. Pending at this decision: Sterility (14-day culture) (recorded as Pending); "
            "Sterility (preliminary automated-culture read): Sterility (preliminary read) (recorded as Pending)")
        expect(decided.locator(".manifestation")).to_have_text(
            re.compile(rf"^Released by\s+{QUINN} \(quinn\), \d{{4}}-\d\d-\d\d \d\d:\d\d [A-Z]{{2,5}}$"))
        expect(alerts(page)).to_have_count(0)

        # --- the documents: batch record and certificate, revision 1; the batch record downloaded ----------
        go(page.get_by_role("link", name="Full batch record"))
        go(page.get_by_role("link", name="Documents and labels"))
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Signed documents: {lot}")
        for kind in ("Batch record", "Certificate of analysis"):
            expect(row(page, kind).get_by_role("cell").nth(1)).to_have_text("1")
            expect(row(page, kind).get_by_role("cell").nth(3)).to_have_text("conditionally released")
        with page.expect_download() as download_info:
            row(page, "Batch record").get_by_role("link", name="Download PDF").click()
        download = download_info.value
        assert download.suggested_filename == f"{lot}-batch_record-r1.pdf"
        data = Path(download.path()).read_bytes()

    # --- the file: signed with the site certificate, the stored revision, Quinn named as releaser ----------
    certificate = load_site_signer(live_app.config, Path(live_app.instance_path)).certificate
    check = verify_pdf(data, certificate)
    assert check.valid, check.reason
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages)
    assert f"Released by: {QUINN}" in re.sub(r"\s+", " ", text)
    with live_app.app_context():
        session = db.session
        stored = documents.verify(session, data, certificate)
        assert stored.valid, stored.reason
        batch = batches.get(session, plant.batch_id)
        assert batch.status == "conditionally_released"
        by_id = {u.id: u.username for u in session.scalars(sa.select(User))}
        # Victor's two attempts and Quinn's first left nothing: one decision, two documents
        assert [(d.decision, by_id[d.decided_by_id]) for d in review.decisions(session, batch)] == [
            ("conditionally_released", "quinn")]
        assert session.scalar(sa.select(sa.func.count()).select_from(BatchDecision)) == 1
        assert sorted((d.kind, d.revision) for d in session.scalars(sa.select(DocumentRevision))) == [
            ("batch_record", 1), ("coa", 1)]
        assert [d.status for d in deviations.of_batch(session, batch)] == ["closed"]
        assert set(review.marks(session, batch)) == {item.key for item in review.exceptions(session, batch)}
        assert session.scalar(sa.select(sa.func.count()).select_from(Signature).where(
            Signature.meaning == "released")) == 1
        chain = audit.verify(session)
        assert chain.ok, chain.problem
        _checked, mismatches = signatures.check_all(session)
        assert mismatches == []
