"""The clinic's screens at the cleanroom tablet (1024x768, touch), issue 17 item 9: ABO/Rh is a list of the
blood groups (a hand-made "banana" is refused and nothing stored); the donor's infectious-disease panel is one
form; no result or determination list starts on a passing answer (an untouched one is refused). Issue [3.7] item 1:
the subject is enrolled through the real form with its eligibility screening, an ineligible value refused naming
the criterion with every value kept."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Browser, expect

from mfg.demo import nk_batch as demo_nk
from mfg.extensions import db
from mfg.models import Donor, DonorTest, Subject, SubjectScreening, User
from mfg.services import clinical
from tests.browser.pages import (
    NAMES,
    credentials,
    demo_plant,
    effective_criteria,
    fill_eligible_screening,
    go,
    people,
    row,
)

# What the form would send, sent without the browser's own check of required fields: the server's answer.
SEND = """async (selector) => {
  const form = document.querySelector(selector);
  const answer = await fetch(form.action, {method: "POST", body: new URLSearchParams(new FormData(form))});
  return await answer.text();
}"""


def _count(live_app: Flask, model: type) -> int:
    with live_app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(model)) or 0


def test_abo_rh_is_a_list_the_panel_is_one_form_and_no_list_starts_on_a_passing_answer(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    demo_plant(live_app, make_user)
    with people(browser, live_server, tablet=True) as person:
        clara = person("clinical1", NAMES["clinical1"])
        page = clara.page
        page.goto("/clinical/")

        # ABO/Rh: the blood groups, nothing chosen at first; typed-in text is refused by the server
        abo = page.get_by_label("ABO/Rh", exact=True)
        expect(abo).to_have_value("")
        expect(abo.locator("option")).to_have_text(["choose…", *clinical.ABO_RH])
        token = page.locator('form[action$="/clinical/donors"] input[name="donor-csrf_token"]').input_value()
        answer = page.request.post("/clinical/donors", form={"donor-csrf_token": token, "donor-code": "D-BANANA",
                                                             "donor-abo_rh": "banana",
                                                             "submission_token": "a-hand-made-donor"})
        assert answer.status == 400 and "Not a valid choice" in answer.text()
        assert _count(live_app, Donor) == 0
        page.get_by_label("Donor code", exact=True).fill(demo_nk.DEMO_DONOR)
        # no group chosen: the tablet refuses to send it, and so does the server
        page.get_by_role("button", name="Register donor").tap()
        assert abo.evaluate("el => el.validity.valueMissing")
        assert "Choose the ABO/Rh group." in page.evaluate(SEND, 'form[action$="/clinical/donors"]')
        assert _count(live_app, Donor) == 0
        page.get_by_label("ABO/Rh", exact=True).select_option("O-")
        # the relationship to the subject (NK-TRIAL v5): the configuration's, nothing chosen at first; none chosen
        # is refused by the server, naming the relationships, and nothing is stored
        with live_app.app_context():
            relationships = clinical.donor_relationships(db.session)
            tests = clinical.donor_panel(db.session)
        relationship = page.get_by_label("Relationship to the subject", exact=True)
        expect(relationship).to_have_value("")
        expect(relationship.locator("option")).to_have_text(["choose…", *(label for _, label in relationships)])
        go(page.get_by_role("button", name="Register donor"))
        refusal = "Choose the donor's relationship to the subject: one of transplant_donor (Original transplant donor)"
        expect(page.locator(".form-error").filter(has_text=refusal)).to_be_visible()
        assert _count(live_app, Donor) == 0
        page.get_by_label("Relationship to the subject", exact=True).select_option(label="Original transplant donor")
        go(page.get_by_role("button", name="Register donor"))
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Donor {demo_nk.DEMO_DONOR} pending")
        expect(page.locator("dl.facts")).to_contain_text("Original transplant donor")

        # the panel (the configuration's): one form; each result list starts empty, and one left untouched refuses
        # the whole form
        panel = page.locator("section.donor-panel")
        for test in tests:
            expect(panel.get_by_label(test, exact=True)).to_have_value("")
        drawn = (date.today() - timedelta(days=3)).isoformat()
        panel.get_by_label("Specimen drawn on", exact=True).fill(drawn)
        for test in tests[1:]:
            panel.get_by_label(test, exact=True).select_option("non-reactive")
        first = tests[0]
        panel.get_by_role("button", name="Record the panel").tap()  # the untouched list: not sent
        assert panel.get_by_label(first, exact=True).evaluate("el => el.validity.valueMissing")
        refused = page.evaluate(SEND, "section.donor-panel form")  # and the server refuses what it would send
        assert f"Choose the result of {first}." in refused
        assert _count(live_app, DonorTest) == 0
        panel.get_by_label(first, exact=True).select_option("negative")
        go(panel.get_by_role("button", name="Record the panel"))
        expect(page.get_by_role("status").filter(has_text="Panel of 9 tests recorded")).to_be_visible()
        for test in tests:
            expect(row(page, test).get_by_role("cell")).to_have_count(3)
        assert _count(live_app, DonorTest) == len(tests)

        # the single-test form and the determination start empty too; untouched, they are refused
        expect(page.get_by_label("Result", exact=True)).to_have_value("")
        determination = page.get_by_label("Determination", exact=True)
        expect(determination).to_have_value("")
        page.get_by_label("Summary of records", exact=True).fill("panel negative")
        page.get_by_role("button", name="Record determination").tap()
        assert determination.evaluate("el => el.validity.valueMissing")
        assert "Choose the determination." in page.evaluate(SEND, 'form[action$="/eligibility"]')
        with live_app.app_context():
            assert db.session.scalars(sa.select(Donor.eligibility)).one() == "pending"
        page.get_by_label("Determination", exact=True).select_option("eligible")
        page.get_by_label("Summary of records", exact=True).fill("panel negative")
        go(page.get_by_role("button", name="Record determination"))
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Donor {demo_nk.DEMO_DONOR} eligible")

        # the subject: enrolled through the real form, with the eligibility screening of NK-TRIAL v5, signed
        criteria = effective_criteria(live_app)
        assert criteria is not None
        page.get_by_role("link", name="Subjects and donors").click()
        form = page.locator("section.enrolment")
        for exclusion in criteria.exclusions:  # no answer chosen at first: never taken as "no"
            group = form.get_by_role("group", name=exclusion.question)
            expect(group.get_by_label("yes", exact=True)).not_to_be_checked()
            expect(group.get_by_label("no", exact=True)).not_to_be_checked()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # fits 1024 px
        form.get_by_label("Subject code", exact=True).fill(demo_nk.DEMO_SUBJECT)
        form.get_by_label("Donor", exact=True).select_option(label=f"{demo_nk.DEMO_DONOR} (eligible)")
        form.get_by_label("Weight (kg)", exact=True).fill(demo_nk.DEMO_WEIGHT_KG)
        form.get_by_label("Weighed on", exact=True).fill(date.today().isoformat())
        fill_eligible_screening(clara, criteria, date.today())
        form.get_by_label("Platelets (10^9/L)", exact=True).fill("49")  # below the limit: refused, named
        go(form.get_by_role("button", name="Sign as Approved by: enrol subject"))
        refusal = page.get_by_role("alert").filter(has_text="Platelets 49 10^9/L is below 50 10^9/L: not eligible")
        expect(refusal).to_be_visible()
        assert _count(live_app, Subject) == 0
        form = page.locator("section.enrolment")
        expect(form.get_by_label("Platelets (10^9/L)", exact=True)).to_have_value("49")  # every value kept
        expect(form.get_by_label("Subject code", exact=True)).to_have_value(demo_nk.DEMO_SUBJECT)
        expect(form.get_by_role("group", name=criteria.exclusions[0].question).get_by_label(
            "no", exact=True)).to_be_checked()
        expect(form.get_by_label("Password", exact=True)).to_have_value("")  # only the password cleared
        form.get_by_label("Platelets (10^9/L)", exact=True).fill("180")
        credentials(clara, form)
        go(form.get_by_role("button", name="Sign as Approved by: enrol subject"))
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Subject {demo_nk.DEMO_SUBJECT}")
        clara.signed = True
        screening = page.locator("section.screening")
        expect(screening.get_by_role("row").filter(has_text="Platelets")).to_contain_text("180 10^9/L")
        expect(screening).to_contain_text(f"Approved by {NAMES['clinical1']} (clinical1)")
        expect(screening).to_contain_text("ALT ≤ 3 × ULN")
        assert _count(live_app, SubjectScreening) == 1
