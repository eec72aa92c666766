"""Do once (issue 17, item 4), at the cleanroom tablet (1024x768, touch).

Every form that posts carries a one-time submission token (``mfg/static/once.js``), claimed in the same
transaction as what the submission does (``mfg/web/security.transaction``). Here, in the browser:

* opening a subject's batch record: a tap whose request is then sent again (the reload or resubmission of the
  same form) and two submissions of the same form at once (a double tap) open one batch and one DIN; the repeat
  is answered with the first one's redirect, to the batch it opened;
* performing a signed step: the same, one execution and one signature;
* a hard stop (a wrong bag scanned) sent again is recorded once: one deviation;
* the work queue does not offer the master records made for a subject, and a hand-made start of one is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import Any

import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Browser, Page, Request, expect

from mfg.demo import nk_batch as demo_nk
from mfg.domain import isbt128
from mfg.extensions import db
from mfg.models import Batch, Counter, Deviation, Signature, StepExecution, Subject, User
from mfg.services import accounts, audit, starting
from mfg.unit_of_work import unit_of_work
from tests.browser.pages import NAMES, credentials, demo_plant, flash, people
from tests.browser.test_nk_batch_flow import fill_step, next_demo_step
from tests.support import PASSWORD

OPEN_RECORD = "Open the batch record for this subject's collection"

# The same form submitted twice at once, as two quick taps send it: both carry the form's one token.
DOUBLE_SUBMIT = """async (selector) => {
  const form = document.querySelector(selector);
  const send = () => fetch(form.action, {method: "POST", body: new URLSearchParams(new FormData(form))});
  const answers = await Promise.all([send(), send()]);
  return answers.map((a) => [a.status, new URL(a.url).pathname]);
}"""


def _act(live_app: Flask, username: str, action: Callable[[Any], Any]) -> Any:
    with live_app.app_context():
        session = db.session
        person = session.scalars(sa.select(User).where(User.username == username)).one()
        audit.set_actor(session, person)
        with unit_of_work(session, actor=person, policy=accounts.Policy()):
            return action(session)


def _subject(live_app: Flask, code: str) -> int:
    def enrol(session: Any) -> int:
        clara = session.scalars(sa.select(User).where(User.username == "clinical1")).one()
        return demo_nk.seed_demo_subject(session, clara, PASSWORD, code=code).id

    return _act(live_app, "clinical1", enrol)


def _count(live_app: Flask, query: sa.Select) -> int:
    with live_app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0


def _dins_allocated(live_app: Flask) -> int:
    with live_app.app_context():
        return sum(db.session.scalars(sa.select(Counter.value).where(Counter.name.like("din:%"))))


def _replay(page: Page, request: Request) -> tuple[int, str]:
    """Send ``request`` again exactly as the browser sent it (a reload that posts again, a resubmission)."""
    answer = page.request.fetch(request, max_redirects=0)
    return answer.status, answer.headers.get("location", "")


def test_a_resubmitted_or_double_tapped_start_opens_one_batch_record_and_one_din(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    demo_plant(live_app, make_user)
    first, second = _subject(live_app, "NK-001"), _subject(live_app, "NK-002")
    of_subject = {s: sa.select(Batch.id).where(Batch.subject_id == s) for s in (first, second)}
    with people(browser, live_server, tablet=True) as person:
        olivia = person("operator1", NAMES["operator1"])
        page = olivia.page

        # a tap, then the same submission again
        page.goto(f"/clinical/subjects/{first}")
        with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/batches/start-product")) as sent:
            with page.expect_navigation(wait_until="domcontentloaded"):
                page.get_by_role("button", name=OPEN_RECORD).tap()
        expect(flash(page, "opened: the collection bag must carry this DIN.")).to_be_visible()
        batch_url = re.search(r"/batches/\d+$", page.url).group(0)
        assert _count(live_app, of_subject[first]) == 1 and _dins_allocated(live_app) == 1
        status, location = _replay(page, sent.value)
        assert (status, location) == (303, batch_url)  # the first one's answer: its batch
        assert _count(live_app, of_subject[first]) == 1 and _dins_allocated(live_app) == 1
        page.goto(location)
        expect(flash(page, "already submitted and recorded once")).to_be_visible()

        # a double tap: the same form twice at once
        page.goto(f"/clinical/subjects/{second}")
        answers = page.evaluate(DOUBLE_SUBMIT, 'form[action$="/batches/start-product"]')
        assert _count(live_app, of_subject[second]) == 1 and _dins_allocated(live_app) == 2
        with live_app.app_context():
            opened = db.session.scalars(of_subject[second]).one()
        assert answers == [[200, f"/batches/{opened}"]] * 2  # both taps land on the one batch

        # the subject's page now links to its batch and offers no second one
        page.goto(f"/clinical/subjects/{second}")
        expect(page.get_by_role("button", name=OPEN_RECORD)).to_have_count(0)
        with live_app.app_context():
            lot = db.session.get(Batch, opened).lot
        expect(page.get_by_role("link", name=lot)).to_have_attribute("href", f"/batches/{opened}")


def test_a_resubmitted_or_double_tapped_step_is_recorded_and_signed_once(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    demo_plant(live_app, make_user)
    subject_id = _subject(live_app, "NK-001")
    batch_id = _act(live_app, "operator1", lambda s: starting.start_product_batch(
        s, subject=s.get(Subject, subject_id), user=s.scalars(sa.select(User).where(User.username == "operator1"))
        .one()).id)

    def executions(step_id: str) -> sa.Select:
        return sa.select(StepExecution.id).where(StepExecution.batch_id == batch_id, StepExecution.step_id == step_id)

    def signatures(step_id: str) -> sa.Select:
        return sa.select(Signature.id).where(Signature.record_type == "step_execution", Signature.record_id.in_(
            sa.select(sa.cast(StepExecution.id, sa.String)).where(StepExecution.batch_id == batch_id,
                                                                   StepExecution.step_id == step_id)))

    now = datetime.now(timezone.utc)
    with people(browser, live_server, tablet=True) as person:
        olivia = person("operator1", NAMES["operator1"])
        page = olivia.page

        # a tap on "Record and sign", then the same submission again
        step = next_demo_step(live_app, batch_id, now)
        assert step is not None and step.step_id == "identify_bag"
        page.goto(f"/batches/{batch_id}/step/0/{step.step_id}/1")
        fill_step(page, step)
        credentials(olivia, page.get_by_role("group", name="Sign: Performed by"))
        with page.expect_request(lambda r: r.method == "POST" and "/step/" in r.url) as sent:
            with page.expect_navigation(wait_until="domcontentloaded"):
                page.get_by_role("button", name="Record and sign as Performed by").tap()
        expect(flash(page, f"{step.title} recorded and signed.")).to_be_visible()
        olivia.signed = True
        assert _count(live_app, executions(step.step_id)) == 1 and _count(live_app, signatures(step.step_id)) == 1
        status, location = _replay(page, sent.value)
        assert (status, location) == (303, f"/batches/{batch_id}")
        assert _count(live_app, executions(step.step_id)) == 1 and _count(live_app, signatures(step.step_id)) == 1

        # a double tap on the next step's "Record and sign"
        step = next_demo_step(live_app, batch_id, now)
        assert step is not None and step.step_id == "transport_receipt"
        page.goto(f"/batches/{batch_id}/step/0/{step.step_id}/1")
        fill_step(page, step)
        credentials(olivia, page.get_by_role("group", name="Sign: Performed by"))
        answers = page.evaluate(DOUBLE_SUBMIT, "form.step-form")
        assert answers == [[200, f"/batches/{batch_id}"]] * 2
        assert _count(live_app, executions(step.step_id)) == 1 and _count(live_app, signatures(step.step_id)) == 1


def test_the_work_queue_does_not_start_a_record_made_for_a_subject(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    demo_plant(live_app, make_user)
    with people(browser, live_server, tablet=True) as person:
        page = person("operator1", NAMES["operator1"]).page
        page.goto("/batches/")
        # the NK records are effective, but each is made for a subject: nothing to start stand-alone here
        expect(page.get_by_role("button", name="Start batch")).to_have_count(0)
        expect(page.get_by_role("option", name="NK-INTAKE")).to_have_count(0)
        # a hand-made start is refused by the service, with the guard's reason, and stores nothing
        token = page.locator('form[action$="/auth/logout"] input[name="csrf_token"]').input_value()
        scripted = page.request.post("/batches/start", form={"csrf_token": token, "code": "NK-INTAKE"})
        assert scripted.status == 400 and "without its one-time submission token" in scripted.text()
        answer = page.request.post("/batches/start", form={"csrf_token": token, "code": "NK-INTAKE",
                                                           "submission_token": "a-hand-made-start"})
        assert answer.ok and answer.url.endswith("/batches/")  # back to the work queue, with the reason
        assert "NK-INTAKE is made for a subject: open the batch record from the subject&#39;s page" in answer.text()
        assert _count(live_app, sa.select(Batch.id)) == 0


def test_a_resubmitted_identity_stop_is_recorded_once(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    demo_plant(live_app, make_user)
    subject_id = _subject(live_app, "NK-001")
    batch_id = _act(live_app, "operator1", lambda s: starting.start_product_batch(
        s, subject=s.get(Subject, subject_id), user=s.scalars(sa.select(User).where(User.username == "operator1"))
        .one()).id)
    stops = sa.select(Deviation.id).where(Deviation.batch_id == batch_id, Deviation.origin == "identity")
    with people(browser, live_server, tablet=True) as person:
        olivia = person("operator1", NAMES["operator1"])
        page = olivia.page
        step = next_demo_step(live_app, batch_id, datetime.now(timezone.utc))
        assert step is not None
        page.goto(f"/batches/{batch_id}/step/0/{step.step_id}/1")
        wrong_bag = isbt128.make_din("X9999", date.today().year % 100, 999999).barcode("00")
        fill_step(page, step, bag_din=wrong_bag)  # another collection's bag
        credentials(olivia, page.get_by_role("group", name="Sign: Performed by"))
        with page.expect_request(lambda r: r.method == "POST" and "/step/" in r.url) as sent:
            with page.expect_navigation(wait_until="domcontentloaded"):
                page.get_by_role("button", name="Record and sign as Performed by").tap()
        expect(page.get_by_role("alertdialog").filter(has_text="IDENTITY MISMATCH").first).to_be_visible()
        assert _count(live_app, stops) == 1
        status, location = _replay(page, sent.value)  # the reload that posts the wrong scan again
        assert (status, location) == (303, f"/batches/{batch_id}/step/0/{step.step_id}/1")
        assert _count(live_app, stops) == 1  # one stop, one deviation
        assert _count(live_app, sa.select(StepExecution.id).where(StepExecution.batch_id == batch_id)) == 0
