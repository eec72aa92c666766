"""Never lose an entry to the idle timeout (issue 17, item 5, the session half), at the cleanroom tablet.

The live application ends idle sessions after 24 s and warns 8 s before (``IDLE_TIMEOUT_MINUTES``,
``IDLE_WARNING_SECONDS``; 15 min and 60 s on a site). Olivia works on the first step of an NK batch
(NK-INTAKE "Identify the collection bag"):

* the warning shows with a ticking countdown; "Stay signed in" keeps the session past the first timeout;
* when she lets the session end while values are typed, the sign-in page says they are kept; after she signs
  in again they are back in the form, the password (and the signature's user name) empty, and nothing was
  recorded; signing records the step and the kept values are gone from the browser;
* the kept values never reach another person who signs in on the same tablet.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Browser, Page, expect

from mfg.demo import nk_batch as demo_nk
from mfg.extensions import db
from mfg.models import AuditEntry, RecordedValue, StepExecution, User, utcnow
from mfg.services import audit, batches, starting
from tests.browser.pages import TABLET, demo_plant, flash, go
from tests.support import PASSWORD

IDLE_SECONDS = 24
WARNING_SECONDS = 8
DRAFTS = "() => Object.keys(sessionStorage).filter(k => k.startsWith('mfg.draft:')).length"


@pytest.fixture
def live_app(app_factory: Callable[..., Flask]) -> Flask:
    return app_factory(WTF_CSRF_ENABLED=True, IDLE_TIMEOUT_MINUTES=IDLE_SECONDS / 60,
                       IDLE_WARNING_SECONDS=WARNING_SECONDS)


def _batch_at_intake(live_app: Flask, make_user: Callable[..., User]) -> tuple[int, demo_nk.PlannedStep]:
    """The demo plant, subject NK-001 with its signed dose, and its batch record opened by operator1; returns
    the batch id and the first step with the demo entry for it."""
    setting = demo_plant(live_app, make_user)
    with live_app.app_context():
        session = db.session
        users = {u.username: u for u in session.scalars(sa.select(User))}
        audit.set_actor(session, users["clinical1"])
        subject = demo_nk.seed_demo_subject(session, users["clinical1"], setting.password)
        audit.set_actor(session, users["operator1"])
        batch = starting.start_product_batch(session, subject=subject, user=users["operator1"])
        session.commit()
        planned = demo_nk.next_step(session, batch, now=utcnow(), tz=ZoneInfo(live_app.config["SITE_TIMEZONE"]))
        assert planned is not None and planned.step.id == "identify_bag"
        return batch.id, planned


def _sign_in(page: Page, username: str) -> None:
    page.get_by_label("User name", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    go(page.get_by_role("button", name="Sign in"))


def _tablet(browser: Browser, base: str) -> Page:
    return browser.new_context(base_url=base, **TABLET).new_page()


def _step_url(batch_id: int, planned: demo_nk.PlannedStep) -> str:
    return f"/batches/{batch_id}/step/{planned.position}/{planned.step.id}/{planned.instance}"


def _fill(page: Page, planned: demo_nk.PlannedStep) -> dict[str, str]:
    """Type the demo entry into the step form by the fields' labels; returns what a text input shows, by label."""
    typed = {}
    for f in planned.step.fields:
        raw = planned.entry.raw.get(f.id)
        if raw is None or f.type == "calculated":
            continue
        if f.type == "choice":
            page.get_by_role("group", name=f.label, exact=True).get_by_label(raw, exact=True).check()
        elif f.type == "confirmation":
            page.get_by_label(f.statement, exact=True).check()
        else:
            page.get_by_label(f.label, exact=True).fill(raw)
            typed[f.label] = raw
    return typed


def _timeouts(live_app: Flask, username: str) -> int:
    with live_app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "session.timeout", AuditEntry.username == username))


