"""Role home pages, search and the audit trail's CSV at the cleanroom tablet (1024x768, touch): issue 17 item 9.

Through the services (``mfg.demo.scenarios``): subject NK-001's batch conditionally released (sterility pending,
bags labelled, documents issued); subject NK-002's batch record opened (its first step open) with a deviation
opened by hand. Then, in the browser, each person's home page lists their work: the operator's next step, the
clinic's product awaiting the bedside check (also on the clinical work queue, which no longer says "Nothing
waiting"), QA's batches, pending results and open deviations. Batches and subjects are found by DIN, subject code
and state; the audit trail's CSV holds exactly the filtered entries, every column, UTC ISO times.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Browser, Locator, Page, expect

from mfg.demo import nk_batch as demo_nk
from mfg.demo import scenarios
from mfg.extensions import db
from mfg.models import AuditEntry, Batch, Subject, User
from mfg.services import deviations, starting
from tests.browser.pages import NAMES, demo_plant, go, people, row
from tests.browser.test_do_once_flow import _act
from tests.support import PASSWORD


def _section(page: Page, css: str) -> Locator:
    return page.locator(f"section.{css}")


def _plant(live_app: Flask, make_user: Callable[..., User]) -> dict[str, str]:
    """Returns the lots: released (NK-001, conditionally released) and started (NK-002, its record opened)."""
    setting = demo_plant(live_app, make_user)
    with live_app.app_context():
        released = scenarios.conditional(lambda who, action: _act(live_app, who, action), setting).lot

    def open_record(session: sa.orm.Session) -> str:
        clara = session.scalars(sa.select(User).where(User.username == "clinical1")).one()
        subject = demo_nk.seed_demo_subject(session, clara, PASSWORD, code="NK-002")
        olivia = session.scalars(sa.select(User).where(User.username == "operator1")).one()
        batch = starting.start_product_batch(session, subject=subject, user=olivia)
        deviations.open_by_hand(session, batch, description="Courier arrived without the transport log",
                                user=olivia)
        return batch.lot

    return {"released": released, "started": _act(live_app, "operator1", open_record)}


def test_each_role_home_page_lists_its_work_and_batches_subjects_and_the_audit_trail_are_found(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User], tmp_path: Path) -> None:
    lots = _plant(live_app, make_user)
    with people(browser, live_server, tablet=True) as person:
        # the operator: the next step of the opened record, and the results due
        page = person("operator1", NAMES["operator1"]).page
        steps = _section(page, "my-steps")
        expect(row(steps, lots["started"])).to_contain_text("Identify the collection bag")
        expect(row(_section(page, "results-due"), lots["released"]).first).to_contain_text("pending")

        # search: by DIN, by subject code, by state; a subject by a batch's DIN
        page.goto("/batches/")
        search = page.get_by_role("search")
        search.get_by_label("DIN or subject code").fill(lots["started"])
        go(search.get_by_role("button", name="Search"))
        found = page.locator("table.search-results tbody tr")
        expect(found).to_have_count(1)
        expect(found).to_contain_text("NK-002")
        search = page.get_by_role("search")
        search.get_by_label("DIN or subject code").fill("nk-001")
        go(search.get_by_role("button", name="Search"))
        expect(found).to_have_count(1)
        expect(found).to_contain_text(lots["released"])
        search = page.get_by_role("search")
        search.get_by_label("DIN or subject code").fill("")
        search.get_by_label("State").select_option("created")
        go(search.get_by_role("button", name="Search"))
        expect(found).to_have_count(1)
        expect(found).to_contain_text(lots["started"])
        page.goto("/clinical/")
        search = page.get_by_role("search")
        search.get_by_label("Subject code, COI or DIN").fill(lots["released"])
        go(search.get_by_role("button", name="Search"))
        subjects = page.locator("table.subjects tbody tr")
        expect(subjects).to_have_count(1)
        expect(subjects).to_contain_text("NK-001")
        search = page.get_by_role("search")
        search.get_by_label("Subject code, COI or DIN").fill("")
        search.get_by_label("Batch state").select_option("conditionally_released")
        go(search.get_by_role("button", name="Search"))
        expect(subjects).to_have_count(1)
        expect(subjects).to_contain_text("NK-001")

        # the clinic: the conditionally released product awaits the bedside check, at home and on the work queue
        page = person("clinical1", NAMES["clinical1"]).page
        clinic = row(_section(page, "clinic-work"), lots["released"])
        expect(clinic).to_contain_text("conditionally released")
        expect(clinic.get_by_role("link", name="Hand-off and bedside check")).to_be_visible()
        expect(_section(page, "my-steps")).to_have_count(0)
        page.goto("/batches/")
        expect(page.get_by_text("Nothing waiting for you.")).to_have_count(0)
        go(row(_section(page, "clinic-work"), lots["released"]).get_by_role("link", name="Hand-off and bedside check"))
        expect(page.locator("section.custody-bedside")).to_be_visible()

        # QA: the batch awaiting a decision, the open deviation, the pending results
        page = person("qa1", NAMES["qa1"]).page
        expect(row(_section(page, "qa-reviews"), lots["released"])).to_contain_text("conditionally released")
        expect(_section(page, "qa-deviations")).to_contain_text("Courier arrived without the transport log")
        expect(row(_section(page, "results-due"), lots["released"]).first).to_be_visible()

        # the audit trail, filtered to batch records, downloaded as CSV: those entries, every column
        page.goto("/audit/?entity_type=batch")
        with page.expect_download() as download:
            page.get_by_role("link", name="Download CSV").click()
        saved = tmp_path / "audit.csv"
        download.value.save_as(saved)
        table = list(csv.reader(io.StringIO(saved.read_text(encoding="utf-8"), newline="")))
        with live_app.app_context():
            expected = db.session.execute(sa.select(AuditEntry.seq, AuditEntry.occurred_at).where(
                AuditEntry.entity_type == "batch").order_by(AuditEntry.seq.desc())).all()
            columns = [c.key for c in sa.inspect(AuditEntry).columns]
            assert db.session.scalar(sa.select(sa.func.count()).select_from(Batch)) == 2
            assert db.session.scalar(sa.select(sa.func.count()).select_from(Subject)) == 2
        assert table[0] == columns and len(expected) > 2
        body = [dict(zip(columns, line, strict=True)) for line in table[1:]]
        assert [int(r["seq"]) for r in body] == [seq for seq, _ in expected]
        assert {r["entity_type"] for r in body} == {"batch"}
        assert [datetime.fromisoformat(r["occurred_at"]) for r in body] == [at for _, at in expected]
        assert all(r["occurred_at"].endswith("Z") for r in body)
