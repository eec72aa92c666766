"""End to end through the browser: every end of a batch's lifecycle after the conditional release.

The batch is made through the services as the demo people (``mfg.demo.scenarios``: intake to the conditional
release, sterility pending, labels and documents issued). Then, in the browser:

* final release: the pending sterility result is on the operators' home page and on QA's queue; one operator
  enters it (its own signed result entry), a second verifies it; QA reviews what changed and releases; the
  supplemental certificate (revision 2) is downloaded and its signature is valid;
* sterility positive: bag A is infused after the two-person bedside check; the culture flags growth; both
  clinical users see the alert on every page until one acknowledges it with a signature; bag B at the bedside
  is a hard stop; QA rejects;
* cancellation: a batch opened by mistake is cancelled from its page and leaves the work queue.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Browser, Page, expect
from pypdf import PdfReader

from mfg.demo import nk_batch as demo_nk
from mfg.demo import scenarios
from mfg.domain import isbt128
from mfg.extensions import db
from mfg.models import Batch, ProductBag, Subject, User
from mfg.reports.pdf import verify_pdf
from mfg.services import accounts, audit, bags, starting
from mfg.unit_of_work import unit_of_work
from tests.browser.pages import NAMES, Person, credentials, demo_plant, flash, go, people, row
from tests.support import PASSWORD, make_documents


def _act(live_app: Flask) -> scenarios.Act:
    def act(username, action):  # noqa: ANN001, ANN202
        session = db.session
        person = session.scalars(sa.select(User).where(User.username == username)).one()
        audit.set_actor(session, person)
        with unit_of_work(session, actor=person, policy=accounts.Policy()):
            return action(session)

    return act


def _conditionally_released(live_app: Flask, setting: scenarios.Setting, **subject: str | int) -> str:
    with live_app.app_context():
        return scenarios.conditional(_act(live_app), setting, **subject).lot  # type: ignore[arg-type]


def _results_row(page: Page, test: str):
    return page.locator("section.results-due").get_by_role("row").filter(has_text=test)


def status(page: Page):
    return page.get_by_role("heading", level=1).locator(".status")


def test_the_pending_result_is_entered_verified_and_the_batch_finally_released_with_a_supplemental_certificate(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    setting = demo_plant(live_app, make_user)
    lot = _conditionally_released(live_app, setting, days_back=15)  # its 14-day results can be read today
    with people(browser, live_server) as person:
        # the operator's home page lists the results due; the results page takes each as its own signed entry
        olivia = person("operator1", NAMES["operator1"])
        page = olivia.page
        expect(_results_row(page, "14-day culture")).to_contain_text(lot)
        go(page.locator("section.results-due").get_by_role("link", name="Results due"))
        for test, label, answer in (
                ("14-day culture", "Sterility (14-day culture)", "No growth"),
                ("preliminary read", "Sterility (preliminary read)", "No growth at preliminary read")):
            entry = _results_row(page, test)
            expect(entry).to_contain_text("pending")
            entry.get_by_label(label).select_option(answer)
            credentials(olivia, entry)
            go(entry.get_by_role("button", name="Enter the result and sign as Performed by"))
            olivia.signed = True
            expect(flash(page, f"{answer} entered and signed")).to_be_visible()
            expect(_results_row(page, test)).to_contain_text(f"{answer}: waiting for verification")
            expect(_results_row(page, test).get_by_role("button")).to_have_count(0)  # not her verification

        # QA's queue lists them, still owed
        quinn = person("qa1", NAMES["qa1"])
        go(quinn.page.get_by_role("navigation").get_by_role("link", name="QA review", exact=True))
        expect(_results_row(quinn.page, "14-day culture")).to_contain_text("awaiting verification")

        # a second operator verifies them
        oscar = person("operator2", NAMES["operator2"])
        go(oscar.page.locator("section.results-due").get_by_role("link", name="Results due"))
        for test in ("14-day culture", "preliminary read"):
            verify = _results_row(oscar.page, test)
            credentials(oscar, verify)
            go(verify.get_by_role("button", name="Verify and sign as Verified by"))
            oscar.signed = True
            expect(flash(oscar.page, "result verified and signed")).to_be_visible()
        expect(oscar.page.locator("section.results-due")).to_contain_text("No result is due.")

        # QA reviews what changed since the conditional release and releases the batch
        page = quinn.page
        page.reload()
        go(row(page.locator("section.review-batches"), lot).get_by_role("link", name="Review"))
        expect(status(page)).to_have_text("conditionally released")
        mark = page.get_by_role("button", name="Mark reviewed")
        expect(mark).to_have_count(2)  # only what changed since the conditional release: the two result entries
        for _ in range(2):
            go(mark.first)
        section = page.locator("section.decision")
        section.get_by_label("Released", exact=True).check()
        credentials(quinn, section)
        go(section.get_by_role("button", name="Sign the decision"))
        expect(flash(page, f"Batch {lot}: released, signed")).to_be_visible()
        expect(status(page)).to_have_text("released")
        with live_app.app_context():
            make_documents(live_app, setting.site)  # the documents worker, as an app server's thread runs it

        # the supplemental certificate, revision 2: downloaded, signed by the site, superseding revision 1
        go(page.get_by_role("link", name="Full batch record"))
        go(page.get_by_role("link", name="Documents and labels"))
        certificates = row(page, "Certificate of analysis")
        expect(certificates).to_have_count(2)
        with page.expect_download() as download_info:
            certificates.nth(1).get_by_role("link", name="Download PDF").click()
        download = download_info.value
        assert download.suggested_filename == f"{lot}-coa-r2.pdf"
        data = Path(download.path()).read_bytes()
    check = verify_pdf(data, setting.site.certificate)
    assert check.valid, check.reason
    text = re.sub(r"\s+", " ", " ".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages))
    assert "Supplemental: supersedes revision 1" in text
    # final results only: the 14-day culture's, verified, and no pending row (QA's signed comment on the
    # conditional release, "sterility pending", stays theirs)
    assert "No growth · meets · verified by Oscar Verifier" in text
    assert "PENDING" not in text and "Pending ·" not in text and "not yet" not in text


def _bedside(person: Person, other: str, batch: Batch, bag: ProductBag) -> None:
    """The two-person bedside check on ``person``'s screen, the second person typing their own credentials."""
    page = person.page
    section = page.locator("section.custody-bedside")
    din = isbt128.din_from_text(batch.din or "").barcode("00")
    coi = isbt128.parse_coi(isbt128.COI_PREFIX + (batch.subject.coi if batch.subject else "")).barcode()
    for panel, username in ((section.locator("fieldset").nth(0), person.username),
                            (section.locator("fieldset").nth(1), other)):
        panel.get_by_label("User name", exact=True).fill(username)
        panel.get_by_label("Password", exact=True).fill(PASSWORD)
        panel.get_by_label("Scan bag DIN", exact=True).fill(din)
        panel.get_by_label("Scan bag label (product code)", exact=True).fill(
            isbt128.PRODUCT_CODE_PREFIX + bag.product_code)
        panel.get_by_label("Scan subject COI", exact=True).fill(coi)
    go(section.get_by_role("button", name=re.compile("^Record bedside check and sign")))


