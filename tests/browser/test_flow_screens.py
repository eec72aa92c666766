"""Issue 17, items 6 ("Flow") and 7 ("Gloved hands"), on the cleanroom tablet (1024x768 with touch).

The NK batch is made through the services as the demo people (``demo_nk.run_nk_batch``) up to a step, then
the screens are used as the operators use them:

* the batch page puts the operator's next step at its top (its "Open step" within the first screen), shows a
  progress bar of stages and steps (done, current), keeps the growth chart collapsed until it has a point,
  and after each signature offers the next step the signer may do;
* a step not open yet shows the guard's reasons, and no input;
* countdowns tick on the page; an open batch page updates itself when another person signs (it reloads), unless
  its viewer has typed into a form on it: then the change is announced, with a Reload button, and nothing typed
  is lost;
* touch targets of at least 44x44 px; a navbar of one row for every role; the comment box of a value only
  when the value needs one or on request; a print stylesheet without navigation, forms or buttons.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Browser, Page, expect

from mfg.demo import nk_batch as demo_nk
from mfg.extensions import db
from mfg.models import Subject, User, utcnow
from mfg.services import accounts, audit, batches
from mfg.unit_of_work import unit_of_work
from tests.browser.pages import NAMES, Person, credentials, demo_plant, flash, go, people
from tests.browser.test_nk_batch_flow import DemoStep, fill_step, next_demo_step
from tests.support import PASSWORD

OLIVIA, OSCAR = NAMES["operator1"], NAMES["operator2"]
TRANSPORT = ("NK-INTAKE", "transport_receipt")  # a step with a running time window (12 h after collection)


def _act(username: str, action: Callable) -> object:
    session = db.session
    person = session.scalars(sa.select(User).where(User.username == username)).one()
    audit.set_actor(session, person)
    with unit_of_work(session, actor=person, policy=accounts.Policy()):
        return action(session)


def _user(session, username: str) -> User:
    return session.scalars(sa.select(User).where(User.username == username)).one()


def nk_batch_until(live_app: Flask, make_user: Callable[..., User], stop: tuple[str, str]) -> tuple[int, str]:
    """The demo plant and subject NK-001's batch, performed and verified by the demo operators up to ``stop``
    (not performed); returns (batch id, lot)."""
    setting = demo_plant(live_app, make_user)
    with live_app.app_context():
        subject_id = _act("clinical1", lambda s: demo_nk.seed_demo_subject(s, _user(s, "clinical1"), PASSWORD).id)
        return _act("operator1", lambda s: (lambda b: (b.id, b.lot))(demo_nk.run_nk_batch(
            s, subject=s.get(Subject, subject_id), performer=_user(s, "operator1"), verifier=_user(s, "operator2"),
            password=PASSWORD, tz=setting.tz, until=stop)))


def continue_until(live_app: Flask, batch_id: int, stop: tuple[str, str]) -> None:
    with live_app.app_context():
        from zoneinfo import ZoneInfo

        _act("operator1", lambda s: demo_nk.continue_nk_batch(
            s, batches.get(s, batch_id), performer=_user(s, "operator1"), verifier=_user(s, "operator2"),
            password=PASSWORD, tz=ZoneInfo(live_app.config["SITE_TIMEZONE"]), until=stop))


def next_step_card(page: Page):
    return page.get_by_role("region", name="Next step")


def progress(page: Page):
    return page.get_by_role("region", name="Progress of the batch")


def sign_step(person: Person) -> None:
    credentials(person, person.page.get_by_role("group", name="Sign: Performed by"))
    go(person.page.get_by_role("button", name="Record and sign as Performed by"))
    person.signed = True


def perform_in_browser(person: Person, step: DemoStep) -> None:
    """Open the step from the batch page's next-step card, fill it with the demo entry and sign it."""
    page = person.page
    card = next_step_card(page)
    expect(card.get_by_role("heading")).to_have_text(f"Next step: {step.heading}")
    go(card.get_by_role("link", name="Open step"))
    expect(page.get_by_role("heading", level=1)).to_have_text(step.heading)
    fill_step(page, step)
    sign_step(person)
    expect(flash(page, "recorded and signed")).to_have_text(f"{step.title} recorded and signed.")


def within_first_screen(page: Page, locator) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    box = locator.bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 768, box


# --- item 6: flow ----------------------------------------------------------------------------------------

