"""End to end through the browser: two operators execute the demo process (sops/demo/DEMO-PROC_v1.yaml).

Olivia starts a batch and performs the preparation stage, including an out-of-limit room temperature
(refused without a value comment, then stored, flagged and opening a deviation); she may not verify her own
identity check. Oscar verifies it, performs the processing and completion stages, and Olivia corrects a
value afterwards: the original is kept with the reason and the earlier signature no longer stands.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Locator, Page, expect

from mfg.extensions import db
from mfg.models import User
from mfg.services import audit, masterdata, sops
from tests.support import DEMO_SOP, PASSWORD

OLIVIA = "Olivia Operator"
OSCAR = "Oscar Second-Operator"
BUFFER = "Phosphate-buffered saline"


# --- setup through the services ----------------------------------------------------------------------

def set_up_plant(live_app: Flask, make_user: Callable[..., User]) -> None:
    """DEMO-PROC v1 effective (loaded by one QA user, approved by another), a calibrated cabinet, two
    released buffer lots and the two operators."""
    make_user("qaload", "qa", full_name="Lou Loader")
    make_user("qaboss", "qa", full_name="Quinn Approver")
    make_user("olivia", "operator", full_name=OLIVIA)
    make_user("oscar", "operator", full_name=OSCAR)
    sops_dir = Path(live_app.config["SOPS_DIR"])
    shutil.copy(DEMO_SOP, sops_dir / DEMO_SOP.name)
    with live_app.app_context():
        session = db.session
        audit.set_actor(session, name="test-setup")
        users = {u.username: u for u in session.scalars(sa.select(User))}
        version = sops.load_directory(session, sops_dir, loader=users["qaload"]).loaded[0]
        sops.approve(session, version, site_timezone="UTC",
                     signer=users["qaboss"], password=PASSWORD, username="qaboss",
                     require_username=True)
        today = date.today()
        masterdata.add_equipment(session, identifier="BSC-01", equipment_type="biosafety cabinet",
                                 calibration_due=today + timedelta(days=365))
        for lot in ("PBS-7", "PBS-8"):
            masterdata.receive_lot(session, material=BUFFER, lot_number=lot, expiry=today + timedelta(days=200),
                                   qc_status="released")
        session.commit()


def site_time(live_app: Flask, minutes: int = 0) -> str:
    """A moment as typed on a step screen: "YYYY-MM-DD HH:MM" in the site time zone."""
    moment = datetime.now(ZoneInfo(live_app.config["SITE_TIMEZONE"])) + timedelta(minutes=minutes)
    return moment.strftime("%Y-%m-%d %H:%M")


# --- small page helpers --------------------------------------------------------------------------------

def sign_in(page: Page, base: str, username: str, full_name: str) -> None:
    page.goto(f"{base}/auth/login")
    page.get_by_label("User name", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name=f"Welcome, {full_name}")).to_be_visible()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status").filter(has_text="You are signed out.")).to_be_visible()


def flash(page: Page, text: str) -> Locator:
    return page.get_by_role("status").filter(has_text=text)


def alert(page: Page, text: str) -> Locator:
    return page.get_by_role("alert").filter(has_text=text)


def work_queue(page: Page) -> None:
    page.get_by_role("banner").get_by_role("link", name="Work queue", exact=True).click()
    expect(page.get_by_role("heading", name="My next steps")).to_be_visible()


def row(scope: Page | Locator, first_cell: str) -> Locator:
    """The table row, in the page or in one table, with a cell reading exactly ``first_cell``."""
    page = scope if isinstance(scope, Page) else scope.page  # ``has`` is matched inside each row
    return scope.get_by_role("row").filter(has=page.get_by_role("cell", name=first_cell, exact=True))


def batch_status(page: Page) -> Locator:
    return page.get_by_role("heading", level=1).locator(".status")


def open_step(page: Page, title: str) -> None:
    """From the batch page, open the step screen of ``title``."""
    row(page, title).get_by_role("link", name="Open step").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(title)


def details(page: Page, title: str) -> None:
    """From the batch page, open the execution page of ``title``."""
    row(page, title).get_by_role("link", name="Details").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(title)


def value_field(page: Page, label: str) -> Locator:
    """The block of one field on a step screen: its input, limits and value comment."""
    return page.locator("div.field").filter(has=page.get_by_label(label, exact=True))


def comment_on_value(page: Page, label: str, text: str) -> None:
    """The value's comment: its box opens by itself for an entry outside the limits the screen states (or
    after the server said so); otherwise the field's small "Add comment" button asks for it."""
    block = value_field(page, label)
    box = block.get_by_role("textbox", name=f"Comment on {label}", exact=True)
    if not box.is_visible():
        block.get_by_role("button", name="Add comment").click()
    box.fill(text)


