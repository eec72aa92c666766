"""The NK batch on screen: the work queue by subject and stage, the batch page with its bags, expiry
countdown and growth chart (an SVG drawn on the server, with its own strict content policy)."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mfg.config import RESOURCE_ROOT
from mfg.demo import nk_batch as demo_nk
from mfg.demo import seed as demo
from mfg.extensions import db
from mfg.services import audit, sops
from tests.support import PASSWORD

UTC = ZoneInfo("UTC")


@pytest.fixture
def nk_batch(app, make_user):
    """The demo NK batch run through the services up to ``until``: a function returning the batch id."""
    sops_dir = Path(app.config["SOPS_DIR"])
    shutil.copytree(RESOURCE_ROOT / "sops" / "nk", sops_dir / "nk")
    shutil.copytree(RESOURCE_ROOT / "sops" / "trial", sops_dir / "trial")
    users = {name: make_user(name, role, full_name=full) for name, role, full in (
        ("loader", "qa", "Lou Loader"), ("approver", "qa", "Quinn Approver"), ("clara", "clinical", "Clara C"),
        ("olivia", "operator", "Olivia Operator"), ("oscar", "operator", "Oscar Verifier"))}

    def run(until):
        with app.app_context():
            s = db.session
            audit.set_actor(s, name="test-setup")
            u = {name: s.merge(user) for name, user in users.items()}
            for version in sops.load_directory(s, sops_dir, loader=u["loader"]).loaded:
                sops.approve(s, version, site_timezone="UTC", signer=u["approver"], password=PASSWORD, username=None,
                             require_username=False)
            demo.seed_master_data(s)
            subject = demo_nk.seed_demo_subject(s, u["clara"], PASSWORD)
            batch = demo_nk.run_nk_batch(s, subject=subject, performer=u["olivia"], verifier=u["oscar"],
                                         password=PASSWORD, tz=UTC, until=until)
            s.commit()
            return batch.id, batch.lot

    return run


def test_the_work_queue_lists_nk_batches_by_subject_and_stage(nk_batch, client, login):
    batch_id, lot = nk_batch(("NK-EXPAND", "harvest_culture"))
    login("olivia")
    page = client.get("/batches/").get_data(as_text=True)
    active = page[page.index("<h2>Active batches</h2>"):]
    assert "<td>NK-001</td>" in active and lot in active
    assert "<td>Harvest</td>" in active  # the stage reached: its furthest open step
    queue = page[:page.index("<h2>Active batches</h2>")]
    assert "Harvest" in queue and "NK-001" in queue


def test_the_batch_page_shows_bags_expiry_and_the_growth_chart(nk_batch, client, login):
    batch_id, lot = nk_batch(("NK-FORMULATE", "print_labels"))
    login("olivia")
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert "<h2>Bags</h2>" in page and "=&lt;S9999V00" in page and "13.4 mL" in page
    assert "1.87 × 10⁸" in page and " min left</span>)" in page  # cells for people; the ticking countdown
    assert "Product expiry" in page  # ... also among the time limits
    assert f'src="/batches/{batch_id}/growth-0.svg"' in page
    assert "Seeded day 0: 190; Count 1 day 7: 2392; Harvest day 14: 12555" in page  # the text alternative
    assert f'href="/batches/{batch_id}/custody"' in page
    # an operator opens a deviation by hand from the batch page; it is listed and links to its page
    assert f'action="/review/batches/{batch_id}/deviations"' in page
    opened = client.post(f"/review/batches/{batch_id}/deviations", data={"deviation-description": "Spill in BSC-01"})
    assert opened.status_code == 302
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert "Spill in BSC-01" in page and 'href="/review/deviations/' in page

    chart = client.get(f"/batches/{batch_id}/growth-0.svg")
    assert chart.status_code == 200 and chart.mimetype == "image/svg+xml"
    assert chart.headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    svg = chart.get_data(as_text=True)
    assert ET.fromstring(svg.encode()).tag == "{http://www.w3.org/2000/svg}svg"
    assert "Viable NK cells per culture day" in svg and "12 555" in svg
    assert client.get(f"/batches/{batch_id}/growth-1.svg").status_code == 404
    # the page itself keeps the strict policy
    assert "'unsafe-inline'" not in client.get(f"/batches/{batch_id}").headers["Content-Security-Policy"]


def test_an_out_of_limit_calculated_value_is_signed_with_its_comment_on_the_step_screen(nk_batch, client, login, app):
    """A calculated value outside its alert limits (the selection's NK recovery below 15 %) is stored, flagged and
    needs a comment: the step screen has the comment input for it, and the step is signed with it."""
    import sqlalchemy as sa

    from mfg.models import RecordedValue, StepExecution

    batch_id, _lot = nk_batch(("NK-EXPAND", "post_selection_count"))
    login("olivia")
    url = f"/batches/{batch_id}/step/1/post_selection_count/1"
    entry = {"v_cell_counter": "CNT-01", "v_flow_cytometer": "FCM-01", "v_volume_ml": "20.0",
             "v_viable_concentration": "1.00", "v_viability": "95.0", "v_nk_purity": "91.0", "v_cd3_pct": "0.40",
             "username": "olivia", "password": PASSWORD}
    refused = client.post(url, data=entry)
    assert refused.status_code == 400
    page = refused.get_data(as_text=True)
    assert "NK recovery of the selection: an out-of-limit value needs a comment" in page
    assert 'name="c_recovery"' in page  # the comment input of the calculated value, shown
    done = client.post(url, data={**entry, "c_recovery": "Low recovery: selection column clogged; QA informed"})
    assert done.status_code == 302
    with app.app_context():
        recovery = db.session.scalars(sa.select(RecordedValue).join(StepExecution).where(
            StepExecution.batch_id == batch_id, RecordedValue.field_id == "recovery")).one()
        assert not recovery.in_limits and recovery.comment.startswith("Low recovery")


def test_a_preview_or_keep_alive_carrying_a_spent_token_is_answered_not_replayed(nk_batch, client, login):
    """sign.js sends the form as typed to the preview, and a preview may arrive just after the form was signed.
    It stores nothing, so it takes no part in the one-time token: it answers its JSON, and does not put "already
    submitted" in the session where the signature's own message belongs (the CI failure of stop 23)."""
    batch_id, _lot = nk_batch(("NK-EXPAND", "harvest_culture"))
    login("olivia")
    token = "a" * 32
    opened = client.post(f"/review/batches/{batch_id}/deviations",
                         data={"deviation-description": "Spill in BSC-01", "submission_token": token})
    assert opened.status_code == 302
    preview = client.post(f"/batches/{batch_id}/step/1/harvest_culture/1/preview", data={"submission_token": token},
                          headers={"Accept": "application/json"})
    assert preview.status_code == 200 and preview.is_json and "fields" in preview.get_json()
    alive = client.post("/auth/keep-alive", data={"submission_token": token}, headers={"Accept": "application/json"})
    assert alive.status_code == 200 and alive.get_json()["signed_in"] is True
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert "already submitted" not in page
    # the real repeat is still answered as one
    again = client.post(f"/review/batches/{batch_id}/deviations",
                        data={"deviation-description": "Spill in BSC-01", "submission_token": token})
    assert again.status_code == 303
    assert client.get(f"/batches/{batch_id}").get_data(as_text=True).count("Spill in BSC-01") == 1


def test_what_a_page_asks_by_itself_leaves_the_session_cookie_alone(nk_batch, client, login):
    """The preview of a step's values, the check of a scan and the batch page's poll run while a person works on
    a form. Their answers must not set the session cookie: one arriving after a signature's answer would put back
    the session as it was before it, and the signature's "recorded and signed" would be lost (the failure of
    the full NK batch flow in the fresh-clone run of this session)."""
    batch_id, _lot = nk_batch(("NK-EXPAND", "harvest_culture"))
    login("olivia")
    asked = [client.post(f"/batches/{batch_id}/step/1/harvest_culture/1/preview", data={},
                         headers={"Accept": "application/json"}),
             client.get(f"/batches/{batch_id}/step/1/harvest_culture/check?field=harvested_at&value=y",
                        headers={"Accept": "application/json"}),
             client.get(f"/batches/{batch_id}/custody/check?scan=din&value=y", headers={"Accept": "application/json"}),
             client.get(f"/batches/{batch_id}/version.json")]
    assert [response.status_code for response in asked] == [200] * 4
    assert [response.headers.get("Set-Cookie") for response in asked] == [None] * 4
    assert client.get(f"/batches/{batch_id}").headers.get("Set-Cookie")  # a page the person opens is activity
