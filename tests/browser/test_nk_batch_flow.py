"""End to end through the browser: one complete NK batch on the demo configuration (sops/nk, sops/trial).

Three people, each in their own browser: Clara (clinical coordinator) registers the donor, records the
infectious-disease panel, determines eligibility, enrols subject NK-001 at 62.4 kg and signs dose level DL2.
Olivia (operator) opens the subject's batch record and performs every step of NK-INTAKE, NK-EXPAND,
NK-RELEASE and NK-FORMULATE on the step screens; Oscar (operator) verifies every step that needs it from his
work queue. On the way: a foreign collection bag at intake and a label of a division the product does not
have at scan-back are identity hard stops (nothing stored, a deviation opened); the batch page shows the
bag with its expiry countdown and the growth chart. At the end the batch awaits review, Olivia records a
hand-off, and Clara and a second clinical user (Nadia) do the two-person bedside check on one screen.

What the operator types at each step comes from ``demo_nk.entry_for`` (the demo data set), in the order
``demo_nk.run_nk_batch`` performs the open steps; each field is filled by its label, as its type is shown.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Browser, Locator, Page, expect

from mfg.config import RESOURCE_ROOT
from mfg.demo import nk_batch as demo_nk
from mfg.demo import seed as demo
from mfg.domain import isbt128
from mfg.extensions import db
from mfg.models import AuditEntry, User, utcnow
from mfg.services import audit, bags, batches, custody, deviations, review, signatures, sops
from tests.browser.pages import Person, credentials, effective_criteria, fill_eligible_screening, flash, go, people, row
from tests.support import PASSWORD

CLARA, NADIA = "Clara Coordinator", "Nadia Nurse"
OLIVIA, OSCAR = "Olivia Operator", "Oscar Verifier"
GROWTH_CHARTS = "**/growth-*.svg"


# --- setup through the services ----------------------------------------------------------------------

def set_up_plant(live_app: Flask, make_user: Callable[..., User]) -> None:
    """The NK master records and the trial configuration effective (loaded by one QA user, approved by
    another), the equipment and lots they name, and the people of the flow."""
    for username, role, full_name in (("qa2", "qa", "Quentin Reviewer"), ("qa1", "qa", "Quinn Quality"),
                                      ("clara", "clinical", CLARA), ("nadia", "clinical", NADIA),
                                      ("olivia", "operator", OLIVIA), ("oscar", "operator", OSCAR)):
        make_user(username, role, full_name=full_name)
    sops_dir = Path(live_app.config["SOPS_DIR"])
    for folder in ("nk", "trial"):
        shutil.copytree(RESOURCE_ROOT / "sops" / folder, sops_dir / folder)
    with live_app.app_context():
        session = db.session
        audit.set_actor(session, name="test-setup")
        users = {u.username: u for u in session.scalars(sa.select(User))}
        for version in sops.load_directory(session, sops_dir, loader=users["qa2"]).loaded:
            sops.approve(session, version, site_timezone="UTC", signer=users["qa1"], password=PASSWORD, username="qa1",
                         require_username=True)
        demo.seed_master_data(session)  # acts as qa1, the demo's approver
        session.commit()


# --- the demo data set: what the operator does next ----------------------------------------------------

@dataclass(frozen=True)
class Entry:
    field_id: str
    kind: str  # the master record's field type
    label: str  # what the screen labels it with: the statement of a confirmation
    raw: str


@dataclass(frozen=True)
class DemoStep:
    code: str
    step_id: str
    instance: int
    title: str  # as the flash message names it
    heading: str  # as the step screen, the batch page and the work queue name it
    verify: bool
    entries: tuple[Entry, ...]
    comment: str

    def raw(self, field_id: str) -> str:
        return next(e.raw for e in self.entries if e.field_id == field_id)


def next_demo_step(live_app: Flask, batch_id: int, now: datetime) -> DemoStep | None:
    """The step the demo driver (``demo_nk.run_nk_batch``) would perform next, with its entry."""
    with live_app.app_context():
        session = db.session
        batch = batches.get(session, batch_id)
        records = batches.records(batch)
        codes = [record.code for record in records]
        made = bags.of_batch(session, batch)
        wanted = [(demo_nk._order(records, codes, item), item) for item in batches.open_steps(session, batch)
                  if item.instance <= demo_nk.planned_instances(codes[item.ref.position], item.step, made)]
        if not wanted:
            return None
        item = min(wanted, key=lambda w: w[0])[1]
        code, step = codes[item.ref.position], item.step
        entry = demo_nk.entry_for(code, step.id, item.instance, batch=batch, subject=batch.subject, bags=made,
                                  now=now, tz=ZoneInfo(live_app.config["SITE_TIMEZONE"]))
        entries = tuple(Entry(f.id, f.type, f.statement if f.type == "confirmation" else f.label, entry.raw[f.id])
                        for f in step.fields if f.id in entry.raw)
        heading = step.title + (f" ({step.repeat.label} {item.instance})" if step.repeat else "")
        return DemoStep(code, step.id, item.instance, step.title, heading, step.verification == "required",
                        entries, entry.comment)


# --- people and small page helpers ---------------------------------------------------------------------


def alert(page: Page, text: str) -> Locator:
    return page.get_by_role("alert").filter(has_text=text)


def scan(page: Page, code: str) -> None:
    """What a barcode scanner does: type the code into the focused input, then press Enter."""
    page.keyboard.type(code)
    page.keyboard.press("Enter")


def batch_status(page: Page) -> Locator:
    return page.get_by_role("heading", level=1).locator(".status")


def deviation_items(page: Page) -> Locator:
    return page.locator("section.deviations").get_by_role("listitem")


# --- the step screens ----------------------------------------------------------------------------------

def open_row(page: Page, step: DemoStep) -> Locator:
    """The batch page's row of the step while it is open to perform."""
    return page.locator("tr.open-step").filter(has=page.get_by_role("cell", name=step.heading, exact=True))