def test_the_warning_before_the_idle_timeout_and_stay_signed_in_keeps_the_session(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    batch_id, planned = _batch_at_intake(live_app, make_user)
    page = _tablet(browser, live_server)
    page.goto(_step_url(batch_id, planned))
    _sign_in(page, "operator1")
    expect(page.get_by_role("heading", level=1)).to_have_text(planned.heading)
    warning = page.get_by_role("alertdialog")
    expect(warning).to_be_hidden()  # not before the last 8 s
    expect(warning).to_be_visible(timeout=(IDLE_SECONDS - WARNING_SECONDS + 5) * 1000)
    expect(warning).to_contain_text(re.compile(r"Your session ends in \d+ s for inactivity"))
    first = int(warning.locator(".idle-countdown").inner_text())
    expect(warning.locator(".idle-countdown")).not_to_have_text(str(first))  # it ticks
    stay = warning.get_by_role("button", name="Stay signed in")
    box = stay.bounding_box()
    assert box is not None and box["height"] >= 44 and box["width"] >= 44  # a gloved finger's target
    assert box["y"] >= 0 and box["y"] + box["height"] <= 768  # in the viewport
    stay.tap()
    expect(warning).to_be_hidden()
    page.wait_for_timeout((WARNING_SECONDS + 3) * 1000)  # past the first timeout, before the next warning
    assert page.url.endswith(_step_url(batch_id, planned))  # no sign-in page
    go(page.get_by_role("banner").get_by_role("link", name="Work queue", exact=True))
    expect(page.get_by_role("heading", name="My next steps")).to_be_visible()
    assert _timeouts(live_app, "operator1") == 0


def test_values_typed_when_the_session_ends_come_back_after_signing_in_again_never_recorded_unsigned(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    batch_id, planned = _batch_at_intake(live_app, make_user)
    step_url = _step_url(batch_id, planned)
    page = _tablet(browser, live_server)
    page.goto(step_url)
    _sign_in(page, "operator1")
    typed = _fill(page, planned)
    page.get_by_label("Comment (optional)", exact=True).fill("bag arrived with the courier's seal intact")
    signing = page.get_by_role("group", name="Sign: Performed by")
    signing.get_by_label("User name", exact=True).fill("operator1")
    signing.get_by_label("Password", exact=True).fill(PASSWORD)
    assert page.evaluate(DRAFTS) == 1

    # she leaves the tablet: the warning, then the session ends and the sign-in page says the values are kept
    expect(page.get_by_role("alertdialog")).to_be_visible(timeout=(IDLE_SECONDS - WARNING_SECONDS + 5) * 1000)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=(WARNING_SECONDS + 10) * 1000)
    expect(flash(page, "Your session ended after a period of inactivity.")).to_be_visible()
    expect(flash(page, "What you typed before your session ended is kept in this browser")).to_be_visible()
    assert _timeouts(live_app, "operator1") == 1

    # she signs in again: back on the step, every value in place, the password and user name empty
    _sign_in(page, "operator1")
    expect(page.get_by_role("heading", level=1)).to_have_text(planned.heading)
    assert page.url.endswith(step_url)
    expect(flash(page, "you typed before your session ended. Nothing was recorded")).to_be_visible()
    for label, raw in typed.items():
        expect(page.get_by_label(label, exact=True)).to_have_value(raw)
    for f in planned.step.fields:
        if f.type == "choice" and f.id in planned.entry.raw:
            expect(page.get_by_role("group", name=f.label, exact=True).get_by_label(
                planned.entry.raw[f.id], exact=True)).to_be_checked()
    expect(page.get_by_label("Comment (optional)", exact=True)).to_have_value(
        "bag arrived with the courier's seal intact")
    signing = page.get_by_role("group", name="Sign: Performed by")
    expect(signing.get_by_label("Password", exact=True)).to_have_value("")
    expect(signing.get_by_label("User name", exact=True)).to_have_value("")
    with live_app.app_context():  # nothing was recorded, nothing signed
        assert db.session.scalar(sa.select(sa.func.count()).select_from(StepExecution)) == 0
        assert db.session.scalar(sa.select(sa.func.count()).select_from(RecordedValue)) == 0

    # a new signature records the step; the kept values are gone from the browser
    signing.get_by_label("User name", exact=True).fill("operator1")
    signing.get_by_label("Password", exact=True).fill(PASSWORD)
    go(page.get_by_role("button", name="Record and sign as Performed by"))
    expect(flash(page, "recorded and signed")).to_be_visible()
    assert page.evaluate(DRAFTS) == 0
    with live_app.app_context():
        session = db.session
        assert [e.step_id for e in batches.executions(session, batches.get(session, batch_id))] == ["identify_bag"]


def test_kept_values_never_reach_another_person_signing_in_on_the_same_tablet(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    batch_id, planned = _batch_at_intake(live_app, make_user)
    page = _tablet(browser, live_server)
    page.goto(_step_url(batch_id, planned))
    _sign_in(page, "operator1")
    typed = _fill(page, planned)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=(IDLE_SECONDS + 10) * 1000)
    _sign_in(page, "operator2")  # Oscar takes the tablet
    expect(page.get_by_role("heading", level=1)).to_have_text(planned.heading)
    expect(page.get_by_text("you typed before your session ended")).to_have_count(0)
    for label in typed:
        expect(page.get_by_label(label, exact=True)).to_have_value("")
    assert page.evaluate(DRAFTS) == 0
