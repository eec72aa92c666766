"""Documents screen: labels printed and reprinted (reason and signature) from the browser's point of view,
every revision listed and downloadable as the signed file stored."""

from __future__ import annotations

import hashlib
import io

import sqlalchemy as sa
from pypdf import PdfReader

from mfg.extensions import db
from mfg.models import DocumentRevision
from tests.support import PASSWORD

from .test_nk_batch_web import nk_batch  # noqa: F401 - the fixture


def test_labels_are_printed_and_a_reprint_needs_a_reason(app, site_certificate, nk_batch, client, login):  # noqa: F811
    app.config["DEMO"] = True  # the demo FIN X9999 is printed on DEMO labels only
    app.config["LABEL_SIZE_IN"] = [6, 4]  # the site's label stock
    batch_id, lot = nk_batch(("NK-FORMULATE", "print_labels"))
    login("olivia")
    page = client.get(f"/batches/{batch_id}/documents").get_data(as_text=True)
    assert "Print labels and sign" in page and "No documents yet" in page
    printed = client.post(f"/batches/{batch_id}/labels", data={"username": "olivia", "password": PASSWORD},
                          follow_redirects=True)
    assert printed.status_code == 200 and "Labels printed (revision 1) and signed." in printed.get_data(as_text=True)
    refused = client.post(f"/batches/{batch_id}/labels", data={"reason": "", "password": PASSWORD})
    assert refused.status_code == 400 and "A label reprint needs a reason." in refused.get_data(as_text=True)
    again = client.post(f"/batches/{batch_id}/labels", data={"reason": "label smudged", "password": PASSWORD},
                        follow_redirects=True)
    listing = again.get_data(as_text=True)
    assert "(reprint 1)" in listing and "label smudged" in listing and "Performed by" in listing
    with app.app_context():
        stored = db.session.scalars(sa.select(DocumentRevision).order_by(DocumentRevision.revision)).all()
        assert [d.revision for d in stored] == [1, 2]
        first_id, first_sha = stored[0].id, stored[0].sha256
    download = client.get(f"/batches/{batch_id}/documents/{first_id}.pdf")
    assert download.status_code == 200 and download.mimetype == "application/pdf"
    assert hashlib.sha256(download.data).hexdigest() == first_sha == download.headers["X-Content-SHA256"]
    box = PdfReader(io.BytesIO(download.data)).pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (432, 288)  # 6 x 4 in, as configured
    client.post("/auth/logout")
    login("loader")  # QA may read but not print
    assert client.post(f"/batches/{batch_id}/labels", data={"password": PASSWORD}).status_code == 403
