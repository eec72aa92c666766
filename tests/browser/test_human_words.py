"""Issue 17, item 8 "Human words": the screens a person reads at the cleanroom tablet (1024x768, touch) say
things in the master record's words, never in the system's.

Batches made by the demo scenarios (``mfg.demo.scenarios``: conditionally released, sterility positive after
the conditional release, cancelled) are walked as the operator, QA and the clinic: the batch page, every step
record, the review, every deviation, the results due, custody, documents and the audit trail. On each:

* no text matches an internal id (``batch.din``, ``identify_bag.collection_end``, snake_case names,
  ``sterility #1:``-style names, JSON braces);
* every moment is a ``<time>`` with an ISO ``datetime`` and a UTC ``title`` (the site's time on the screen,
  UTC on hover); no time a person reads has seconds;
* cell counts print as ``× 10``.

The site runs in America/Chicago so that the site's time and UTC differ.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Browser, Page, expect

from mfg.demo import nk_batch as demo_nk
from mfg.demo import scenarios
from mfg.extensions import db
from mfg.models import Batch, StepExecution, Subject, User
from mfg.services import accounts, audit, steps
from mfg.unit_of_work import unit_of_work
from tests.browser.pages import NAMES, Person, demo_plant, go, people
from tests.support import PASSWORD

SITE_ZONE = "America/Chicago"

# What an internal name looks like on a screen: a dotted reference (``batch.din``, ``identify_bag.collection_end``,
# ``recorded_value.create``), a snake_case id (``tnc_count``), a repeat written ``sterility #1:``, JSON.
INTERNAL = {
    "dotted reference": re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)*\.[a-z][a-z0-9]*(?:_[a-z0-9]+)*\b"),
    "snake_case id": re.compile(r"\b[a-z][a-z0-9]*_[a-z0-9_]+\b"),
    "numbered name": re.compile(r"#\d+\s*:"),
    "JSON": re.compile(r"[{}]|\"\w+\"\s*:"),
}
SECONDS = re.compile(r"\b\d{1,2}:\d{2}:\d{2}\b")
# A moment written as a person reads it: site-local date and time to the minute, with its zone.
MOMENT_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2} [A-Z]{2,5}$")


def _act(live_app: Flask) -> scenarios.Act:
    def act(username, action):  # noqa: ANN001, ANN202
        session = db.session
        person = session.scalars(sa.select(User).where(User.username == username)).one()
        audit.set_actor(session, person)
        with unit_of_work(session, actor=person, policy=accounts.Policy()):
            return action(session)

    return act


def _made(live_app: Flask, make_user: Callable[..., User], scenario: str) -> Batch:
    live_app.config["SITE_TIMEZONE"] = SITE_ZONE
    setting = demo_plant(live_app, make_user)
    with live_app.app_context():
        lot = scenarios.RUN[scenario](_act(live_app), setting).lot
        batch = db.session.scalars(sa.select(Batch).where(Batch.lot == lot)).one()
        db.session.expunge(batch)
        return batch


def internal_names(text: str) -> list[str]:
    return [f"{kind}: {m.group(0)!r} in …{text[max(0, m.start() - 40):m.end() + 40]!r}…"
            for kind, pattern in INTERNAL.items() for m in pattern.finditer(text)]


def check_words(page: Page, where: str) -> list[str]:
    """Every way the page fails the rule, named (empty when it reads as people write)."""
    found = [f"{where}: {problem}" for problem in internal_names(page.locator("body").inner_text())]
    found += [f"{where}: seconds in {m.group(0)!r}" for m in SECONDS.finditer(page.locator("body").inner_text())]
    for moment in page.locator("time").all():
        text, iso, title = moment.inner_text(), moment.get_attribute("datetime"), moment.get_attribute("title")
        if not iso or not re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", iso):
            found.append(f"{where}: <time> {text!r} without an ISO datetime")
        if not title or not re.match(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC$", title):
            found.append(f"{where}: <time> {text!r} without a UTC title ({title!r})")
        if text.strip() and not MOMENT_TEXT.match(text.strip()):
            found.append(f"{where}: <time> text {text!r} is not a site-local moment to the minute")
    return found


def visit(page: Page, url: str, where: str, problems: list[str]) -> None:
    page.goto(url)
    expect(page.locator("footer")).to_be_visible()
    problems += check_words(page, where)


def walk(person: Person, batch: Batch, *, qa: bool) -> list[str]:
    """The pages of ``batch`` a person reads, each checked; returns every problem found."""
    page, problems = person.page, []
    visit(page, f"/batches/{batch.id}", f"{person.username} batch page", problems)
    steps = [a.get_attribute("href") for a in page.get_by_role("link", name="Details").all()]
    deviations = [a.get_attribute("href") for a in page.locator("section.deviations a").all()]
    for href in steps:
        visit(page, str(href), f"{person.username} step {href}", problems)
    for href in deviations:
        visit(page, str(href), f"{person.username} deviation {href}", problems)
    if batch.subject_id is not None:
        visit(page, f"/batches/{batch.id}/custody", f"{person.username} custody", problems)
        visit(page, f"/batches/{batch.id}/documents", f"{person.username} documents", problems)
    visit(page, "/", f"{person.username} home", problems)
    if person.username.startswith("operator"):
        visit(page, "/results", f"{person.username} results", problems)
    if qa:
        visit(page, "/review/", f"{person.username} QA queue", problems)
        visit(page, f"/review/batches/{batch.id}", f"{person.username} review", problems)
        visit(page, "/audit/", f"{person.username} audit trail", problems)
    return problems


@pytest.mark.parametrize("scenario", ["conditional", "sterility-positive", "cancelled"])
def test_the_screens_of_a_batch_speak_the_master_records_words_and_the_sites_time(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User], scenario: str) -> None:
    batch = _made(live_app, make_user, scenario)
    problems: list[str] = []
    with people(browser, live_server, tablet=True) as person:
        for username in ("operator1", "qa1", "clinical1"):
            problems += walk(person(username, NAMES[username]), batch, qa=username == "qa1")
    unique = list(dict.fromkeys(re.sub(r"/\d+", "/N", p) for p in problems))
    assert unique == [], "\n".join(unique)


def test_the_batch_page_prints_cell_counts_as_powers_of_ten_and_a_tap_on_a_time_shows_utc(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    batch = _made(live_app, make_user, "conditional")
    with people(browser, live_server, tablet=True) as person:
        page = person("operator1", NAMES["operator1"]).page
        page.goto(f"/batches/{batch.id}")
        bags = page.locator("section.bags")
        expect(bags.get_by_role("row").nth(1)).to_contain_text(re.compile(r"\d\.\d\d × 10[⁰¹²³⁴⁵⁶⁷⁸⁹]+"))
        expect(bags).not_to_contain_text(re.compile(r"\d{7,}|\d{1,3}(?:[ ,]\d{3}){2,}"))
        expect(page.locator("dl.facts")).to_contain_text("NK cells/kg")
        expect(page.locator("dl.facts")).to_contain_text(" × 10")
        # a moment: the site's time; a tap shows its UTC form beside it (a tablet has no hover)
        started = page.locator("dl.facts time").first
        expect(started).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d C[SD]T$"))
        utc = str(started.get_attribute("title"))
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", utc), utc
        started.tap()
        expect(started).to_have_class(re.compile("show-utc"))
        shown = started.evaluate("t => getComputedStyle(t, '::after').content")
        assert utc in shown, shown
        expect(page.locator("footer")).to_contain_text(f"site's time ({SITE_ZONE})")


def _user(session, username: str) -> User:  # noqa: ANN001
    return session.scalars(sa.select(User).where(User.username == username)).one()


def _corrected(live_app: Flask, make_user: Callable[..., User]) -> Batch:
    """An NK batch through intake's transport receipt, whose transport temperature (4.5 °C) the operator then
    corrects to 5.5 °C: the original is kept, the correction has its reason."""
    live_app.config["SITE_TIMEZONE"] = SITE_ZONE
    setting = demo_plant(live_app, make_user)
    act = _act(live_app)
    with live_app.app_context():
        subject_id = act("clinical1", lambda s: demo_nk.seed_demo_subject(s, _user(s, "clinical1"), PASSWORD).id)
        lot = act("operator1", lambda s: demo_nk.run_nk_batch(
            s, subject=s.get(Subject, subject_id), performer=_user(s, "operator1"), verifier=_user(s, "operator2"),
            password=PASSWORD, tz=setting.tz, until=("NK-INTAKE", "label_data")).lot)

        def correct(session) -> None:  # noqa: ANN001
            batch = session.scalars(sa.select(Batch).where(Batch.lot == lot)).one()
            execution = session.scalars(sa.select(StepExecution).where(
                StepExecution.batch_id == batch.id, StepExecution.step_id == "transport_receipt")).one()
            assert execution.current_values()["transport_temperature"].text == "4.5"
            steps.correct_value(session, execution, field_id="transport_temperature", raw="5.5",
                                reason="thermometer misread", field_comment="", signer=_user(session, "operator1"),
                                password=PASSWORD, username="operator1", require_username=True, tz=setting.tz)

        act("operator1", correct)
        batch = db.session.scalars(sa.select(Batch).where(Batch.lot == lot)).one()
        db.session.expunge(batch)
        return batch


def test_a_change_reads_label_old_to_new_and_the_stored_entry_opens_on_a_tap(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    batch = _corrected(live_app, make_user)
    with people(browser, live_server, tablet=True) as person:
        page = person("qa1", NAMES["qa1"]).page
        # the review lists the correction in the master record's words
        page.goto(f"/review/batches/{batch.id}")
        correction = page.locator("section.review-items").get_by_role("row").filter(has_text="correction")
        expect(correction).to_contain_text("Transport temperature at receipt: 4.5 → 5.5 (reason: thermometer misread)")
        # the audit trail: the correction on one line, in words; the stored entry one tap away
        page.goto("/audit/")
        entry = page.locator("tr.audit-entry").filter(has_text=re.compile(r"4\.5 → 5\.5 °C")).first
        expect(entry.locator("td.what")).to_have_text("Value recorded")
        expect(entry.locator("td.record")).to_contain_text("Transport temperature at receipt")
        expect(entry.locator("td.change")).to_contain_text("Transport temperature at receipt: 4.5 → 5.5 °C")
        expect(entry.locator("td.reason")).to_have_text("correction: thermometer misread")
        stored = entry.locator("details.raw-entry pre")
        expect(stored).to_be_hidden()
        entry.get_by_text("Stored entry").tap()
        expect(stored).to_be_visible()
        expect(stored).to_contain_text('"field_id":"transport_temperature"')
        expect(stored).to_contain_text('"text":"5.5"')
        problems = check_words(page, "audit trail (an entry open)")
        # the stored entry is the record as kept, opened on purpose: the rest of the page still reads in words
        assert [p for p in problems if "field_id" not in p and "{" not in p and '":' not in p
                and "recorded_value" not in p and "transport_temperature" not in p] == []


def test_the_audit_trail_is_one_line_an_entry(live_server: str, live_app: Flask, browser: Browser,
                                              make_user: Callable[..., User]) -> None:
    batch = _made(live_app, make_user, "conditional")
    with people(browser, live_server, tablet=True) as person:
        page = person("qa1", NAMES["qa1"]).page
        page.goto("/audit/")
        rows = page.locator("tr.audit-entry")
        expect(rows).to_have_count(live_app.config["AUDIT_PAGE_SIZE"])
        line = page.evaluate("() => parseFloat(getComputedStyle(document.querySelector('tr.audit-entry td'))"
                             ".lineHeight) || 20")
        heights = [box["height"] for box in (r.bounding_box() for r in rows.all()) if box]
        assert max(heights) < 2 * line + 12, (line, heights)  # one line (and the cell's padding) an entry
        compact = page.evaluate("() => document.documentElement.scrollHeight")
        # every stored entry shown in full, as the screen showed them before (the JSON of each entry)
        page.evaluate("() => document.querySelectorAll('details.raw-entry').forEach(d => d.open = true)")
        expanded = page.evaluate("() => document.documentElement.scrollHeight")
        assert compact * 3 < expanded, (compact, expanded)
        assert compact < 5000, compact
        print(f"audit page, {len(heights)} entries: {compact} px compact, {expanded} px with every stored entry open")
        assert batch.lot


def test_an_open_step_names_what_it_refers_to_in_the_master_records_words(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    """The hold time counts from "Identify the collection bag: End of collection" (not
    ``identify_bag.collection_end``); a scan must match "DIN"; a calculation is written with the labels of
    what it uses; a unit 10^6 cells reads × 10⁶ cells."""
    live_app.config["SITE_TIMEZONE"] = SITE_ZONE
    setting = demo_plant(live_app, make_user)
    act = _act(live_app)
    with live_app.app_context():
        ids = {}
        for code, until in (("NK-001", ("NK-INTAKE", "transport_receipt")), ("NK-002", ("NK-FORMULATE", "dose_plan"))):
            subject_id = act("clinical1", lambda s, code=code: demo_nk.seed_demo_subject(
                s, _user(s, "clinical1"), PASSWORD, code=code).id)
            ids[until[1]] = act("operator1", lambda s, subject_id=subject_id, until=until: demo_nk.run_nk_batch(
                s, subject=s.get(Subject, subject_id), performer=_user(s, "operator1"),
                verifier=_user(s, "operator2"), password=PASSWORD, tz=setting.tz, until=until).id)
    problems: list[str] = []
    with people(browser, live_server, tablet=True) as person:
        page = person("operator1", NAMES["operator1"]).page
        for step, batch_id in ids.items():
            page.goto(f"/batches/{batch_id}")
            go(page.locator(f"a.button[href*='/{step}/']").first)
            expect(page.locator("form.step-form")).to_be_visible()
            problems += check_words(page, f"open step {step}")
            if step == "transport_receipt":
                expect(page.locator("p.hint").first).to_contain_text(
                    "after Identify the collection bag: End of collection")
            else:
                expect(page.locator(".field.calculated").first).to_be_visible()
    assert problems == [], "\n".join(problems)
