"""Issue 17 item 2 "See what you sign" and the form half of item 5 "Never lose an entry", at the cleanroom
tablet (1024x768 with touch).

The batch is made through the services as the demo people (``demo_nk.run_nk_batch``) up to NK-FORMULATE's
dose calculation. On the tablet, Olivia (operator) sees on the dose step, before typing anything, the
subject's pinned weight with its date, the dose level and the target cells; the NK and CD3+ fractions are the
harvest's (NK-EXPAND), shown with no input; as she types the concentration the server calculates the volume,
the inputs it came from and the bag plan, and the signing fieldset lists the values she signs. A wrong
password keeps every value and clears only the password; a malformed value's error is beside its field,
which is focused. The value recorded at signing is the one shown. On the subject page, a wrong password keeps
the dose level chosen.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Browser, Locator, Page, expect

from mfg.config import RESOURCE_ROOT
from mfg.demo import nk_batch as demo_nk
from mfg.demo import scenarios
from mfg.extensions import db
from mfg.models import Donor, RecordedValue, StepExecution, Subject, User
from mfg.services import accounts, audit, batches, clinical, starting, steps
from mfg.unit_of_work import unit_of_work
from tests.browser.pages import NAMES, TABLET, credentials, demo_plant, flash, go, people
from tests.support import PASSWORD, eligible_enrolment

CONCENTRATION = "Viable cells per mL of the formulated product"


def _act(live_app: Flask, username: str, action):  # noqa: ANN001, ANN202
    with live_app.app_context():
        session = db.session
        person = session.scalars(sa.select(User).where(User.username == username)).one()
        audit.set_actor(session, person)
        with unit_of_work(session, actor=person, policy=accounts.Policy()):
            return action(session)


def _user(session, username: str) -> User:  # noqa: ANN001
    return session.scalars(sa.select(User).where(User.username == username)).one()


def _batch_at_dose_plan(live_app: Flask, setting: scenarios.Setting) -> tuple[int, int]:
    """NK-001's batch with every step before NK-FORMULATE's dose calculation done; (batch id, its position)."""
    subject_id = _act(live_app, "clinical1", lambda s: demo_nk.seed_demo_subject(
        s, _user(s, "clinical1"), setting.password).id)

    def manufacture(session) -> tuple[int, int]:  # noqa: ANN001
        batch = demo_nk.run_nk_batch(session, subject=session.get(Subject, subject_id),
                                     performer=_user(session, "operator1"), verifier=_user(session, "operator2"),
                                     password=setting.password, tz=setting.tz, until=("NK-FORMULATE", "dose_plan"))
        codes = [record.code for record in batches.records(batch)]
        return batch.id, codes.index("NK-FORMULATE")

    return _act(live_app, "operator1", manufacture)


def _recorded(live_app: Flask, batch_id: int, step_id: str, field_id: str) -> str:
    with live_app.app_context():
        return db.session.scalars(
            sa.select(RecordedValue.text).join(StepExecution)
            .where(StepExecution.batch_id == batch_id, StepExecution.step_id == step_id,
                   RecordedValue.field_id == field_id)).one()


def _signed(page: Page, field_id: str) -> Locator:
    """The value the signing fieldset lists for ``field_id``."""
    return page.get_by_role("table", name="The values you sign").locator(f"tr[data-field='{field_id}'] td")


def _near(above: Locator, below: Locator, within_px: float = 120) -> None:
    a, b = above.bounding_box(), below.bounding_box()
    assert a is not None and b is not None
    assert 0 <= b["y"] - a["y"] <= within_px, (a, b)


def test_the_dose_step_shows_the_dose_the_calculations_and_what_is_signed(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    setting = demo_plant(live_app, make_user)
    batch_id, position = _batch_at_dose_plan(live_app, setting)
    weighed = _act(live_app, "operator1", lambda s: s.get(Subject, s.scalars(sa.select(Subject.id)).first())
                   .weight_measured_on)
    counter = demo_nk.equipment_identifier("cell counter", 1)
    with people(browser, live_server, tablet=True) as person:
        olivia = person("operator1", NAMES["operator1"])
        page = olivia.page
        assert page.viewport_size == TABLET["viewport"]
        page.goto(f"/batches/{batch_id}/step/{position}/dose_plan/1")
        expect(page.get_by_role("heading", level=1)).to_have_text("Dose calculation")

        # --- before anything is typed: the pinned weight with its date, the dose level, the target cells ---
        dose = page.get_by_role("region", name="The subject's dose")
        expect(dose).to_contain_text(f"62.40 kg (measured {weighed:%Y-%m-%d})")
        expect(dose).to_contain_text("DL2")
        expect(dose).to_contain_text("3.00 × 10⁶ NK cells/kg")
        expect(page.locator("#calc-weight_kg")).to_have_text("62.40 kg")
        expect(page.locator("#calc-target_nk_cells")).to_have_text("187.2 10^6 cells")
        expect(page.locator("#calc-inputs-target_nk_cells")).to_contain_text("62.40 kg")
        # --- the harvest's NK and CD3+ fractions, from NK-EXPAND: shown, never typed again ---
        expect(page.locator("#calc-nk_pct")).to_have_text("93.0 %")
        expect(page.locator("#calc-cd3_pct")).to_have_text("0.25 %")
        expect(page.locator("#calc-inputs-nk_pct")).to_contain_text("(NK-EXPAND, Harvest): 93.0 %")
        expect(page.get_by_role("textbox", name=re.compile("NK fraction|CD3"))).to_have_count(0)
        # --- the volume waits for the concentration; the signing list says so ---
        expect(page.locator("#calc-volume_ml")).to_have_text("—")
        expect(page.locator("#calc-problem-volume_ml")).to_contain_text("needs Viable cells per mL")
        expect(_signed(page, "volume_ml")).to_have_text("not calculated yet")
        expect(page.locator("#bag-plan")).to_contain_text("shown when the volume to infuse is calculated")

        # --- typing: the server calculates the volume, its inputs, the bags and the list of signed values ---
        page.get_by_label("Cell counter", exact=True).fill(counter)
        page.get_by_label(CONCENTRATION, exact=True).fill("15.00")
        expect(page.locator("#calc-volume_ml")).to_have_text("13.4 mL")
        inputs = page.locator("#calc-inputs-volume_ml")
        expect(inputs).to_contain_text("Viable cells per mL of the formulated product: 15.00 10^6 cells/mL")
        expect(inputs).to_contain_text("NK fraction (CD3-CD56+) of the harvest: 93.0 %")
        expect(page.locator("#calc-cd3_per_kg")).not_to_have_text("—")
        bags = page.locator("table.bag-plan tbody tr")
        expect(bags).to_have_count(1)
        expect(bags.first).to_contain_text("13.4 mL")
        expect(_signed(page, "viable_concentration")).to_have_text("15.00 10^6 cells/mL")
        expect(_signed(page, "volume_ml")).to_have_text("13.4 mL")
        expect(_signed(page, "nk_pct")).to_have_text("93.0 %")
        expect(_signed(page, "cell_counter")).to_have_text(counter)
        shown_cd3 = page.locator("#calc-cd3_per_kg").inner_text()

        # --- a wrong password: every value kept, only the password cleared, the error beside it ---
        page.get_by_label("User name", exact=True).fill("operator1")
        page.get_by_label("Password", exact=True).fill("not my password")
        go(page.get_by_role("button", name="Record and sign as Performed by"))
        password = page.get_by_label("Password", exact=True)
        expect(password).to_have_value("")
        expect(password).to_have_attribute("aria-invalid", "true")
        expect(password).to_be_focused()
        expect(page.locator("#err-password")).to_be_visible()
        expect(page.get_by_label(CONCENTRATION, exact=True)).to_have_value("15.00")
        expect(page.get_by_label("Cell counter", exact=True)).to_have_value(counter)
        expect(page.locator("#calc-volume_ml")).to_have_text("13.4 mL")

        # --- a malformed value: refused, its error beside the field, the field highlighted and focused ---
        page.get_by_label(CONCENTRATION, exact=True).fill("15,0")
        page.get_by_label("User name", exact=True).fill("operator1")
        password.fill(setting.password)
        go(page.get_by_role("button", name="Record and sign as Performed by"))
        field = page.get_by_label(CONCENTRATION, exact=True)
        expect(field).to_have_attribute("aria-invalid", "true")
        expect(field).to_be_focused()
        error = page.locator("#err-viable_concentration")
        expect(error).to_contain_text("is not a number")
        expect(error).to_be_in_viewport()
        _near(field, error)
        expect(field).to_have_value("15,0")  # kept, to be corrected
        expect(page.get_by_label("Cell counter", exact=True)).to_have_value(counter)
        expect(page.get_by_label("Password", exact=True)).to_have_value("")

        # --- corrected and signed: the server's value at signing is the one shown ---
        field.fill("15.00")
        expect(page.locator("#calc-volume_ml")).to_have_text("13.4 mL")
        page.get_by_label("User name", exact=True).fill("operator1")
        page.get_by_label("Password", exact=True).fill(setting.password)
        go(page.get_by_role("button", name="Record and sign as Performed by"))
        expect(flash(page, "recorded and signed")).to_have_text("Dose calculation recorded and signed.")

        # --- "Fill the bags": the planned bags with volume, cells and expiry before anything is filled ---
        def verified(session) -> None:  # noqa: ANN001
            oscar = _user(session, "operator2")
            done = session.scalars(sa.select(StepExecution).where(StepExecution.batch_id == batch_id,
                                                                  StepExecution.step_id == "dose_plan")).one()
            steps.verify_step(session, done, signer=oscar, password=setting.password, username="operator2",
                              require_username=True)

        _act(live_app, "operator2", verified)
        page.goto(f"/batches/{batch_id}/step/{position}/bag_preparation/1")
        expect(page.get_by_role("heading", level=1)).to_have_text("Fill the bags")
        planned = page.locator("table.bag-plan")
        expect(planned.locator("tbody tr")).to_have_count(1)
        expect(planned.locator("tbody tr").first).to_contain_text("13.4 mL")
        expect(planned.locator("thead")).to_contain_text("Expires")
        expect(page.get_by_label("Number of bags", exact=True)).to_have_value("")
    assert _recorded(live_app, batch_id, "dose_plan", "volume_ml") == "13.4"
    assert _recorded(live_app, batch_id, "dose_plan", "nk_pct") == "93.0"
    assert _recorded(live_app, batch_id, "dose_plan", "cd3_pct") == "0.25"
    assert shown_cd3.replace(",", "").startswith(_recorded(live_app, batch_id, "dose_plan", "cd3_per_kg"))


def test_a_wrong_password_keeps_the_dose_level_chosen(live_server: str, live_app: Flask, browser: Browser,
                                                      make_user: Callable[..., User]) -> None:
    setting = demo_plant(live_app, make_user)

    def subject_without_dose(session) -> int:  # noqa: ANN001
        clara = _user(session, "clinical1")
        demo_nk.seed_demo_subject(session, clara, setting.password)  # the eligible demo donor
        donor = session.scalars(sa.select(Donor)).one()
        return clinical.enrol_subject(session, code="NK-002", donor=donor, weight_kg="70.5",
                                      measured_on=date.today(), user=clara,
                                      **(eligible_enrolment(session) | {"password": setting.password})).id

    subject_id = _act(live_app, "clinical1", subject_without_dose)
    with people(browser, live_server, tablet=True) as person:
        clara = person("clinical1", NAMES["clinical1"])
        page = clara.page
        page.goto(f"/clinical/subjects/{subject_id}")
        page.get_by_text("Sign: assign dose level (Approved by)").click()
        dialog = page.locator("details.sign-dialog")
        dialog.get_by_label("Dose level", exact=True).select_option("DL2")  # the level open (NK-001 is in its cohort)
        dialog.get_by_label("User name", exact=True).fill("clinical1")
        dialog.get_by_label("Password", exact=True).fill("not my password")
        go(dialog.get_by_role("button", name="Sign as Approved by"))
        dialog = page.locator("details.sign-dialog")
        expect(dialog).to_have_attribute("open", "")
        expect(dialog.get_by_label("Dose level", exact=True)).to_have_value("DL2")
        expect(dialog.get_by_label("Password", exact=True)).to_have_value("")
        expect(dialog.get_by_label("Password", exact=True)).to_be_focused()
        expect(dialog.get_by_role("alert")).to_be_visible()
        clara.signed = False
        credentials(clara, dialog)
        go(dialog.get_by_role("button", name="Sign as Approved by"))
        expect(flash(page, "Dose level DL2 assigned and signed.")).to_be_visible()


def test_an_out_of_limit_value_without_a_comment_keeps_every_value_and_opens_its_comment_beside_it(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    """DEMO-PROC's room check (a parallel step, open at once): 30.0 °C is above 25.0 and needs a comment."""
    shutil.copytree(RESOURCE_ROOT / "sops" / "demo", Path(live_app.config["SOPS_DIR"]) / "demo")
    demo_plant(live_app, make_user)
    batch_id = _act(live_app, "operator1", lambda s: starting.start_batch(
        s, codes=["DEMO-PROC"], user=_user(s, "operator1")).id)
    with people(browser, live_server, tablet=True) as person:
        page = person("operator1", NAMES["operator1"]).page
        page.goto(f"/batches/{batch_id}/step/0/room_check/1")
        page.get_by_label("Room temperature", exact=True).fill("30.0")
        page.get_by_label("Settle plate count", exact=True).fill("0")
        page.get_by_role("group", name="Room status", exact=True).get_by_label("Clean", exact=True).check()
        page.get_by_label("Remarks", exact=True).fill("Air handling unit alarm at 09:10")
        page.get_by_label("User name", exact=True).fill("operator1")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        go(page.get_by_role("button", name="Record and sign as Performed by"))

        temperature = page.get_by_label("Room temperature", exact=True)
        expect(temperature).to_have_attribute("aria-invalid", "true")
        expect(temperature).to_be_focused()
        error = page.locator("#err-room_temperature")
        expect(error).to_contain_text("an out-of-limit value needs a comment")
        expect(error).to_be_in_viewport()
        _near(temperature, error)
        comment = page.get_by_label("Comment on Room temperature", exact=True)
        expect(comment).to_be_visible()  # its box is open beside the field
        expect(temperature).to_have_value("30.0")
        expect(page.get_by_label("Settle plate count", exact=True)).to_have_value("0")
        status = page.get_by_role("group", name="Room status", exact=True)
        expect(status.get_by_label("Clean", exact=True)).to_be_checked()
        expect(page.get_by_label("Remarks", exact=True)).to_have_value("Air handling unit alarm at 09:10")
        expect(page.get_by_label("Password", exact=True)).to_have_value("")

        comment.fill("Alarm reported to facilities; QA informed.")
        page.get_by_label("User name", exact=True).fill("operator1")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        go(page.get_by_role("button", name="Record and sign as Performed by"))
        expect(flash(page, "recorded and signed")).to_contain_text("1 value(s) out of limit: a deviation was opened.")