def open_step(page: Page, step: DemoStep) -> None:
    """From the batch page, the "Open step" link of the step's open row."""
    go(open_row(page, step).get_by_role("link", name="Open step"))
    expect(page.get_by_role("heading", level=1)).to_have_text(step.heading)


def fill_step(page: Page, step: DemoStep, *, skip: tuple[str, ...] = (), **replaced: str) -> None:
    """Fill every field of ``step`` by its label, as its type is shown: choices are radio groups,
    confirmations check boxes, the rest text inputs (scans typed in)."""
    for entry in step.entries:
        if entry.field_id in skip:
            continue
        raw = replaced.get(entry.field_id, entry.raw)
        if entry.kind == "choice":
            page.get_by_role("group", name=entry.label, exact=True).get_by_label(raw, exact=True).check()
        elif entry.kind == "confirmation":
            page.get_by_label(entry.label, exact=True).check()
        else:
            page.get_by_label(entry.label, exact=True).fill(raw)
    if step.comment:
        page.get_by_label("Comment (optional)", exact=True).fill(step.comment)


def submit_step(person: Person) -> None:
    credentials(person, person.page.get_by_role("group", name="Sign: Performed by"))
    go(person.page.get_by_role("button", name="Record and sign as Performed by"))


def recorded(person: Person, step: DemoStep) -> None:
    """The step was stored and signed, with every value in its limits (no deviation)."""
    expect(flash(person.page, "recorded and signed")).to_have_text(f"{step.title} recorded and signed.")
    person.signed = True


