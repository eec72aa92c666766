"""Page helpers shared by the browser tests: people signed in to browser contexts of their own, signing
fields, and small locators."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from mfg.config import RESOURCE_ROOT
from mfg.demo import scenarios
from mfg.demo import seed as demo
from mfg.extensions import db
from mfg.models import User
from mfg.reports.pdf import load_site_signer
from mfg.reports.site_certificate import ensure_site_certificate
from mfg.services import audit, sops
from tests.support import PASSWORD, make_documents

# The cleanroom tablet the screens are made for: 1024x768, touch, no mouse hover to rely on.
TABLET: dict[str, Any] = {"viewport": {"width": 1024, "height": 768}, "has_touch": True}


NAMES = {"operator1": "Olivia Operator", "operator2": "Oscar Verifier", "qa1": "Quinn Quality",
         "qa2": "Quentin Reviewer", "clinical1": "Clara Coordinator", "clinical2": "Chris Nurse"}
ROLES = {"operator1": "operator", "operator2": "operator", "qa1": "qa", "qa2": "qa", "clinical1": "clinical",
         "clinical2": "clinical"}


def demo_plant(live_app: Flask, make_user: Callable[..., User],
               people: dict[str, tuple[str, str]] | None = None) -> scenarios.Setting:
    """The demo people (with the tests' password), the NK master records effective, the demo master data and
    the site's signing key: what `flask --app mfg init --demo` makes. ``people``: username -> (roles, full
    name) instead of the demo's; qa2 loads the records and qa1 approves them."""
    for username, (roles, full_name) in (people or {u: (ROLES[u], NAMES[u]) for u in NAMES}).items():
        make_user(username, roles, full_name=full_name)
    sops_dir = Path(live_app.config["SOPS_DIR"])
    for folder in ("nk", "trial"):
        shutil.copytree(RESOURCE_ROOT / "sops" / folder, sops_dir / folder)
    zone = live_app.config["SITE_TIMEZONE"]
    for trial in (sops_dir / "trial").glob("*.yaml"):  # the site's configuration states the site's zone
        trial.write_text(trial.read_text(encoding="utf-8").replace("site_timezone: UTC", f"site_timezone: {zone}"),
                         encoding="utf-8")
    instance = Path(live_app.instance_path)
    ensure_site_certificate(instance / live_app.config["SIGNING_KEY_FILE"],
                            instance / live_app.config["SIGNING_CERT_FILE"], "Test site", demo=True)
    live_app.config["DEMO"] = True
    with live_app.app_context():
        session = db.session
        audit.set_actor(session, name="test-setup")
        users = {u.username: u for u in session.scalars(sa.select(User))}
        for version in sops.load_directory(session, sops_dir, loader=users["qa2"]).loaded:
            sops.approve(session, version, site_timezone=zone, signer=users["qa1"],
                         password=PASSWORD, username="qa1", require_username=True)
        demo.seed_master_data(session)
        session.commit()
        site = load_site_signer(live_app.config, instance)
        return scenarios.Setting(site=site, tz=ZoneInfo(live_app.config["SITE_TIMEZONE"]), password=PASSWORD,
                                 make_documents=lambda: make_documents(live_app, site))



@dataclass

class Person:
    page: Page
    username: str
    full_name: str
    signed: bool = False  # has signed in this session: later signatures take the password only (11.200)


def sign_in(page: Page, username: str, full_name: str) -> None:
    page.goto("/auth/login")
    page.get_by_label("User name", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name=f"Welcome, {full_name}")).to_be_visible()


def credentials(person: Person, scope: Page | Locator) -> None:
    """The signing fields: the user name only on the session's first signature, then the password."""
    user_name = scope.get_by_label("User name", exact=True)
    if person.signed:
        expect(user_name).to_have_count(0)
    else:
        user_name.fill(person.username)
    scope.get_by_label("Password", exact=True).fill(PASSWORD)


def flash(page: Page, text: str) -> Locator:
    return page.get_by_role("status").filter(has_text=text)


def row(scope: Page | Locator, cell: str) -> Locator:
    """The table rows, in the page or in one table, with a cell reading exactly ``cell``."""
    page = scope if isinstance(scope, Page) else scope.page
    return scope.get_by_role("row").filter(has=page.get_by_role("cell", name=cell, exact=True))


def go(locator: Locator) -> None:
    """Click a link or a submit button and wait for the page it leads to."""
    with locator.page.expect_navigation(wait_until="domcontentloaded"):
        locator.click()


@contextmanager

def people(browser: Browser, base_url: str, *, tablet: bool = False) -> Iterator[Callable[[str, str], Person]]:
    """Makes a person signed in to a browser context of their own; closes every context at the end.
    ``tablet``: the cleanroom tablet, 1024x768 with touch (:data:`TABLET`)."""
    opened: list[BrowserContext] = []

    def person(username: str, full_name: str) -> Person:
        context = browser.new_context(base_url=base_url, accept_downloads=True, **(TABLET if tablet else {}))
        opened.append(context)
        page = context.new_page()
        sign_in(page, username, full_name)
        return Person(page, username, full_name)

    try:
        yield person
    finally:
        for context in opened:
            context.close()


def fill_eligible_screening(person: Person, criteria, today) -> None:  # noqa: ANN001 - SubjectEligibility, date
    """Fill the enrolment form's eligibility screening (the Subjects page) with the demo's eligible screening
    (``demo_nk.eligible_screening``) under ``criteria``, and the signing fields (:func:`credentials`)."""
    from mfg.demo.nk_batch import eligible_screening

    screening = eligible_screening(criteria, today)
    form = person.page.locator("section.enrolment")
    form.get_by_label("Age (years)", exact=True).fill(screening.age_years)
    form.get_by_label("ECOG performance status", exact=True).fill(screening.ecog)
    form.get_by_label("Planned first treatment", exact=True).fill(str(screening.first_treatment_on))
    for criterion in criteria.labs:
        value, uln, measured_on = screening.labs[criterion.code]
        form.get_by_label(f"{criterion.label} ({criterion.unit})", exact=True).fill(value)
        if criterion.uln:
            form.get_by_label(f"{criterion.label}: ULN ({criterion.unit})", exact=True).fill(uln)
        form.get_by_label(f"{criterion.label}: measured on", exact=True).fill(str(measured_on))
    for exclusion in criteria.exclusions:
        answer = "yes" if screening.exclusions[exclusion.code] else "no"
        form.get_by_role("group", name=exclusion.question).get_by_label(answer, exact=True).check()
    credentials(person, form)


def effective_criteria(live_app):  # noqa: ANN001, ANN201 - the app; SubjectEligibility or None
    """The effective trial configuration's subject eligibility (None: it sets none)."""
    from mfg.extensions import db
    from mfg.services import sops

    with live_app.app_context():
        return sops.trial_configuration(db.session).subject_eligibility