def test_the_batch_page_puts_the_next_step_first_and_leads_on_after_each_signature(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    batch_id, lot = nk_batch_until(live_app, make_user, TRANSPORT)
    now = utcnow().replace(second=0, microsecond=0)
    with people(browser, live_server, tablet=True) as person:
        olivia = person("operator1", OLIVIA)
        page = olivia.page
        page.goto(f"/batches/{batch_id}")
        # the progress bar: identify_bag done, the transport receipt current, the rest not yet open
        bar = progress(page)
        expect(bar.get_by_role("listitem").filter(has_text="Identify the collection bag: complete")
               ).to_have_count(1)
        current = bar.locator("[aria-current=step]")
        expect(current).to_have_count(1)
        expect(current).to_have_text(re.compile(r"^Transport and receipt.*: current step$"))
        expect(bar.get_by_role("listitem").filter(has_text=": not yet open").first).to_be_attached()
        # the next step at the top, its "Open step" on the first screen of the tablet
        step = next_demo_step(live_app, batch_id, now)
        assert step is not None and (step.code, step.step_id) == TRANSPORT
        expect(next_step_card(page).get_by_role("heading")).to_have_text(f"Next step: {step.heading}")
        within_first_screen(page, next_step_card(page).get_by_role("link", name="Open step"))
        # no growth point yet: the chart is collapsed, with no image
        chart = page.locator("details.chart")
        expect(chart).to_have_count(1)
        expect(chart).not_to_have_attribute("open", re.compile(".*"))
        expect(chart).to_contain_text("no counts recorded yet")
        expect(page.locator("img.growth-chart")).to_have_count(0)

        # a step not open yet: the guard's reasons, no form and no input
        later = bar.get_by_role("listitem").filter(has_text="Label data and donor documents: not yet open")
        expect(later).to_have_count(1)
        page.goto(f"/batches/{batch_id}/step/0/label_data/1")
        refused = page.locator("section.refused")
        expect(refused.get_by_role("heading")).to_have_text("You cannot record this step now")
        expect(refused.get_by_role("listitem")).to_contain_text(["is not open yet: earlier steps"])
        expect(page.locator("main input:not([type=hidden]), main textarea, main select")).to_have_count(0)
        expect(page.get_by_role("button", name=re.compile("Record and sign"))).to_have_count(0)

        # after each signature, the next step the signer may do, at the top; it leads to that step
        go(page.get_by_role("link", name=f"Batch {lot}"))
        for _ in range(2):
            step = next_demo_step(live_app, batch_id, now)
            perform_in_browser(olivia, step)
            expect(bar.get_by_role("listitem").filter(has_text=re.compile(
                rf"^{re.escape(step.title)}.*: (complete|waiting for a verification)"))).to_have_count(1)
            card = next_step_card(page)
            within_first_screen(page, card.get_by_role("link", name="Open step"))
            following = card.get_by_role("heading").inner_text().removeprefix("Next step: ")
            assert following != step.heading
            expect(bar.locator("[aria-current=step]")).to_have_text(re.compile(rf"^{re.escape(following)}"))
        go(card.get_by_role("link", name="Open step"))
        expect(page.get_by_role("heading", level=1)).to_have_text(following)

        # with the first growth point (culture initiation, day 0) the chart is open
        continue_until(live_app, batch_id, ("NK-EXPAND", "feed"))
        page.goto(f"/batches/{batch_id}")
        expect(page.locator("details.chart")).to_have_attribute("open", "")
        expect(page.locator("details.chart img.growth-chart")).to_be_visible()
        within_first_screen(page, next_step_card(page).get_by_role("link", name="Open step"))


def test_countdowns_tick_and_the_page_updates_itself_when_another_person_signs(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    batch_id, _lot = nk_batch_until(live_app, make_user, TRANSPORT)
    live_app.config["BATCH_PAGE_POLL_SECONDS"] = 1
    now = utcnow().replace(second=0, microsecond=0)
    with people(browser, live_server, tablet=True) as person:
        olivia, oscar = person("operator1", OLIVIA), person("operator2", OSCAR)
        page = olivia.page
        page.clock.install()
        page.goto(f"/batches/{batch_id}")
        countdown = page.locator("section.deadlines .countdown")
        expect(countdown).to_have_count(1)
        # the demo's collection ended days ago: the hold time is long overdue, and the overdue time grows
        expect(countdown).to_have_text(re.compile(r"^overdue by \d+ h \d+ min$"))
        before = countdown.inner_text()
        page.clock.run_for("02:01")  # two minutes later, the page still open
        expect(countdown).not_to_have_text(before)
        hours, minutes = map(int, re.match(r"overdue by (\d+) h (\d+) min", before).groups())
        later = hours * 60 + minutes + 2
        expect(countdown).to_have_text(f"overdue by {later // 60} h {later % 60} min")

        # Oscar performs the open step on his own tablet: Olivia's open page shows it by itself, without a click
        # (it reloads: nothing was typed on it)
        transport = progress(page).get_by_role("listitem").filter(
            has_text=re.compile(r"^Transport and receipt.*: (complete|waiting for a verification)"))
        expect(transport).to_have_count(0)
        page.evaluate("window.drawnBefore = true; window.scrollTo(0, 400)")
        oscar.page.goto(f"/batches/{batch_id}")
        perform_in_browser(oscar, next_demo_step(live_app, batch_id, now))
        page.clock.run_for("00:05")
        expect(transport).to_have_count(1)
        assert page.evaluate("window.drawnBefore === undefined")  # drawn anew, where she was looking
        page.wait_for_function("window.scrollY === 400")
        expect(page.get_by_role("alert").filter(has_text="Updated by")).to_have_count(0)

        # Olivia starts describing a deviation on the page; Oscar opens one of his own meanwhile. Her page is not
        # reloaded under her typing: it says who changed the batch, and her text stays until she reloads
        page.get_by_text("Open a deviation", exact=True).click()
        mine = page.get_by_label("What departed from the master record")
        mine.fill("Transport box seal was loose on arrival")
        oscar.page.goto(f"/batches/{batch_id}")
        oscar.page.get_by_text("Open a deviation", exact=True).click()
        oscar.page.get_by_label("What departed from the master record").fill("Courier arrived 20 min late")
        go(oscar.page.get_by_role("button", name="Open deviation"))
        expect(flash(oscar.page, "opened")).to_be_visible()
        announced = page.get_by_role("alert").filter(has_text=f"Updated by {OSCAR}")
        page.clock.run_for("00:05")
        expect(announced).to_be_visible()
        expect(announced).to_contain_text("reload to see it")
        expect(mine).to_have_value("Transport box seal was loose on arrival")
        expect(page.get_by_text("Courier arrived 20 min late")).to_have_count(0)
        go(announced.get_by_role("link", name="Reload"))
        expect(page.get_by_role("alert").filter(has_text="Updated by")).to_have_count(0)
        expect(page.locator("section.deviations")).to_contain_text("Courier arrived 20 min late")

        # the page's own polls are not activity: left alone, the session still ends at the idle timeout, and
        # the open page shows the sign-in page
        live_app.config["IDLE_TIMEOUT_MINUTES"] = 0.1  # 6 s; the page polls every second
        page.clock.resume()  # the page's timers run in real time from here
        expect(page).to_have_url(re.compile(r"/auth/login"), timeout=20_000)


# --- item 7: gloved hands ----------------------------------------------------------------------------------

SMALL_TARGETS = """() => {
  const wanted = 'input[type=radio], input[type=checkbox], label, .topbar a, .topbar button, table a, button, '
    + '.button, a[role=button], summary';
  return [...document.querySelectorAll(wanted)]
    .filter(el => el.checkVisibility())
    .map(el => ({what: el.tagName + ' ' + (el.innerText || el.name || el.id || '').trim().slice(0, 40),
                 box: el.getBoundingClientRect()}))
    .filter(t => t.box.width < 44 || t.box.height < 44)
    .map(t => `${t.what}: ${Math.round(t.box.width)}x${Math.round(t.box.height)}`);
}"""


def small_targets(page: Page) -> list[str]:
    return page.evaluate(SMALL_TARGETS)


def one_row_navbar(page: Page) -> None:
    bar = page.get_by_role("banner")
    box = bar.bounding_box()
    assert box is not None and box["height"] <= 60, box  # one row of 44 px targets
    assert page.evaluate("document.documentElement.scrollWidth") <= 1024
    boxes = [link.bounding_box() for link in bar.get_by_role("link").all() + bar.get_by_role("button").all()]
    assert len({round(b["y"]) for b in boxes}) == 1, boxes  # one row
    boxes.sort(key=lambda b: b["x"])
    for left, right in zip(boxes, boxes[1:], strict=False):  # side by side, none over another, all on the screen
        assert left["x"] + left["width"] <= right["x"] + 0.5, (left, right)
    assert boxes[-1]["x"] + boxes[-1]["width"] <= 1024, boxes[-1]


def test_touch_targets_are_44_px_and_the_navbar_is_one_row_for_every_role(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    batch_id, _lot = nk_batch_until(live_app, make_user, TRANSPORT)
    make_user("admin1", "admin", full_name="Ada Administrator")
    with people(browser, live_server, tablet=True) as person:
        olivia = person("operator1", OLIVIA)
        page = olivia.page
        assert small_targets(page) == []  # the home page
        one_row_navbar(page)
        page.goto(f"/batches/{batch_id}")
        assert small_targets(page) == []
        one_row_navbar(page)
        go(next_step_card(page).get_by_role("link", name="Open step"))  # the receipt: radios and check boxes
        expect(page.locator("input[type=checkbox]").first).to_be_visible()
        expect(page.locator("input[type=radio]").first).to_be_visible()
        assert small_targets(page) == []
        # a number outside the limits the screen states opens the value's comment box as it is typed
        temperature = page.locator("div.field").filter(
            has=page.get_by_label("Transport temperature at receipt", exact=True))
        expect(temperature.get_by_role("textbox", name=re.compile("^Comment on"))).to_have_count(0)
        temperature.get_by_label("Transport temperature at receipt", exact=True).fill("5.0")
        expect(temperature.get_by_role("textbox", name=re.compile("^Comment on"))).to_have_count(0)
        temperature.get_by_label("Transport temperature at receipt", exact=True).fill("9.5")
        expect(temperature.get_by_role("textbox", name="Comment on Transport temperature at receipt")
               ).to_be_visible()
        assert small_targets(page) == []
        page.goto(f"/batches/{batch_id}/step/0/visual_inspection/1")  # not open: reasons only
        assert small_targets(page) == []
        for username, full_name in (("qa1", NAMES["qa1"]), ("admin1", "Ada Administrator")):
            other = person(username, full_name).page
            assert small_targets(other) == [], username
            one_row_navbar(other)
            other.goto(f"/batches/{batch_id}")
            assert small_targets(other) == [], username
            one_row_navbar(other)


def test_a_value_gets_its_comment_box_when_it_needs_one_or_on_request_and_record_pages_print_plainly(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    batch_id, _lot = nk_batch_until(live_app, make_user, ("NK-INTAKE", "visual_inspection"))
    now = utcnow().replace(second=0, microsecond=0)
    with people(browser, live_server, tablet=True) as person:
        olivia = person("operator1", OLIVIA)
        page = olivia.page
        page.goto(f"/batches/{batch_id}")
        step = next_demo_step(live_app, batch_id, now)
        assert (step.code, step.step_id) == ("NK-INTAKE", "visual_inspection")
        go(next_step_card(page).get_by_role("link", name="Open step"))
        # no comment box anywhere until a value needs one
        expect(page.get_by_role("textbox", name=re.compile("^Comment on "))).to_have_count(0)
        expect(page.locator(".value-comment:visible")).to_have_count(0)
        fill_step(page, step)
        expect(page.get_by_role("textbox", name=re.compile("^Comment on "))).to_have_count(0)
        # on request: the small "Add comment" button of one field
        block = page.locator("div.field").filter(has=page.get_by_role("group", name="Bag", exact=True))
        block.get_by_role("button", name="Add comment").click()
        box = block.get_by_role("textbox", name="Comment on Bag", exact=True)
        expect(box).to_be_focused()
        expect(block.get_by_role("button", name="Add comment")).to_have_count(0)
        expect(page.get_by_role("textbox", name=re.compile("^Comment on "))).to_have_count(1)
        box.fill("checked twice under the lamp")
        # an answer outside what the master record accepts: its box opens as it is picked
        clots = page.locator("div.field").filter(has=page.get_by_role("group", name="Clots", exact=True))
        clots.get_by_label("Clots visible", exact=True).check()
        expect(clots.get_by_role("textbox", name="Comment on Clots")).to_be_visible()
        expect(clots.get_by_role("textbox", name="Comment on Clots")).not_to_be_focused()  # the answer keeps focus

        # signed without a comment on it: refused, and the screen comes back with the box open, entries kept
        sign_step(olivia)
        expect(page.get_by_role("alert").filter(has_text="needs a comment")).to_have_count(1)
        expect(clots.get_by_role("textbox", name="Comment on Clots")).to_be_visible()
        expect(clots.get_by_label("Clots visible", exact=True)).to_be_checked()
        expect(block.get_by_role("textbox", name="Comment on Bag", exact=True)).to_have_value(
            "checked twice under the lamp")
        expect(page.get_by_role("textbox", name=re.compile("^Comment on "))).to_have_count(2)

        # print: the batch page without navigation, forms or buttons
        page.goto(f"/batches/{batch_id}")
        page.emulate_media(media="print")
        for hidden in ("header.topbar", "main form", "a.button", "button", "section.next-step", "details:has(form)"):
            for element in page.locator(hidden).all():
                expect(element).to_be_hidden()
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        expect(page.locator("section.stage").first).to_be_visible()
        colour = page.evaluate("getComputedStyle(document.body).color")
        assert colour == "rgb(0, 0, 0)", colour
        page.emulate_media(media="screen")
        expect(page.locator("header.topbar")).to_be_visible()
