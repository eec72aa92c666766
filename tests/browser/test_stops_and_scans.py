"""Stops you cannot miss and scan first (issue 17, items 1 and 3), at the cleanroom tablet (1024x768, touch).

* A step screen: a misread check character says "scan again" beside the field as the scan arrives, with no
  deviation; a new scan into a filled field replaces it; a wrong subject's COI is the identity stop, a
  full-screen modal dialog at the top of the viewport, focused, naming what was expected, what was scanned,
  the subject and what to do next, with the form behind it inert; after it, the correct scan is kept.
* The chain of custody of a product whose sterility culture turned positive after its conditional release
  (``scenarios.sterility_positive``: bag A infused, bag B blocked, the batch rejected): a hand-off is the
  product stop, a wrong COI at the bedside the identity stop, bag B at the bedside the blocked-bag stop;
  each the same full-screen stop, audited with a deviation.
* A product whose bags have expired (``scenarios.conditional`` recorded three days back, a 48-hour shelf life):
  a hand-off is the product-expired stop, the right bag of the right subject at the bedside the bag-expired
  stop; a bag of a product QA has not released (``scenarios.in_progress``: awaiting QA) at the bedside is the
  not-released stop. Each the same full-screen stop, audited with a deviation, nothing of the custody record
  stored. (A hand-off of a product not yet released is not a stop: ``lifecycle.handoff_stop``.)
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Browser, Locator, Page, expect

from mfg.config import RESOURCE_ROOT
from mfg.demo import nk_batch as demo_nk
from mfg.demo import scenarios
from mfg.domain import isbt128
from mfg.extensions import db
from mfg.models import AuditEntry, Batch, CustodyEvent, Deviation, Subject, User
from mfg.services import audit, bags, masterdata, sops, starting
from tests.browser.pages import NAMES, TABLET, Person, credentials, demo_plant, go, people
from tests.browser.test_lifecycle_flow import _act
from tests.support import PASSWORD


def _deviations(live_app: Flask, batch_id: int) -> list[str]:
    with live_app.app_context():
        return list(db.session.scalars(sa.select(Deviation.origin).where(Deviation.batch_id == batch_id)
                                       .order_by(Deviation.id)))



def _hand_off(clara: Person, din: str) -> None:
    """Clara scans the bag's DIN into the hand-off form, fills it in and signs it."""
    page = clara.page
    section = page.locator("section.custody-handoff")
    _scan(page, section.get_by_label("Scan bag DIN", exact=True), din)
    section.get_by_label("From", exact=True).fill("Cell therapy lab")
    section.get_by_label("To", exact=True).fill("Ward 7")
    section.get_by_label("Condition", exact=True).fill("sealed, intact")
    credentials(clara, section)
    go(section.get_by_role("button", name=re.compile("^Record hand-off")))

def _stop(page: Page, *facts: str) -> Locator:
    """The hard stop: a modal dialog at the top of the viewport holding the focus, naming ``facts``."""
    stop = page.locator("dialog[data-stop]")
    expect(stop).to_be_visible()
    assert stop.evaluate("dialog => dialog.matches(':modal')"), "the stop is not modal"
    box = stop.bounding_box()
    assert box is not None and abs(box["y"]) <= 1 and box["x"] <= 1, box
    assert box["y"] + box["height"] <= TABLET["viewport"]["height"] + 1, box
    assert page.evaluate("window.scrollY") == 0
    assert stop.evaluate("dialog => dialog.contains(document.activeElement)"), "the stop does not hold the focus"
    for term in ("Expected", "Scanned", "Subject", "What to do now"):
        expect(stop.locator("dt", has_text=term)).to_be_visible()
    for fact in facts:
        expect(stop).to_contain_text(fact)
    return stop


def _inert_behind(page: Page, field: Locator) -> None:
    """A tap where ``field`` lies behind the stop does not reach it, nor can anything focus it."""
    box = field.bounding_box()
    assert box is not None
    if box["y"] + box["height"] / 2 < TABLET["viewport"]["height"]:
        page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(field).not_to_be_focused()
    assert not field.evaluate("el => { el.focus(); return document.activeElement === el; }"), "the form is not inert"
    expect(page.locator("dialog[data-stop]")).to_be_visible()


def _dismiss(page: Page) -> None:
    page.get_by_role("button", name="I have read this: close").click()
    expect(page.locator("dialog[data-stop]")).to_have_count(0)


