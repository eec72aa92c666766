"""The screens offer exactly what the guards allow.

Every POST endpoint has a guard (``mfg.web.actions.GUARDS``). One NK batch is taken through its life
(a step awaiting verification, beside a batch just opened; complete with an open deviation; conditionally
released with its labels; its sterility result entered out of specification, the batch under investigation and
the clinic alerted);
at each point every page reachable by links is walked as every role, and each form a page offers (every
decision it lists, every field its correction dialog names) is held to its guard: the guard must allow it.
Then the refusals: where a guard refuses, the screen offers nothing and a hand-made POST is refused with
the guard's reason. And the defect that started it: after a conditional release, the pending result is
entered from the screens (its own result entry now, not a correction).
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask_login import login_user

from mfg.config import RESOURCE_ROOT
from mfg.demo import nk_batch as demo_nk
from mfg.demo import seed as demo
from mfg.extensions import db
from mfg.models import Batch, RecordedValue, StepExecution, User, utcnow
from mfg.services import audit, batches, clinical, deviations, documents, results, review, sops, starting, steps
from mfg.web import actions
from tests.support import PASSWORD, eligible_enrolment, make_documents, recorded_back

UTC = ZoneInfo("UTC")
FORM = re.compile(r'<form method="post"(?: action="([^"]*)")?[^>]*>(.*?)</form>', re.S)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')
LINK = re.compile(r'href="(/[^"#]*)"')
USERS = (("olivia", "operator", "Olivia Operator"), ("oscar", "operator", "Oscar Verifier"),
         ("quinn", "qa", "Quinn Quality"), ("clara", "clinical", "Clara Coordinator"),
         ("adam", "admin", "Adam Administrator"))


@pytest.fixture
def plant(app, make_user, site_certificate):
    sops_dir = Path(app.config["SOPS_DIR"])
    for folder in ("nk", "trial", "demo"):
        shutil.copytree(RESOURCE_ROOT / "sops" / folder, sops_dir / folder)
    loader, approver = make_user("loader", "qa"), make_user("approver", "qa")
    for name, roles, full in USERS:
        make_user(name, roles, full_name=full)
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        for version in sops.load_directory(s, sops_dir, loader=s.merge(loader)).loaded:
            sops.approve(s, version, site_timezone="UTC", signer=s.merge(approver), password=PASSWORD, username=None,
                         require_username=False)
        demo.seed_master_data(s)
        s.commit()
    return app


def _user(name: str) -> User:
    return db.session.scalar(sa.select(User).where(User.username == name))


def _walk(app, client, username: str) -> dict[str, str]:
    """Every page reachable by links from the work queue (and the pages of every batch), as ``username``."""
    client.post("/auth/login", data={"username": username, "password": PASSWORD})
    with app.app_context():
        ids = list(db.session.scalars(sa.select(Batch.id)))
    queue = ["/", "/batches/", "/review/", "/results", "/clinical/", "/sops/", "/masterdata/", "/admin/users"]
    queue += [f"/batches/{i}/{page}" for i in ids for page in ("custody", "documents")]
    queue += [f"/review/batches/{i}" for i in ids]
    seen, pages = set(queue), {}
    while queue:
        url = queue.pop(0)
        response = client.get(url)
        if response.status_code != 200 or response.mimetype != "text/html":
            continue
        text = response.get_data(as_text=True)
        pages[url] = text
        for link in LINK.findall(text):
            link = html.unescape(link)
            if link not in seen and not link.startswith(("/static/", "/auth/")) and not link.endswith((".pdf", ".svg")):
                seen.add(link)
                queue.append(link)
    client.post("/auth/logout")
    return pages


def _offered(pages: dict[str, str]) -> list[tuple[str, str, str, dict[str, str]]]:
    """(page, action path, form html, hidden fields) of every POST form on the pages."""
    return [(url, html.unescape(action) or url, body, dict(HIDDEN.findall(body)))
            for url, text in pages.items() for action, body in FORM.findall(text)]


def _check_offers(app, username: str, pages: dict[str, str]) -> set[str]:
    """Each offered form's guard allows it to ``username``: the endpoints offered."""
    adapter = app.url_map.bind("localhost")
    offered = set()
    for page, action, body, hidden in _offered(pages):
        endpoint, args = adapter.match(urlsplit(action).path, method="POST")
        if endpoint in actions.UNGUARDED:
            continue
        offered.add(endpoint)
        with app.test_request_context(action, method="POST", data=hidden):
            login_user(_user(username))
            assert actions.refusals(endpoint, **args) == [], (username, page, endpoint, args)
            if endpoint == "review.decide":
                for decision in re.findall(r'name="decide-decision"[^>]*value="([^"]+)"', body):
                    assert actions.refusals(endpoint, **args, decision=decision) == [], (username, page, decision)
            if endpoint == "batches.correct":
                execution = batches.get_execution(db.session, batches.get(db.session, args["batch_id"]),
                                                  args["execution_id"])
                for field_id in re.findall(r'<option value="([^"]+)"', body):
                    assert steps.guard_correct_value(db.session, _user(username), execution, field_id) == [], (
                        username, page, field_id)
    return offered