def test_a_positive_sterility_culture_blocks_the_bag_not_infused_alerts_the_clinic_and_qa_rejects(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    setting = demo_plant(live_app, make_user)
    lot = _conditionally_released(live_app, setting, subject_code="NK-002", dose_level="DL4")
    with live_app.app_context():
        batch = db.session.scalars(sa.select(Batch).where(Batch.lot == lot)).one()
        first, second = bags.of_batch(db.session, batch)
        batch_id, subject = batch.id, batch.subject.code if batch.subject else ""
    with people(browser, live_server) as person:
        clara = person("clinical1", NAMES["clinical1"])
        page = clara.page
        page.goto(f"/batches/{batch_id}/custody")
        bags_table = page.locator("section.custody-bags")
        expect(row(bags_table, f"{first.product_code} (bag {first.division})")).to_contain_text(
            "yes: released, not blocked, not expired")
        with live_app.app_context():
            _bedside(clara, "clinical2", db.session.get(Batch, batch_id), first)
        expect(flash(page, "Bedside identity check recorded")).to_be_visible()

        # "no growth" the same day is refused, naming the earliest time it can exist; the culture flags growth:
        # entered by the operator at once, out of specification
        olivia = person("operator1", NAMES["operator1"])
        go(olivia.page.locator("section.results-due").get_by_role("link", name="Results due"))
        entry = _results_row(olivia.page, "14-day culture")
        entry.get_by_label("Sterility (14-day culture)").select_option("No growth")
        credentials(olivia, entry)
        go(entry.get_by_role("button", name="Enter the result and sign as Performed by"))
        expect(olivia.page.get_by_role("alert").filter(has_text="cannot exist before")).to_contain_text(
            re.compile(r"cannot exist before \d{4}-\d\d-\d\d \d\d:\d\d UTC \(sampled .* \+ 336 h\)"))
        entry = _results_row(olivia.page, "14-day culture")
        expect(entry).to_contain_text("pending")
        entry.get_by_label("Sterility (14-day culture)").select_option("Growth")
        entry.get_by_label(re.compile("^Comment")).fill("Aerobic bottle flagged positive at 31 h")
        credentials(olivia, entry)
        go(entry.get_by_role("button", name="Enter the result and sign as Performed by"))
        expect(flash(olivia.page, "OUT OF SPECIFICATION: the batch is under investigation")).to_be_visible()
        expect(olivia.page.locator("section.product-alert")).to_have_count(0)  # the alert is the clinic's

        # both clinical users see the alert, on every page, naming the subject, the DIN and each bag
        chris = person("clinical2", NAMES["clinical2"])
        for who in (clara, chris):
            who.page.goto("/clinical/")
            alert = who.page.locator("section.product-alert")
            expect(alert).to_be_visible()
            for fact in (f"Subject {subject}", lot, f"(bag {first.division}): INFUSED",
                         f"(bag {second.division}): not infused, BLOCKED", "Growth"):
                expect(alert).to_contain_text(fact)
        alert = chris.page.locator("section.product-alert")
        alert.get_by_placeholder("user name").fill("clinical2")
        alert.get_by_placeholder("password").fill(PASSWORD)
        go(alert.get_by_role("button", name="Acknowledge and sign as Acknowledged by"))
        expect(flash(chris.page, "Product alert acknowledged")).to_be_visible()
        clara.page.reload()
        expect(clara.page.locator("section.product-alert")).to_have_count(0)

        # bag B at the bedside: the hard stop, on top of the page; the bags table said so before the scan
        page.goto(f"/batches/{batch_id}/custody")
        expect(row(bags_table, f"{second.product_code} (bag {second.division})")).to_contain_text("IS BLOCKED")
        with live_app.app_context():
            _bedside(clara, "clinical2", db.session.get(Batch, batch_id), second)
        stop = page.get_by_role("alertdialog")  # the full-screen stop (tests/browser/test_stops_and_scans.py)
        expect(stop).to_contain_text(f"BAG {second.product_code} (bag {second.division}) IS BLOCKED")
        expect(stop).to_contain_text("Do not infuse")
        stop.get_by_role("button", name="I have read this: close").click()

        # QA rejects the batch under investigation, with the reason
        quinn = person("qa1", NAMES["qa1"])
        go(quinn.page.get_by_role("navigation").get_by_role("link", name="QA review", exact=True))
        go(row(quinn.page.locator("section.review-batches"), lot).get_by_role("link", name="Review"))
        expect(status(quinn.page)).to_have_text("under investigation")
        section = quinn.page.locator("section.decision")
        section.get_by_label("Rejected", exact=True).check()
        section.get_by_label(re.compile("^Comment")).fill("Sterility positive after the conditional release")
        credentials(quinn, section)
        go(section.get_by_role("button", name="Sign the decision"))
        expect(flash(quinn.page, f"Batch {lot}: rejected, signed")).to_be_visible()
        expect(status(quinn.page)).to_have_text("rejected")


def test_a_batch_opened_by_mistake_is_cancelled_from_its_page_and_leaves_the_work_queue(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    setting = demo_plant(live_app, make_user)
    with live_app.app_context():
        act = _act(live_app)
        subject = act("clinical1", lambda s: demo_nk.seed_demo_subject(
            s, s.scalars(sa.select(User).where(User.username == "clinical1")).one(), setting.password).id)
        lot, batch_id = act("operator1", lambda s: (lambda b: (b.lot, b.id))(starting.start_product_batch(
            s, subject=s.get(Subject, subject),
            user=s.scalars(sa.select(User).where(User.username == "operator1")).one())))
    with people(browser, live_server) as person:
        olivia = person("operator1", NAMES["operator1"])
        page = olivia.page
        page.goto("/batches/")
        expect(page.locator("table.queue")).to_contain_text(lot)
        page.goto(f"/batches/{batch_id}")
        cancel = page.locator("details.cancel-batch")
        cancel.locator("summary").click()
        cancel.get_by_label("Reason for the cancellation").fill("Opened for the wrong collection date")
        cancel.get_by_label("User name", exact=True).fill("operator1")
        cancel.get_by_label("Password", exact=True).fill(PASSWORD)
        go(cancel.get_by_role("button", name="Cancel the batch and sign as Cancelled by"))
        expect(flash(page, f"Batch {lot} cancelled and signed")).to_be_visible()
        expect(status(page)).to_have_text("cancelled")
        expect(page.locator("details.cancel-batch")).to_have_count(0)
        expect(page.locator("section.batch-decisions")).to_contain_text("Opened for the wrong collection date")
        page.goto("/batches/")
        expect(page.locator("table.queue")).not_to_contain_text(lot)  # off the work queue, still in the record
        expect(page.get_by_role("row").filter(has_text=lot)).to_contain_text("cancelled")