def verify(oscar: Person, step: DemoStep) -> None:
    """Oscar verifies the step from his work queue, on its execution page."""
    page = oscar.page
    page.goto("/batches/")
    go(row(page, f"Verify: {step.heading}").get_by_role("link", name="Verify"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(step.heading)
    expect(batch_status(page)).to_have_text("awaiting verification")
    page.get_by_text("Sign: Verified by", exact=True).click()
    dialog = page.locator("details.sign-dialog").filter(has_text="Sign: Verified by")
    expect(dialog).to_have_attribute("open", "")
    credentials(oscar, dialog)
    go(dialog.get_by_role("button", name="Sign as Verified by"))
    expect(flash(page, "Step verified.")).to_be_visible()
    oscar.signed = True


def perform(olivia: Person, oscar: Person, step: DemoStep) -> None:
    """Olivia performs ``step`` from the batch page; Oscar verifies it when the record requires it."""
    open_step(olivia.page, step)
    fill_step(olivia.page, step)
    submit_step(olivia)
    recorded(olivia, step)
    if step.verify:
        verify(oscar, step)
        olivia.page.reload()  # her batch page predates the verification


def perform_until(live_app: Flask, batch_id: int, now: datetime, olivia: Person, oscar: Person,
                  stop: tuple[str, str] | None = None) -> DemoStep | None:
    """Perform the demo's steps in order; returns the step ``stop`` (not performed), or None when done."""
    while (step := next_demo_step(live_app, batch_id, now)) is not None:
        if (step.code, step.step_id) == stop:
            return step
        perform(olivia, oscar, step)
    return None


def identity_hard_stop(olivia: Person, step: DemoStep, field_id: str, wrong: str, lot: str, count: int) -> None:
    """A scan of ``wrong`` for ``field_id`` is refused as an identity mismatch: nothing is stored (the step
    stays open) and the batch page lists the ``count``-th deviation, an identity one."""
    page = olivia.page
    label = next(e.label for e in step.entries if e.field_id == field_id)
    open_step(page, step)
    fill_step(page, step, **{field_id: wrong})
    submit_step(olivia)
    stop = page.get_by_role("alertdialog")  # the full-screen stop (tests/browser/test_stops_and_scans.py)
    expect(stop).to_contain_text(f"IDENTITY MISMATCH: {label}: the scanned identifier does not match")
    stop.get_by_role("button", name="I have read this: close").click()
    page.get_by_role("link", name=f"Batch {lot}").click()
    expect(open_row(page, step)).to_be_visible()
    expect(row(page, step.heading)).to_have_count(1)  # the open row only: no execution was stored
    expect(deviation_items(page)).to_have_count(count)
    expect(deviation_items(page).last).to_contain_text(re.compile(
        rf"^DEV-\d{{4}}-\d{{4}} \(identity, open\): Identity mismatch at step '{re.escape(step.title)}' "
        rf"\({re.escape(label)}\)"))


# --- the clinical side ---------------------------------------------------------------------------------

def sign_decision(clara: Person, level: str, reason: str = "") -> None:
    """Clara signs the safety review's decision on the cohort ledger: ``level`` open to new subjects."""
    page = clara.page
    page.get_by_role("banner").get_by_role("link", name="Subjects", exact=True).click()
    go(page.get_by_role("link", name="Cohort ledger"))
    dialog = page.locator("details.sign-dialog").filter(has_text="Level open to new subjects")
    dialog.locator("summary").click()
    dialog.get_by_label("Level open to new subjects", exact=True).select_option(level)
    if reason:
        dialog.get_by_label(re.compile("^Reason")).fill(reason)
    credentials(clara, dialog)
    go(dialog.get_by_role("button", name="Sign as Approved by"))
    clara.signed = True
    expect(flash(page, "Escalation decision signed")).to_be_visible()


def enrol_subject_with_dose(clara: Person, criteria=None) -> None:  # noqa: ANN001 - SubjectEligibility
    """Clara registers the donor and the panel, determines eligibility, enrols NK-001 (with its signed eligibility
    screening under ``criteria``, the effective configuration's) and signs DL2."""
    page = clara.page
    page.get_by_role("banner").get_by_role("link", name="Subjects", exact=True).click()
    page.get_by_label("Donor code", exact=True).fill(demo_nk.DEMO_DONOR)
    page.get_by_label("ABO/Rh", exact=True).select_option(demo_nk.DEMO_DONOR_ABO_RH)
    page.get_by_label("Relationship to the subject", exact=True).select_option(demo_nk.DEMO_DONOR_RELATIONSHIP)
    page.get_by_role("button", name="Register donor").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Donor {demo_nk.DEMO_DONOR} pending")

    drawn = (date.today() - timedelta(days=demo_nk.SPECIMEN_DAYS_BEFORE)).isoformat()
    panel = page.locator("section.donor-panel")  # the whole panel in one form
    panel.get_by_label("Specimen drawn on", exact=True).fill(drawn)
    for test, result in demo_nk.DONOR_TESTS:
        panel.get_by_label(test, exact=True).select_option(result)
    go(panel.get_by_role("button", name="Record the panel"))
    for test, result in demo_nk.DONOR_TESTS:
        expect(row(page, test).get_by_role("cell")).to_have_text([test, result, drawn])

    page.get_by_label("Determination", exact=True).select_option("eligible")
    page.get_by_label("Summary of records", exact=True).fill(
        "Questionnaire and physical examination without findings; infectious-disease panel negative on a "
        "specimen drawn within 7 days before collection.")
    page.get_by_role("button", name="Record determination").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Donor {demo_nk.DEMO_DONOR} eligible")

    page.get_by_role("link", name="Subjects and donors").click()
    page.get_by_label("Subject code", exact=True).fill(demo_nk.DEMO_SUBJECT)
    page.get_by_label("Donor", exact=True).select_option(label=f"{demo_nk.DEMO_DONOR} (eligible)")
    page.get_by_label("Weight (kg)", exact=True).fill(demo_nk.DEMO_WEIGHT_KG)
    page.get_by_label("Weighed on", exact=True).fill(date.today().isoformat())
    if criteria is not None:
        fill_eligible_screening(clara, criteria, date.today())
    page.get_by_role("button", name=re.compile("[Ee]nrol subject$")).click()
    expect(flash(page, f"Subject {demo_nk.DEMO_SUBJECT} enrolled with chain-of-identity id")).to_be_visible()
    clara.signed = clara.signed or criteria is not None
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Subject {demo_nk.DEMO_SUBJECT}")

    # the safety review opens the start level, then DL2 (departing from the rule, so with a reason): only a level
    # a signed decision opened is offered to the subject
    sign_decision(clara, "DL1")
    expect(page.locator("dd.open-level")).to_contain_text("DL1, cohort 1 (0 of 3 assigned)")
    sign_decision(clara, "DL2", reason="Safety review: DL1 tolerated in the pilot study")
    expect(page.locator("dd.open-level")).to_contain_text("DL2, cohort 2 (0 of 3 assigned)")
    page.get_by_role("banner").get_by_role("link", name="Subjects", exact=True).click()
    go(page.get_by_role("link", name=demo_nk.DEMO_SUBJECT, exact=True))

    page.get_by_text("Sign: assign dose level (Approved by)").click()
    dialog = page.locator("details.sign-dialog")
    expect(dialog.get_by_label("Dose level", exact=True).locator("option:not([disabled])")).to_have_count(1)
    dialog.get_by_label("Dose level", exact=True).select_option(demo_nk.DEMO_DOSE_LEVEL)
    expect(dialog).to_contain_text(  # the weight is shown as stored: 62.40 kg
        re.compile(rf"You assign this dose level to {demo_nk.DEMO_SUBJECT} \(62\.40? kg\)"))
    credentials(clara, dialog)
    dialog.get_by_role("button", name="Sign as Approved by").click()
    expect(flash(page, "Dose level DL2 assigned and signed.")).to_be_visible()
    clara.signed = True
    expect(page.get_by_role("definition").filter(has_text=re.compile(r"^DL2: 3.00 × 10⁶ NK cells/kg$"))).to_be_visible()
    expect(page.get_by_role("definition").filter(has_text=f"Approved by {CLARA} (clara)")).to_be_visible()
    # opening the batch record is an operator's act: not offered to the coordinator
    expect(page.get_by_role("button", name=re.compile("Open the batch record"))).to_have_count(0)


def open_batch_record(olivia: Person) -> tuple[int, str]:
    """Olivia opens the batch record from the subject page; returns (batch id, lot = the DIN allocated)."""
    page = olivia.page
    page.get_by_role("banner").get_by_role("link", name="Subjects", exact=True).click()
    page.get_by_role("link", name=demo_nk.DEMO_SUBJECT, exact=True).click()
    page.get_by_role("button", name="Open the batch record for this subject's collection").click()
    opened = flash(page, "opened: the collection bag must carry this DIN.")
    expect(opened).to_have_text(re.compile(r"^Batch record X9999\d{8} opened"))
    lot = re.match(r"Batch record (\S+) opened", opened.inner_text()).group(1)
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Batch {lot}")
    expect(batch_status(page)).to_have_text("created")
    batch_id = int(re.search(r"/batches/(\d+)$", page.url).group(1))
    return batch_id, lot


# --- the flow ------------------------------------------------------------------------------------------


def test_one_nk_batch_from_intake_to_the_bedside(live_server: str, live_app: Flask, browser: Browser,
                                                 make_user: Callable[..., User]) -> None:
    set_up_plant(live_app, make_user)
    with people(browser, live_server) as person:
        clara, olivia, oscar = person("clara", CLARA), person("olivia", OLIVIA), person("oscar", OSCAR)
        # Speed only: the server draws the growth chart anew (matplotlib, about 0.3 s) on every view of the
        # batch page, some 75 views here. The operators' browsers skip it while they work; the chart is
        # checked once below, loaded for real.
        for operator in (olivia, oscar):
            operator.page.route(GROWTH_CHARTS, lambda route: route.abort())

        # --- Clara: donor, eligibility, subject, signed dose; Olivia opens the batch record ------------------
        enrol_subject_with_dose(clara, effective_criteria(live_app))
        batch_id, lot = open_batch_record(olivia)
        now = utcnow().replace(second=0, microsecond=0)  # the demo data's clock, as run_nk_batch sets it
        batch_url = f"/batches/{batch_id}"

        # --- intake: a bag of another collection is a hard stop; the right bag goes through the scanner -------
        step = next_demo_step(live_app, batch_id, now)
        assert (step.code, step.step_id) == ("NK-INTAKE", "identify_bag")
        other_collection = isbt128.make_din("X9999", date.today().year % 100, 999999).barcode("00")
        assert other_collection != step.raw("bag_din")
        identity_hard_stop(olivia, step, "bag_din", other_collection, lot, count=1)
        expect(batch_status(olivia.page)).to_have_text("created")

        page = olivia.page
        open_step(page, step)
        expect(page.get_by_label("Bag DIN", exact=True)).to_be_focused()  # the first field
        scan(page, step.raw("bag_din"))  # Enter moves on instead of submitting a half-filled step
        expect(page).to_have_url(re.compile(rf"/batches/{batch_id}/step/0/identify_bag/1$"))
        expect(page.get_by_label("Subject COI", exact=True)).to_be_focused()
        scan(page, step.raw("subject_coi"))
        expect(page.get_by_label("Donor identification on the label", exact=True)).to_be_focused()
        fill_step(page, step, skip=("bag_din", "subject_coi"))
        submit_step(olivia)
        recorded(olivia, step)
        expect(batch_status(page)).to_have_text("in progress")
        expect(row(page, step.heading).get_by_role("cell").nth(1)).to_have_text("awaiting verification")
        verify(oscar, step)
        page.reload()

        # --- every step up to the bag scan-back -------------------------------------------------------------
        step = perform_until(live_app, batch_id, now, olivia, oscar, stop=("NK-FORMULATE", "scan_back"))
        assert step is not None and step.heading == "Scan back each bag label (Bag 1)"

        # --- the batch page: one bag (undivided, 00) of 13.4 mL with its expiry countdown, the growth chart ----
        page.unroute(GROWTH_CHARTS)
        page.reload()
        bag = row(page.locator("section.bags"), "00")
        expect(bag).to_contain_text("=<S9999V00")
        expect(bag).to_contain_text("13.4 mL")
        expect(bag.get_by_role("cell").last).to_have_text(re.compile(r"\(\d+ h \d+ min left\)$"))
        chart = page.locator("img.growth-chart")
        expect(chart).to_have_count(1)
        expect(chart).to_have_attribute("src", re.compile(rf"^/batches/{batch_id}/growth-0\.svg$"))
        expect(chart).to_have_attribute("alt", re.compile(r"Seeded day 0: 190; Count 1 day 7: "))
        svg = page.request.get(live_server + chart.get_attribute("src"))
        assert svg.status == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=chart.element_handle())

        # --- scan-back: a label of a division the product does not have is a hard stop ----------------------
        right = step.raw("product_code")
        identity_hard_stop(olivia, step, "product_code", right[:-2] + "B0", lot, count=2)
        perform(olivia, oscar, step)

        # --- the rest: final inspection, then NK-RELEASE (final product); the batch awaits review ----------
        assert perform_until(live_app, batch_id, now, olivia, oscar) is None
        expect(batch_status(page)).to_have_text("awaiting review")
        expect(page.get_by_role("link", name="Open step")).to_have_count(0)
        expect(page.locator("td .status").filter(has_text=re.compile("awaiting verification|needs signature"))
               ).to_have_count(0)
        expect(deviation_items(page)).to_have_count(2)  # the two identity stops; every value was in its limits

        # --- custody: Olivia hands the bag off ----------------------------------------------------------------
        din = isbt128.din_from_text(lot).barcode("00")
        page.get_by_role("link", name="Chain of custody and bedside check").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Chain of custody: {lot}")
        handoff = page.locator("section.custody-handoff")
        handoff.get_by_label("Scan bag DIN", exact=True).fill(din)
        handoff.get_by_label("From", exact=True).fill("Cleanroom")
        handoff.get_by_label("To", exact=True).fill("Clinic ward 4")
        handoff.get_by_label("Condition", exact=True).fill("sealed, 2-8 °C")
        credentials(olivia, handoff)  # she has signed steps in this session: the password only
        handoff.get_by_role("button", name="Record hand-off and sign as Performed by").click()
        expect(flash(page, "Hand-off from Cleanroom to Clinic ward 4 recorded and signed.")).to_be_visible()

        # --- QA's release (its screens are tested in test_qa_review_flow.py): Quinn, who did no step -------------
        with live_app.app_context():
            session = db.session
            quinn = session.scalar(sa.select(User).where(User.username == "qa1"))
            audit.set_actor(session, quinn)
            released = batches.get(session, batch_id)
            for deviation in deviations.of_batch(session, released):  # the two identity stops, investigated
                deviations.investigate(session, deviation, classification="minor", investigation="scan of the wrong "
                                   "container, stopped before use", root_cause="wrong container at hand",
                                   impact="none: the right container was then scanned", capa_reference="", user=quinn)
                deviations.close(session, deviation, signer=quinn, password=PASSWORD, username="qa1",
                             require_username=True)
            for item in review.exceptions(session, released):
                review.mark_reviewed(session, released, item.key, user=quinn)
            review.decide(session, released, decision="conditionally_released", comment="sterility pending",
                          signer=quinn, password=PASSWORD, username="qa1", require_username=True)
            session.commit()

        # --- the bedside check: Clara and Nadia on Clara's screen, each with their own name and scans ---------
        with live_app.app_context():
            subject_coi = batches.get(db.session, batch_id).subject.coi
            first_bag = bags.of_batch(db.session, batches.get(db.session, batch_id))[0]
            bag_label = isbt128.PRODUCT_CODE_PREFIX + first_bag.product_code
        coi = isbt128.parse_coi(isbt128.COI_PREFIX + subject_coi).barcode()
        page = clara.page
        page.goto(batch_url)
        page.get_by_role("link", name="Chain of custody and bedside check").click()
        for panel_name, username in (("Person 1: signs as Performed by", "clara"),
                                     ("Person 2: signs as Verified by", "nadia")):
            panel = page.get_by_role("group", name=panel_name)
            panel.get_by_label("User name", exact=True).fill(username)
            panel.get_by_label("Password", exact=True).fill(PASSWORD)
            panel.get_by_label("Scan bag DIN", exact=True).click()
            scan(page, din)
            expect(panel.get_by_label("Scan bag label (product code)", exact=True)).to_be_focused()
            scan(page, bag_label)  # the bag itself: its product code with the division
            expect(panel.get_by_label("Scan subject COI", exact=True)).to_be_focused()
            scan(page, coi)  # Enter moves on to person 2's panel, or to the button: no early submit
        expect(page.get_by_role("button", name=re.compile("^Record bedside check"))).to_be_focused()
        page.get_by_role("button", name="Record bedside check and sign (Performed by / Verified by)").click()
        expect(flash(page, "Bedside identity check recorded: both scans matched, signed by two people.")
               ).to_be_visible()
        events = page.locator("section.custody-events")
        expect(row(events, "Hand-off")).to_contain_text(OLIVIA)
        expect(row(events, "Hand-off")).to_contain_text("Clinic ward 4")
        bedside = row(events, "Bedside identity check").get_by_role("cell")
        expect(bedside.nth(2)).to_have_text(CLARA)
        expect(bedside.nth(3)).to_have_text(NADIA)
        expect(bedside.nth(8)).to_contain_text(f"Performed by {CLARA} (clara)")
        expect(bedside.nth(8)).to_contain_text(f"Verified by {NADIA} (nadia)")

        # --- the cohort ledger: the infusion starts NK-001's DLT window; Clara records a DLT and signs the decision
        # that follows (3+3: one DLT, no other subject evaluable at DL2: stay, a new cohort) --------------------
        page.get_by_role("banner").get_by_role("link", name="Subjects", exact=True).click()
        go(page.get_by_role("link", name="Cohort ledger"))
        subject_row = page.locator("tr.ledger-row", has_text=demo_nk.DEMO_SUBJECT)
        expect(subject_row.locator("td.status")).to_have_text("in window")
        expect(subject_row).to_contain_text("(30 days left)")
        dialog = page.locator("details.sign-dialog").filter(has_text="CTCAE term")
        dialog.locator("summary").click()
        dialog.get_by_label("Subject", exact=True).select_option(label=f"{demo_nk.DEMO_SUBJECT} (DL2)")
        dialog.get_by_label("CTCAE term", exact=True).fill("Cytokine release syndrome")
        dialog.get_by_label("Grade (CTCAE v5.0)", exact=True).select_option("3")
        dialog.get_by_label("Attribution", exact=True).select_option("probable")
        dialog.get_by_label("Onset", exact=True).fill(date.today().isoformat())
        dialog.get_by_label("Dose-limiting toxicity", exact=True).select_option("yes")
        credentials(clara, dialog)
        go(dialog.get_by_role("button", name="Sign as Performed by"))
        expect(flash(page, f"Adverse event recorded for {demo_nk.DEMO_SUBJECT} and signed.")).to_be_visible()
        expect(page.locator("tr.ledger-row", has_text=demo_nk.DEMO_SUBJECT).locator("td.status")).to_have_text("DLT")
        expect(page.locator("dd.recommendation")).to_contain_text("wait (DL2)")
        sign_decision(clara, "DL2")
        expect(page.locator("dd.open-level")).to_contain_text("DL2, cohort 3 (0 of 3 assigned)")
        expect(row(page.locator("table.decisions"), "stay: DL2 (from DL2)")).to_contain_text(f"Approved by {CLARA}")

    # --- the record: audit chain intact, every signature matches its record, the custody events ------------
    with live_app.app_context():
        session = db.session
        chain = audit.verify(session)
        assert chain.ok and chain.checked > 0, chain.problem
        checked, mismatches = signatures.check_all(session)
        assert mismatches == [] and checked > 60  # SOP approvals, the dose, ~40 steps, 15 verifications, custody
        batch = batches.get(session, batch_id)
        assert batch.status == "conditionally_released"  # released by QA before the bedside check
        by_id = {u.id: u.username for u in session.scalars(sa.select(User))}
        assert [(e.kind, by_id[e.performed_by_id], by_id.get(e.verified_by_id), e.to_location, e.scanned_coi)
                for e in custody.events(session, batch)] == [
            ("handoff", "olivia", None, "Clinic ward 4", None),
            ("bedside", "clara", "nadia", None, subject_coi)]
        assert custody.events(session, batch)[-1].bag_id == first_bag.id  # the bag infused is on record
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)
                              .where(AuditEntry.action == "identity.mismatch")) == 2
        assert [d.origin for d in deviations.of_batch(session, batch)] == ["identity", "identity"]