def test_every_post_endpoint_has_a_guard(app):
    posts = {rule.endpoint for rule in app.url_map.iter_rules() if "POST" in (rule.methods or ())}
    assert posts - actions.UNGUARDED == set(actions.GUARDS)


def _perform_next(s, batch, subject, user, *, until=None):
    """Perform the next open step of ``batch`` with the demo entry, as ``user``, without verifying it."""
    item = batches.open_steps(s, batch)[0]
    code = batches.records(batch)[item.ref.position].code
    entry = demo_nk.entry_for(code, item.step.id, item.instance, batch=batch, subject=subject, bags=[],
                              now=utcnow().replace(second=0, microsecond=0), tz=UTC)
    audit.set_actor(s, user)
    return steps.perform_step(s, batch, position=item.ref.position, step_id=item.step.id, instance=item.instance,
                              entry=entry, signer=user, password=PASSWORD, username=None, require_username=False,
                              tz=UTC)


def test_every_offered_action_is_allowed_by_its_guard_through_a_batchs_life(plant):
    app, client = plant, plant.test_client()
    offered: set[str] = set()
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        subject = demo_nk.seed_demo_subject(s, _user("clara"), PASSWORD)
        # a subject with no batch yet: its dose level may be assigned (NK-001's waits for its open batch)
        clinical.enrol_subject(s, code="NK-002", donor=subject.donor, weight_kg="70", measured_on=utcnow().date(),
                               user=_user("clara"), **eligible_enrolment(s))
        batch = demo_nk.run_nk_batch(s, subject=subject, performer=_user("olivia"), verifier=_user("oscar"),
                                     password=PASSWORD, tz=UTC, until=("NK-EXPAND", "culture_initiation"))
        awaiting = _perform_next(s, batch, subject, _user("olivia"))
        other = demo_nk.seed_demo_subject(s, _user("clara"), PASSWORD, code="NK-003")
        starting.start_product_batch(s, subject=other, user=_user("olivia"))  # opened: it may still be cancelled
        s.commit()
        assert batches.open_steps(s, batch), "a step stays open to perform beside the one awaiting verification"
        batch_id, awaiting_id = batch.id, awaiting.id
        assert awaiting.status == "awaiting_verification"
    # 1. in progress, one step awaiting verification
    for name, _roles, _full in USERS:
        offered |= _check_offers(app, name, _walk(app, client, name))

    # 2. complete: awaiting review, with a deviation opened by hand
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        batch = s.get(Batch, batch_id)
        steps.verify_step(s, s.get(StepExecution, awaiting_id), signer=_user("oscar"), password=PASSWORD,
                          username=None, require_username=False)
        demo_nk.continue_nk_batch(s, batch, performer=_user("olivia"), verifier=_user("oscar"), password=PASSWORD,
                                  tz=UTC)
        deviation = deviations.open_by_hand(s, batch, description="door ajar", user=_user("olivia"))
        s.commit()
        assert batch.status == "awaiting_review"
        deviation_id = deviation.id
    for name, _roles, _full in USERS:
        offered |= _check_offers(app, name, _walk(app, client, name))

    # 3. conditionally released, its labels printed
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        batch, quinn = s.get(Batch, batch_id), _user("quinn")
        deviation = deviations.get(s, deviation_id)
        deviations.investigate(s, deviation, classification="minor", investigation="seen", root_cause="latch",
                               impact="none", capa_reference="", user=quinn)
        deviations.close(s, deviation, signer=quinn, password=PASSWORD, username=None, require_username=False)
        for item in review.exceptions(s, batch):
            review.mark_reviewed(s, batch, item.key, user=quinn)
        site = _site(app)
        documents.print_labels(s, batch, reason="", site=site, demo=True, signer=_user("olivia"), password=PASSWORD,
                               username=None, require_username=False)
        documents.decide_and_request_documents(s, batch, decision="conditionally_released",
                                               comment="sterility pending", signer=quinn, password=PASSWORD,
                                               username=None, require_username=False)
        s.commit()
    make_documents(app, site)  # the documents worker, after the decision committed
    for name, _roles, _full in USERS:
        offered |= _check_offers(app, name, _walk(app, client, name))

    # 4. the sterility culture flags growth: entered (awaiting verification), the batch under investigation, the
    # clinic alerted
    with app.app_context():
        s = db.session
        audit.set_actor(s, _user("olivia"))
        pending = results.of_batch(s, s.get(Batch, batch_id))[0]  # the 14-day culture
        results.enter_result(s, pending, raw="Growth", comment="bottle flagged", signer=_user("olivia"),
                             password=PASSWORD, username=None, require_username=False, tz=UTC)
        s.commit()
        assert s.get(Batch, batch_id).status == "under_investigation"
    for name, _roles, _full in USERS:
        offered |= _check_offers(app, name, _walk(app, client, name))

    # the walk reached the actions of a batch's life, each offered to someone
    assert {"batches.verify", "batches.correct", "batches.step", "review.open_deviation", "review.investigate",
            "review.mark", "review.decide", "documents.print_labels", "custody.handoff", "custody.bedside",
            "clinical.assign_dose", "masterdata.add_equipment", "sops.load", "admin.create_user", "results.enter",
            "results.verify", "results.cancel", "results.acknowledge"} <= offered


