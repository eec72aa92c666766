"""Documents a QA person signs, from the documents screen on the cleanroom tablet (1024x768, touch).

The batch is made through the services as the demo people (``mfg.demo.scenarios.conditional``: intake to the
conditional release, sterility pending, labels printed). In the browser, QA opens the batch's documents and
downloads the certificate of analysis and, beside the labels' PDF, their ZPL for a Zebra printer: the
certificate lists the tests with method, dates and specification in words, names the facility and carries no
audit trail; the ZPL carries the label's fields (local expiry with its zone, facility, additive statement,
the undivided product's division 00).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Browser, expect
from pypdf import PdfReader

from mfg.demo import scenarios
from mfg.extensions import db
from mfg.models import Batch, User
from mfg.reports import zpl
from mfg.reports.pdf import embedded_file, verify_pdf
from mfg.services import accounts, audit
from mfg.unit_of_work import unit_of_work
from tests.browser.pages import NAMES, demo_plant, people, row


def _act(live_app: Flask) -> scenarios.Act:
    def act(username, action):  # noqa: ANN001, ANN202
        session = db.session
        person = session.scalars(sa.select(User).where(User.username == username)).one()
        audit.set_actor(session, person)
        with unit_of_work(session, actor=person, policy=accounts.Policy()):
            return action(session)

    return act


def test_qa_downloads_the_certificate_and_the_labels_zpl_from_the_documents_screen_on_the_tablet(
        live_server: str, live_app: Flask, browser: Browser, make_user: Callable[..., User]) -> None:
    setting = demo_plant(live_app, make_user)
    with live_app.app_context():
        lot = scenarios.conditional(_act(live_app), setting).lot
        batch_id = db.session.scalars(sa.select(Batch.id).where(Batch.lot == lot)).one()
    with people(browser, live_server, tablet=True) as person:
        page = person("qa1", NAMES["qa1"]).page
        page.goto(f"/batches/{batch_id}/documents")
        expect(page.get_by_role("heading", level=1)).to_contain_text(lot)

        certificate = row(page, "Certificate of analysis")
        expect(certificate).to_have_count(1)
        link = certificate.get_by_role("link", name="Download PDF")
        box = link.bounding_box()
        assert box is not None and box["y"] + box["height"] > 0
        with page.expect_download() as download_info:
            link.tap()
        download = download_info.value
        assert download.suggested_filename == f"{lot}-coa-r1.pdf"
        coa = Path(download.path()).read_bytes()

        labels = row(page, "Labels")
        expect(labels.get_by_role("link", name="Download PDF")).to_be_visible()
        zpl_link = labels.get_by_role("link", name="Download ZPL (Zebra)")
        expect(zpl_link).to_be_visible()
        with page.expect_download() as download_info:
            zpl_link.tap()
        download = download_info.value
        assert download.suggested_filename == f"{lot}-labels-r1.zpl"
        zpl_text = Path(download.path()).read_text(encoding="utf-8")

    assert verify_pdf(coa, setting.site.certificate).valid
    text = re.sub(r"\s+", " ", " ".join(p.extract_text() for p in PdfReader(io.BytesIO(coa)).pages))
    squeezed = "".join(text.split())
    for words in ("DEMO Cell Therapy Facility", "1 Example Way", "Allogeneic NK cells, expanded, for infusion",
                  "Store at 2-8 °C. Do not freeze. Do not irradiate.", "Compendial culture, 14 days",
                  "No growth at 14 days", "> 70 %", "< 5.0 EU/mL", "Sampled", "Tested"):
        assert "".join(words.split()) in squeezed, words
    assert "Total volume sampled" not in text and "Results against NK-SPEC" not in text
    assert "Audit trail" not in text and "audit_trail" not in embedded_file(coa).decode()
    rows = json.loads(embedded_file(coa))["tests"]
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["sampled"]) for r in rows)

    (label,) = zpl.parse(zpl_text)  # one bag: one label
    assert label["product_barcode"].endswith("V00")  # the undivided product: division 00
    assert label["facility"] == "DEMO Cell Therapy Facility · FIN X9999"
    assert label["facility_address"] == "1 Example Way, Demo City, DC 00000, USA"
    assert label["additive"] == "Contains 5 % human serum albumin in 0.9 % sodium chloride"
    assert label["storage"] == "Store at 2-8 °C. Do not freeze. Do not irradiate."
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", label["expiry_eye"])  # the demo site's zone is UTC
    assert label["expiry_barcode"].startswith("&>0")