def scan(page: Page, code: str) -> None:
    """What a barcode scanner does: type the code into the focused input, then press Enter."""
    page.keyboard.type(code)
    page.keyboard.press("Enter")


def sign_step(page: Page, *, username: str | None = None) -> None:
    """Sign the step screen "Performed by": the user name only on the session's first signature."""
    signing = page.get_by_role("group", name="Sign: Performed by")
    expect(signing).to_contain_text("Signing records your printed name")
    if username is None:
        expect(signing.get_by_label("User name", exact=True)).to_have_count(0)
    else:
        signing.get_by_label("User name", exact=True).fill(username)
    signing.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Record and sign as Performed by").click()


def values_cell(page: Page, title: str) -> Locator:
    return row(page, title).get_by_role("cell").nth(2)


def step_status(page: Page, title: str) -> Locator:
    return row(page, title).get_by_role("cell").nth(1)


# --- the flow ------------------------------------------------------------------------------------------

def test_two_operators_execute_the_demo_process(live_server: str, live_app: Flask, page: Page,
                                                make_user: Callable[..., User]) -> None:
    base = live_server
    set_up_plant(live_app, make_user)

    # --- Olivia starts a batch from the work queue ----------------------------------------------------
    sign_in(page, base, "olivia", OLIVIA)
    work_queue(page)
    expect(page.get_by_role("cell", name="Nothing waiting for you.")).to_be_visible()
    page.get_by_label("Master record").select_option("DEMO-PROC")
    page.get_by_role("button", name="Start batch").click()
    started = flash(page, "started.")
    expect(started).to_have_text(re.compile(r"^Batch DEMO-PROC-\d{4}-\d{4} started\.$"))
    lot = re.fullmatch(r"Batch (\S+) started\.", started.inner_text().strip()).group(1)
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Batch {lot}")
    expect(batch_status(page)).to_have_text("created")
    expect(step_status(page, "Line clearance")).to_have_text("open")
    expect(step_status(page, "Room check")).to_have_text("open")  # parallel: open from the start
    expect(step_status(page, "Identify the starting material")).to_have_text("not yet open")

    # --- line clearance: the session's first signature needs the user name -----------------------------
    open_step(page, "Line clearance")
    page.get_by_label("The work area is clean and free of material from previous batches.").check()
    page.get_by_label("Biosafety cabinet", exact=True).fill("BSC-01")
    page.get_by_label("Processing started", exact=True).fill(site_time(live_app, -30))
    sign_step(page, username="olivia")
    expect(flash(page, "Line clearance recorded and signed.")).to_be_visible()
    expect(batch_status(page)).to_have_text("in progress")
    expect(step_status(page, "Line clearance")).to_have_text("complete")
    expect(values_cell(page, "Line clearance")).to_contain_text("cabinet: BSC-01")

    # --- room check out of limit: refused without a value comment, nothing stored ----------------------
    open_step(page, "Room check")
    page.get_by_label("Room temperature", exact=True).fill("26.0")
    page.get_by_label("Settle plate count", exact=True).fill("0")
    page.get_by_role("group", name="Room status").get_by_label("Clean", exact=True).check()
    sign_step(page)  # the session already holds a signature: password only
    refusal = alert(page, "an out-of-limit value needs a comment")
    expect(refusal).to_have_count(1)
    expect(refusal).to_contain_text(re.compile(r"^Room temperature: .*above the maximum"))
    expect(page.get_by_label("Room temperature", exact=True)).to_have_value("26.0")  # the entry is kept
    page.get_by_role("link", name=f"Batch {lot}").click()
    expect(step_status(page, "Room check")).to_have_text("open")
    expect(values_cell(page, "Room check")).to_have_text("")
    expect(page.get_by_role("heading", name="Deviations")).to_have_count(0)

    # ... and accepted with one: stored, flagged and a deviation opened
    open_step(page, "Room check")
    page.get_by_label("Room temperature", exact=True).fill("26.0")
    comment_on_value(page, "Room temperature", "HVAC alarm at 09:10, QA informed")
    page.get_by_label("Settle plate count", exact=True).fill("0")
    page.get_by_role("group", name="Room status").get_by_label("Clean", exact=True).check()
    sign_step(page)
    expect(flash(page, "Room check recorded and signed. 1 value(s) out of limit: a deviation was opened.")
           ).to_be_visible()
    expect(step_status(page, "Room check")).to_have_text("complete")
    expect(values_cell(page, "Room check")).to_contain_text("Room temperature: 26.0 °C OUT OF LIMIT")
    deviations = page.locator("section.deviations")
    expect(deviations.get_by_role("heading", name="Deviations")).to_be_visible()
    expect(deviations.get_by_role("listitem")).to_have_count(1)
    expect(deviations.get_by_role("listitem")).to_contain_text(re.compile(
        r"^DEV-\d{4}-\d{4} \(out of limit, open\): Room check: .*maximum"))

    # --- identify the material: scan this batch's lot, buffer PBS-7 --------------------------------------
    open_step(page, "Identify the starting material")
    expect(page.get_by_label("Starting material lot", exact=True)).to_be_focused()  # the first field
    scan(page, lot)  # a scanner's Enter moves on to the next input instead of submitting
    expect(page).to_have_url(re.compile(r"/step/0/identify_material/1$"))
    expect(page.get_by_label("Buffer lot", exact=True),
           "Enter in a scan field must move to the next visible input (mfg/static/app.js)").to_be_focused()
    scan(page, "PBS-7")
    expect(page.get_by_label("Starting material lot", exact=True)).to_have_value(lot)
    expect(page.get_by_label("Buffer lot", exact=True)).to_have_value("PBS-7")
    sign_step(page)
    expect(flash(page, "Identify the starting material recorded and signed.")).to_be_visible()
    expect(step_status(page, "Identify the starting material")).to_have_text("awaiting verification")
    expect(step_status(page, "Initial count")).to_have_text("not yet open")  # the stage waits for it

    # Olivia may not verify her own step: no dialog, and nothing for her to verify in the queue
    details(page, "Identify the starting material")
    expect(page.get_by_role("heading", level=1).locator(".status")).to_have_text("awaiting verification")
    expect(page.get_by_role("listitem").filter(has_text=f"Performed by {OLIVIA} (olivia)")).to_have_count(1)
    expect(page.get_by_text("Sign: Verified by")).to_have_count(0)
    expect(page.get_by_role("button", name="Sign as Verified by")).to_have_count(0)
    work_queue(page)
    expect(row(page, "Verify: Identify the starting material")).to_have_count(0)
    sign_out(page)

    # --- Oscar verifies it: the first signature of his session --------------------------------------------
    sign_in(page, base, "oscar", OSCAR)
    work_queue(page)
    row(page, "Verify: Identify the starting material").get_by_role("link", name="Verify").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Identify the starting material")
    page.get_by_text("Sign: Verified by").click()
    dialog = page.locator("details.sign-dialog").filter(has_text="Sign: Verified by")
    expect(dialog).to_have_attribute("open", "")
    expect(dialog).to_contain_text(f"signing as Verified by ({OSCAR})")
    dialog.get_by_label("User name", exact=True).fill("oscar")
    dialog.get_by_label("Password", exact=True).fill(PASSWORD)
    dialog.get_by_role("button", name="Sign as Verified by").click()
    expect(flash(page, "Step verified.")).to_be_visible()
    expect(step_status(page, "Identify the starting material")).to_have_text("complete")

    # --- processing: initial count and one daily check ----------------------------------------------------
    open_step(page, "Initial count")
    page.get_by_label("Volume", exact=True).fill("100.0")
    page.get_by_label("Viable cell concentration", exact=True).fill("2.50")
    page.get_by_label("Viability", exact=True).fill("95.0")
    sign_step(page)
    expect(flash(page, "Initial count recorded and signed.")).to_be_visible()
    expect(values_cell(page, "Initial count")).to_contain_text("Total viable cells: 250.0 × 10⁶ cells")

    open_step(page, "Daily check (Day 1)")
    page.get_by_label("Checked at", exact=True).fill(site_time(live_app))
    page.get_by_label("pH", exact=True).fill("7.30")
    page.get_by_role("group", name="Appearance").get_by_label("Clear", exact=True).check()
    sign_step(page)
    expect(flash(page, "Daily check recorded and signed.")).to_be_visible()
    expect(step_status(page, "Daily check (Day 1)")).to_have_text("complete")
    expect(step_status(page, "Daily check (Day 2)")).to_have_text("open")  # optional further days

    # --- completion: final count, then close-out (which needs a step comment) ------------------------------
    open_step(page, "Final count")
    page.get_by_label("Final volume", exact=True).fill("50.0")
    page.get_by_label("Final viable cell concentration", exact=True).fill("4.00")
    sign_step(page)
    expect(flash(page, "Final count recorded and signed.")).to_be_visible()
    expect(values_cell(page, "Final count")).to_contain_text("Final total viable cells: 200.0 × 10⁶ cells")
    expect(values_cell(page, "Final count")).to_contain_text("Recovery: 80.0 %")

    open_step(page, "Close-out")
    expect(page.get_by_text("This step needs a comment.")).to_be_visible()
    page.get_by_label("All waste was disposed of as biohazardous waste.").check()
    page.get_by_label("Summary", exact=True).fill("Run uneventful apart from the room temperature.")
    sign_step(page)
    expect(alert(page, "This step needs a comment.")).to_be_visible()
    page.get_by_label("Comment (optional)", exact=True).fill("Closed out as planned; see DEV for the room.")
    sign_step(page)
    expect(flash(page, "Close-out recorded and signed.")).to_be_visible()
    expect(batch_status(page)).to_have_text("awaiting review")
    expect(page.get_by_role("link", name="Open step")).to_have_count(0)  # nothing more to perform
    sign_out(page)

    # --- Olivia corrects the initial volume after the fact --------------------------------------------------
    sign_in(page, base, "olivia", OLIVIA)
    work_queue(page)
    expect(page.get_by_role("cell", name="Nothing waiting for you.")).to_be_visible()
    page.get_by_role("link", name=lot, exact=True).click()
    details(page, "Initial count")
    page.get_by_text("Correct a value", exact=True).click()
    dialog = page.locator("details.correction")
    expect(dialog).to_have_attribute("open", "")
    dialog.get_by_label("Field", exact=True).select_option(label="Volume")
    dialog.get_by_label("New value", exact=True).fill("110.0")
    dialog.get_by_label("Reason for the correction", exact=True).fill("transcription error: read 110 mL")
    dialog.get_by_label("User name", exact=True).fill("olivia")  # first signature of this session
    dialog.get_by_label("Password", exact=True).fill(PASSWORD)
    dialog.get_by_role("button", name="Correct and sign").click()
    expect(flash(page, "Correction recorded; the original value is kept. Earlier signatures no longer stand.")
           ).to_be_visible()
    expect(page).to_have_url(re.compile(r"/execution/\d+$"))
    expect(page.get_by_role("heading", level=1).locator(".status")).to_have_text("complete")

    current = page.locator("table.values")
    expect(row(current, "Volume")).to_contain_text("110.0 mL")
    expect(row(current, "Volume")).to_contain_text("corrected")
    expect(row(current, "Total viable cells")).to_contain_text("275.0 × 10⁶ cells")

    corrections = page.locator("table.corrections")
    expect(page.get_by_role("heading", name="Corrections")).to_be_visible()
    expect(row(corrections, "Volume").get_by_role("cell")).to_have_text(
        ["Volume", "100.0 mL", "110.0 mL", "transcription error: read 110 mL", re.compile(f"^{OLIVIA}, ")])
    expect(row(corrections, "Total viable cells").get_by_role("cell")).to_have_text(
        ["Total viable cells", "250.0 × 10⁶ cells", "275.0 × 10⁶ cells", "transcription error: read 110 mL",
         re.compile(f"^{OLIVIA}, ")])

    signatures = page.locator("ul.signatures").get_by_role("listitem")
    expect(signatures).to_have_count(2)
    expect(signatures.filter(has_text=f"Performed by {OSCAR} (oscar)")).to_contain_text(
        "(no longer valid: data corrected after signing)")
    by_olivia = signatures.filter(has_text=f"Performed by {OLIVIA} (olivia)")
    expect(by_olivia).to_contain_text("corrected Initial count: Volume: transcription error: read 110 mL")
    expect(by_olivia).not_to_contain_text("no longer valid")

    # --- recovery in the final count used the old volume: recalculated, and it must be signed again ---------
    page.get_by_role("link", name=f"Batch {lot}").click()
    expect(batch_status(page)).to_have_text("in progress")
    expect(step_status(page, "Final count")).to_have_text("needs signature")
    expect(values_cell(page, "Final count")).to_contain_text("Recovery: 72.7 % (corrected)")
    work_queue(page)
    row(page, f"{lot}").filter(has_text="Sign again: Final count").get_by_role("link", name="Sign again").click()
    page.locator("#resign-password").fill(PASSWORD)
    page.get_by_role("button", name="Sign again as Performed by").click()
    expect(flash(page, "Step signed again.")).to_be_visible()

    # --- the batch is back awaiting review: neither step needs verification ----------------------------------
    expect(batch_status(page)).to_have_text("awaiting review")
    expect(values_cell(page, "Initial count")).to_contain_text("Volume: 110.0 mL (corrected)")
    expect(step_status(page, "Initial count")).to_have_text("complete")
    expect(page.locator("section.deviations").get_by_role("listitem")).to_have_count(1)