def _scan(page: Page, field: Locator, code: str) -> None:
    """A keyboard-wedge scan: a tap into the field, the code typed fast, Enter."""
    field.tap()
    page.keyboard.type(code)
    page.keyboard.press("Enter")


def _server_error(page: Page, text: str) -> Locator:
    """The server's refusal of a submitted step: beside its field, or at the top when it names no field."""
    return page.locator("p.field-error, p.form-error").filter(has_text=text).first


def test_a_step_screen_checks_scans_as_they_arrive_and_stops_a_wrong_subject_on_top_of_the_screen(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    setting = demo_plant(live_app, make_user)
    act = _act(live_app)
    with live_app.app_context():
        def clinical(session):  # noqa: ANN001, ANN202
            user = session.scalars(sa.select(User).where(User.username == "clinical1")).one()
            return [demo_nk.seed_demo_subject(session, user, setting.password, code=code).id
                    for code in ("NK-001", "NK-002")]

        subject_id, other_id = act("clinical1", clinical)

        def start(session):  # noqa: ANN001, ANN202
            user = session.scalars(sa.select(User).where(User.username == "operator1")).one()
            batch = starting.start_product_batch(session, subject=session.get(Subject, subject_id), user=user)
            other = session.get(Subject, other_id)
            assert batch.subject is not None and batch.din is not None and other is not None
            return batch.id, batch.din, batch.subject.coi, other.coi

        batch_id, din_text, coi_text, other_coi_text = act("operator1", start)
    din = isbt128.din_from_text(din_text)
    coi = isbt128.parse_coi(isbt128.COI_PREFIX + coi_text)
    wrong_coi = isbt128.parse_coi(isbt128.COI_PREFIX + other_coi_text).barcode()
    wrong_check = next(c for c in isbt128.ALPHABET if c != din.check)
    with people(browser, live_server, tablet=True) as person:
        olivia = person("operator1", NAMES["operator1"])
        page = olivia.page
        page.goto(f"/batches/{batch_id}/step/0/identify_bag/1")
        din_field = page.get_by_label("Bag DIN", exact=True)
        coi_field = page.get_by_label("Subject COI", exact=True)

        # a misread check character: "scan again" beside the field as the scan arrives; no deviation
        _scan(page, din_field, din.text + wrong_check)
        misread = din_field.locator("xpath=..").get_by_role("alert")
        expect(misread).to_contain_text(re.compile("check character.*scan again"))
        expect(din_field).to_be_focused()  # back on the field, its text selected: the next scan replaces it
        assert _deviations(live_app, batch_id) == []

        # the scan again replaces the misread one, and the message goes
        page.keyboard.type(din.barcode("00"))
        page.keyboard.press("Enter")
        expect(din_field).to_have_value(din.barcode("00"))
        expect(misread).to_have_count(0)

        # a scan into a field that already holds an entry (left, then tapped again, the caret at its end)
        # replaces the entry
        coi_field.fill("left from before")
        page.get_by_label("Donor identification on the label", exact=True).tap()
        coi_field.tap()
        coi_field.evaluate("el => el.setSelectionRange(el.value.length, el.value.length)")
        page.keyboard.type(wrong_coi)
        expect(coi_field).to_have_value(wrong_coi)

        # the wrong subject's COI, signed: the identity stop over the whole screen
        credentials(olivia, page.locator("form.step-form"))
        go(page.get_by_role("button", name=re.compile("^Record and sign")))
        _stop(page, "IDENTITY MISMATCH", "Subject COI", f"COI {coi.eye_readable()}", "(subject NK-001)",
              wrong_coi, f"NK-001, COI {coi.eye_readable()}", "do not continue with this container", "call QA",
              "Deviation DEV-")
        _inert_behind(page, din_field)
        assert _deviations(live_app, batch_id) == ["identity"]

        # dismissed: the correct DIN scan is kept, the wrong COI is to be scanned again and has the focus
        _dismiss(page)
        expect(din_field).to_have_value(din.barcode("00"))
        expect(coi_field).to_have_value("")
        expect(coi_field).to_be_focused()


def _panel(page: Page, n: int) -> Locator:
    return page.locator("section.custody-bedside fieldset").nth(n)


def _bedside(page: Page, scans: list[tuple[str, str, str, str]]) -> None:
    """Both people's panels: (user name, DIN, bag label, COI); empty scans are left as they are."""
    for n, (username, din, bag, coi) in enumerate(scans):
        panel = _panel(page, n)
        panel.get_by_label("User name", exact=True).fill(username)
        panel.get_by_label("Password", exact=True).fill(PASSWORD)
        for label, code in (("Scan bag DIN", din), ("Scan bag label (product code)", bag), ("Scan subject COI", coi)):
            if code:
                _scan(page, panel.get_by_label(label, exact=True), code)
    go(page.get_by_role("button", name=re.compile("^Record bedside check and sign")))


def test_hand_off_and_bedside_stops_of_a_blocked_product_are_full_screen_and_keep_the_correct_scans(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    setting = demo_plant(live_app, make_user)
    with live_app.app_context():
        lot = scenarios.sterility_positive(_act(live_app), setting).lot
        batch = db.session.scalars(sa.select(Batch).where(Batch.lot == lot)).one()
        blocked = bags.of_batch(db.session, batch)[1]
        assert batch.din is not None and batch.subject is not None
        batch_id, subject = batch.id, batch.subject.code
        din = isbt128.din_from_text(batch.din).barcode("00")
        coi = isbt128.parse_coi(isbt128.COI_PREFIX + batch.subject.coi)
        wrong = isbt128.CoiId(coi.fin, coi.year, coi.sequence + 1).barcode()
        bag_code, bag_name = isbt128.PRODUCT_CODE_PREFIX + blocked.product_code, \
            f"{blocked.product_code} (bag {blocked.division})"
    before = _deviations(live_app, batch_id)
    with people(browser, live_server, tablet=True) as person:
        clara = person("clinical1", NAMES["clinical1"])
        page = clara.page
        page.goto(f"/batches/{batch_id}/custody")

        # a hand-off of the blocked product
        _hand_off(clara, din)
        clara.signed = False  # refused: no signature was made
        _stop(page, "PRODUCT BLOCKED", f"PRODUCT {lot} IS BLOCKED", "not blocked and not expired",
              f"{subject}, COI {coi.eye_readable()}", "Do not hand it on", "call QA")
        _inert_behind(page, page.locator("section.custody-handoff").get_by_label("From", exact=True))
        _dismiss(page)

        # the bedside: person 2 scans another subject's COI
        _bedside(page, [("clinical1", din, bag_code, coi.barcode()), ("clinical2", din, bag_code, wrong)])
        _stop(page, "IDENTITY MISMATCH", "Subject COI (person 2)", f"COI {coi.eye_readable()} (subject {subject})",
              wrong, f"{subject}, COI {coi.eye_readable()}", "Do not infuse")
        _inert_behind(page, _panel(page, 0).get_by_label("User name", exact=True))
        _dismiss(page)
        for n in (0, 1):  # the correct scans are kept; the wrong one is scanned again
            expect(_panel(page, n).get_by_label("Scan bag DIN", exact=True)).to_have_value(din)
            expect(_panel(page, n).get_by_label("Scan bag label (product code)", exact=True)).to_have_value(bag_code)
        expect(_panel(page, 0).get_by_label("Scan subject COI", exact=True)).to_have_value(coi.barcode())
        second_coi = _panel(page, 1).get_by_label("Scan subject COI", exact=True)
        expect(second_coi).to_have_value("")

        # the right subject, bag B: blocked, a hard stop at the bedside
        _bedside(page, [("clinical1", "", "", ""), ("clinical2", "", "", coi.barcode())])
        _stop(page, "BAG BLOCKED", f"BAG {bag_name} IS BLOCKED", bag_name, "not blocked, not expired",
              f"{subject}, COI {coi.eye_readable()}", "Do not infuse")
        _dismiss(page)
        expect(_panel(page, 1).get_by_label("Scan bag label (product code)", exact=True)).to_have_value("")
        expect(_panel(page, 1).get_by_label("Scan subject COI", exact=True)).to_have_value(coi.barcode())
    assert _deviations(live_app, batch_id)[len(before):] == ["product_stop", "identity", "product_stop"]


def test_an_unknown_lot_or_cabinet_is_not_found_scan_again_and_a_quarantined_lot_opens_a_deviation(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    setting = demo_plant(live_app, make_user)
    sops_dir = Path(live_app.config["SOPS_DIR"])
    shutil.copytree(RESOURCE_ROOT / "sops" / "demo", sops_dir / "demo")
    with live_app.app_context():
        session = db.session
        audit.set_actor(session, name="test-setup")
        users = {u.username: u for u in session.scalars(sa.select(User))}
        for version in sops.load_directory(session, sops_dir / "demo", loader=users["qa2"]).loaded:
            sops.approve(session, version, site_timezone="UTC", signer=users["qa1"], password=PASSWORD, username="qa1",
                         require_username=True)
        masterdata.receive_lot(session, material="Phosphate-buffered saline", lot_number="PBS-Q",
                               expiry=date.today() + timedelta(days=100), qc_status="quarantine")
        batch = starting.start_batch(session, codes=["DEMO-PROC"], user=users["operator1"])
        batch_id, lot = batch.id, batch.lot
        session.commit()
    with people(browser, live_server, tablet=True) as person:
        olivia = person("operator1", NAMES["operator1"])
        page = olivia.page

        # a cabinet that is not registered: "not found, scan again" as the scan arrives, and on signing
        page.goto(f"/batches/{batch_id}/step/0/line_clearance/1")
        cabinet = page.get_by_label("Biosafety cabinet", exact=True)
        _scan(page, cabinet, "BSC-09")
        expect(cabinet.locator("xpath=..").get_by_role("alert")).to_contain_text(
            "equipment 'BSC-09' not found (not registered): scan again")
        page.get_by_label("The work area is clean and free of material from previous batches.").check()
        page.get_by_label("Processing started", exact=True).fill(
            (datetime.now(setting.tz) - timedelta(minutes=20)).strftime("%Y-%m-%d %H:%M"))
        credentials(olivia, page.locator("form.step-form"))
        go(page.get_by_role("button", name=re.compile("^Record and sign")))
        expect(_server_error(page, "not found (not registered): scan again")).to_be_visible()
        assert _deviations(live_app, batch_id) == []
        _scan(page, cabinet, "BSC-01")
        expect(cabinet.locator("xpath=..").get_by_role("alert")).to_have_count(0)
        page.get_by_label("The work area is clean and free of material from previous batches.").check()
        credentials(olivia, page.locator("form.step-form"))
        go(page.get_by_role("button", name=re.compile("^Record and sign")))
        olivia.signed = True

        # a buffer lot never received: not found, scan again, no deviation, nothing stored
        page.goto(f"/batches/{batch_id}/step/0/identify_material/1")
        _scan(page, page.get_by_label("Starting material lot", exact=True), lot)
        buffer = page.get_by_label("Buffer lot", exact=True)
        _scan(page, buffer, "PBS-DEMO-9")
        expect(buffer.locator("xpath=..").get_by_role("alert")).to_contain_text(
            "lot 'PBS-DEMO-9' not found (not received): scan again")
        credentials(olivia, page.locator("form.step-form"))
        go(page.get_by_role("button", name=re.compile("^Record and sign")))
        expect(_server_error(page, "lot 'PBS-DEMO-9' not found (not received): scan again")).to_be_visible()
        assert _deviations(live_app, batch_id) == []

        # a quarantined lot exists: it is refused and its use is a deviation
        _scan(page, buffer, "PBS-Q")
        expect(buffer.locator("xpath=..").get_by_role("alert")).to_have_count(0)
        credentials(olivia, page.locator("form.step-form"))
        go(page.get_by_role("button", name=re.compile("^Record and sign")))
        expect(_server_error(
            page, "lot 'PBS-Q' is quarantine, not released by QC. Do not use it: a deviation has been opened.")
        ).to_be_visible()
        expect(buffer).to_have_value("PBS-Q")  # the observed value is kept on the screen
        assert _deviations(live_app, batch_id) == ["material"]


def _custody_records(live_app: Flask, batch_id: int) -> list[str]:
    with live_app.app_context():
        return list(db.session.scalars(sa.select(CustodyEvent.kind).where(CustodyEvent.batch_id == batch_id)))


def _product_stops_audited(live_app: Flask, batch_id: int) -> int:
    with live_app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "product.blocked", AuditEntry.entity_id == str(batch_id))) or 0


def _product(live_app: Flask, lot: str) -> tuple[int, str, str, isbt128.CoiId, str, str]:
    """The batch of ``lot``: its id, its subject's code, the DIN scan, the COI, the first bag's label scan and
    name."""
    with live_app.app_context():
        batch = db.session.scalars(sa.select(Batch).where(Batch.lot == lot)).one()
        bag = bags.of_batch(db.session, batch)[0]
        assert batch.din is not None and batch.subject is not None
        return (batch.id, batch.subject.code, isbt128.din_from_text(batch.din).barcode("00"),
                isbt128.parse_coi(isbt128.COI_PREFIX + batch.subject.coi),
                isbt128.PRODUCT_CODE_PREFIX + bag.product_code, f"{bag.product_code} (bag {bag.division})")


def test_an_expired_product_at_the_hand_off_and_an_expired_bag_at_the_bedside_are_full_screen_stops(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    setting = demo_plant(live_app, make_user)
    # conditionally released, its process recorded three days back: its bags (48 h shelf life) have expired
    with live_app.app_context():
        lot = scenarios.conditional(_act(live_app), setting, days_back=3).lot
    batch_id, subject, din, coi, bag_code, bag_name = _product(live_app, lot)
    before = _deviations(live_app, batch_id)
    with people(browser, live_server, tablet=True) as person:
        clara = person("clinical1", NAMES["clinical1"])
        page = clara.page
        page.goto(f"/batches/{batch_id}/custody")

        # the hand-off of the expired product
        _hand_off(clara, din)
        _stop(page, "PRODUCT EXPIRED", f"PRODUCT {lot} EXPIRED at", f"product {lot}, not blocked and not expired",
              f"product {lot}, expired at", f"{subject}, COI {coi.eye_readable()}", "Do not hand it on", "call QA",
              "Deviation DEV-")
        _inert_behind(page, page.locator("section.custody-handoff").get_by_label("From", exact=True))
        assert _deviations(live_app, batch_id)[len(before):] == ["product_stop"]
        assert _product_stops_audited(live_app, batch_id) == 1
        assert _custody_records(live_app, batch_id) == []  # nothing of the hand-off was stored
        _dismiss(page)

        # the bedside: both people scan the right bag of the right subject; the bag has expired
        _bedside(page, [("clinical1", din, bag_code, coi.barcode()), ("clinical2", din, bag_code, coi.barcode())])
        _stop(page, "BAG EXPIRED", f"BAG {bag_name} EXPIRED at", "not blocked, not expired",
              f"{bag_name}, expired at", f"{subject}, COI {coi.eye_readable()}", "Do not infuse", "call QA",
              "Deviation DEV-")
        _inert_behind(page, _panel(page, 0).get_by_label("User name", exact=True))
        _dismiss(page)
    assert _deviations(live_app, batch_id)[len(before):] == ["product_stop", "product_stop"]
    assert _product_stops_audited(live_app, batch_id) == 2
    assert _custody_records(live_app, batch_id) == []


def test_a_bag_of_a_product_qa_has_not_released_is_a_full_screen_stop_at_the_bedside(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    setting = demo_plant(live_app, make_user)
    with live_app.app_context():
        lot = scenarios.in_progress(_act(live_app), setting).lot  # every step done, its bags made: awaiting QA
    batch_id, subject, din, coi, bag_code, bag_name = _product(live_app, lot)
    with live_app.app_context():
        status = db.session.scalars(sa.select(Batch.status).where(Batch.id == batch_id)).one()
    assert status not in ("released", "conditionally_released")
    before = _deviations(live_app, batch_id)
    with people(browser, live_server, tablet=True) as person:
        clara = person("clinical1", NAMES["clinical1"])
        page = clara.page
        page.goto(f"/batches/{batch_id}/custody")
        _bedside(page, [("clinical1", din, bag_code, coi.barcode()), ("clinical2", din, bag_code, coi.barcode())])
        _stop(page, "PRODUCT NOT RELEASED", f"Batch {lot} is", "only a product QA has released",
              "a bag of a product QA has released (or released conditionally), not blocked, not expired",
              f"{bag_name}, batch {lot}", f"{subject}, COI {coi.eye_readable()}", "Do not infuse: call QA",
              "Deviation DEV-")
        _inert_behind(page, _panel(page, 0).get_by_label("User name", exact=True))
        assert _deviations(live_app, batch_id)[len(before):] == ["product_stop"]
        assert _product_stops_audited(live_app, batch_id) == 1
        assert _custody_records(live_app, batch_id) == []  # nothing of the bedside check was stored
        _dismiss(page)