def _site(app):
    from mfg.web.documents import site_signer

    with app.test_request_context():
        return site_signer()


@pytest.fixture
def released(plant):
    """The demo NK batch conditionally released (sterility pending): (app, batch id, execution ids by step id)."""
    app = plant
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        ended, today = recorded_back()  # its 14-day result can be read today
        subject = demo_nk.seed_demo_subject(s, _user("clara"), PASSWORD, today=today)
        batch = demo_nk.run_nk_batch(s, subject=subject, performer=_user("olivia"), verifier=_user("oscar"),
                                     password=PASSWORD, tz=UTC, now=ended)
        quinn = _user("quinn")
        for item in review.exceptions(s, batch):
            review.mark_reviewed(s, batch, item.key, user=quinn)
        review.decide(s, batch, decision="conditionally_released", comment="sterility pending", signer=quinn,
                      password=PASSWORD, username=None, require_username=False)
        s.commit()
        ids = {ex.step_id: ex.id for ex in batches.executions(s, batch)}
        return app, batch.id, ids


def _login(client, name):
    client.post("/auth/login", data={"username": name, "password": PASSWORD})


def test_after_a_conditional_release_the_pending_result_is_entered_from_the_screens(released):
    """The defect: the service allowed a correction that the screen never offered. Now the pending result has
    its own entry, offered on the results page; the execution page offers no correction; the pending stays."""
    app, batch_id, ids = released
    client = app.test_client()
    _login(client, "olivia")
    page = client.get(f"/batches/{batch_id}/execution/{ids['sterility']}").get_data(as_text=True)
    assert "Correct a value" not in page
    assert "Sterility" in client.get("/").get_data(as_text=True)  # the home page lists the result due
    with app.app_context():
        pending_id = results.of_batch(db.session, db.session.get(Batch, batch_id))[0].id  # the 14-day culture
    page = client.get("/results").get_data(as_text=True)
    assert f'action="/results/{pending_id}/enter"' in page
    response = client.post(f"/results/{pending_id}/enter", data={
        f"r{pending_id}-result": "No growth", f"r{pending_id}-password": PASSWORD,
        f"r{pending_id}-username": "olivia"})
    assert response.status_code == 302, response.get_data(as_text=True)
    with app.app_context():
        entered = results.get(db.session, pending_id)
        assert (entered.status, entered.result_text) == ("awaiting_verification", "No growth")
        current = db.session.get(StepExecution, ids["sterility"]).current_values()["result"]
        assert current.text == "Pending" and current.supersedes_id is None  # the pending stays in the record
    # the one who entered it is not offered its verification, and a hand-made POST is refused
    assert f'action="/results/{pending_id}/verify"' not in client.get("/results").get_data(as_text=True)
    response = client.post(f"/results/{pending_id}/verify", data={f"v{pending_id}-password": PASSWORD})
    assert response.status_code == 400
    assert "You entered this result: a different operator must verify it." in html.unescape(
        response.get_data(as_text=True))


def test_where_the_guard_refuses_the_screen_offers_nothing_and_a_hand_made_post_is_refused(released):
    app, batch_id, ids = released
    client = app.test_client()
    _login(client, "olivia")
    # a result that is not pending: no correction offered after the conditional release...
    page = client.get(f"/batches/{batch_id}/execution/{ids['potency']}").get_data(as_text=True)
    assert "Correct a value" not in page
    # ...and a hand-made POST is refused with the guard's reason, nothing stored
    with app.app_context():
        before = db.session.scalar(sa.select(sa.func.count()).select_from(RecordedValue))
        field_id = next(iter(db.session.get(StepExecution, ids["potency"]).current_values()))
    response = client.post(f"/batches/{batch_id}/execution/{ids['potency']}/correct", data={
        "field_id": field_id, "new_value": "80", "reason": "typo", "correct-password": PASSWORD,
        "correct-username": "olivia"})
    assert response.status_code == 400
    assert "is conditionally released: its record is closed; a pending result is entered through its own result " \
        "entry" in html.unescape(response.get_data(as_text=True))
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(RecordedValue)) == before
    client.post("/auth/logout")
    # QA may not record a step: no form on a step page, a POST refused by role (403)
    _login(client, "quinn")
    page = client.get(f"/batches/{batch_id}/execution/{ids['sterility']}").get_data(as_text=True)
    assert "Correct a value" not in page and "Sign: Verified by" not in page
    assert client.post(f"/batches/{batch_id}/execution/{ids['sterility']}/correct", data={}).status_code == 403
    # the releaser performed no step, but may not print labels (operator's) nor verify
    page = client.get(f"/batches/{batch_id}/documents").get_data(as_text=True)
    assert "Print labels and sign" not in page and "Reprint labels and sign" not in page
    client.post("/auth/logout")
    # a clinical user sees the bedside check (the product is released on condition), not a deviation form
    _login(client, "clara")
    assert "Bedside identity check" in client.get(f"/batches/{batch_id}/custody").get_data(as_text=True)
    assert "Open a deviation" not in client.get(f"/batches/{batch_id}").get_data(as_text=True)
    client.post("/auth/logout")


def test_the_performer_is_not_offered_the_verification_of_her_own_step(plant):
    app = plant
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        subject = demo_nk.seed_demo_subject(s, _user("clara"), PASSWORD)
        batch = demo_nk.run_nk_batch(s, subject=subject, performer=_user("olivia"), verifier=_user("oscar"),
                                     password=PASSWORD, tz=UTC, until=("NK-EXPAND", "culture_initiation"))
        awaiting = _perform_next(s, batch, subject, _user("olivia"))
        s.commit()
        url = f"/batches/{batch.id}/execution/{awaiting.id}"
    client = app.test_client()
    for name, offered in (("olivia", False), ("oscar", True)):
        _login(client, name)
        page = client.get(url).get_data(as_text=True)
        assert ("Sign: Verified by" in page) is offered, name
        queue = client.get("/batches/").get_data(as_text=True)
        assert (f'href="{url}">Verify</a>' in queue) is offered, name
        client.post("/auth/logout")
    _login(client, "olivia")
    response = client.post(f"{url}/verify", data={"verify-password": PASSWORD, "verify-username": "olivia"})
    assert response.status_code == 400
    assert "You performed this step: a different operator must verify it." in html.unescape(
        response.get_data(as_text=True))
