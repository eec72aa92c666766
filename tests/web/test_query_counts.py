"""The work queue, the batch list, the batch page (and the version its open page polls) and the audit trail
screen run a fixed number of SQL queries however many batches, steps, values and audit entries there are (the
count is deterministic, so it is asserted; their speed is measured in bench/pages.py, never asserted)."""

from __future__ import annotations

import re
from datetime import date, timedelta

import sqlalchemy as sa

from mfg.extensions import db
from mfg.models import AuditEntry, Batch, BatchMasterRecord, SopVersion, User
from mfg.services import audit, masterdata
from tests.support import PASSWORD

from .test_batches_web import _clearance, _start, demo  # noqa: F401 - the fixture
from .test_nk_batch_web import nk_batch  # noqa: F401 - the fixture


def _queries(app, client, url: str) -> int:
    engine = app.extensions["mfg.db"].engine
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        seen.append(statement)

    # The request in an application context of its own, so with a session of its own as outside the tests
    # (the fixtures keep one context open, whose session would otherwise carry objects from request to request).
    with app.app_context():
        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            assert client.get(url).status_code == 200
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
    return len(seen)


def _batches(client, n: int) -> list[int]:
    """``n`` more batches, each with its first step performed (so each has an execution and values)."""
    started = []
    for _ in range(n):
        batch_id = _start(client)
        assert client.post(f"/batches/{batch_id}/step/0/line_clearance/1", data=_clearance()).status_code == 302
        started.append(batch_id)
    return started


def _decided(app, n: int) -> None:
    """``n`` released batches, as years of history leave them (rows only: the list reads nothing else)."""
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        user_id = s.scalar(sa.select(User.id).where(User.username == "olivia"))
        version_id = s.scalar(sa.select(SopVersion.id).where(SopVersion.code == "DEMO-PROC"))
        first = s.scalar(sa.select(sa.func.count()).select_from(Batch))
        for i in range(first, first + n):
            batch = Batch(lot=f"HIST-{i:04d}", status="released", created_by_id=user_id)
            batch.master_records = [BatchMasterRecord(position=0, sop_version_id=version_id)]
            s.add(batch)
        s.commit()


def _receive_buffer(app) -> None:
    with app.app_context():
        audit.set_actor(db.session, name="test-setup")
        masterdata.receive_lot(db.session, material="Phosphate-buffered saline", lot_number="PBS-7",
                               expiry=date.today() + timedelta(days=30), qc_status="released")
        db.session.commit()


def _lot(app, batch_id: int) -> str:
    with app.app_context():
        return db.session.get(Batch, batch_id).lot


def test_the_work_queue_does_not_query_per_batch(demo, client, login):  # noqa: F811
    login("olivia")
    _batches(client, 2)
    _decided(demo, 2)
    client.post("/auth/logout")
    login("oscar")  # oscar may verify olivia's steps: the queue also lists verifications
    few = _queries(demo, client, "/batches/")
    client.post("/auth/logout")
    login("olivia")
    _batches(client, 4)
    _decided(demo, 60)  # more than a page of decided batches
    client.post("/auth/logout")
    login("oscar")
    many = _queries(demo, client, "/batches/")
    page = client.get("/batches/").get_data(as_text=True)
    active = page[page.index("<h2>Active batches</h2>"):page.index('<h2 id="decided">')]
    assert page.count("Open step") >= 6 and active.count("DEMO-PROC-") == 6  # every active batch, in queue and list
    assert many == few, (few, many)


def test_the_batch_list_pages_decided_batches_newest_first(demo, client, login):  # noqa: F811
    _decided(demo, 60)
    login("olivia")
    newest = client.get("/batches/").get_data(as_text=True)
    lots = re.findall(r">(HIST-\d{4})<", newest)
    assert lots == [f"HIST-{i:04d}" for i in range(59, 9, -1)]  # a page of 50, newest first
    older = re.search(r'href="(/batches/\?before=\d+)#decided">Older batches', newest)
    assert older is not None
    rest = client.get(older.group(1)).get_data(as_text=True)
    assert re.findall(r">(HIST-\d{4})<", rest) == [f"HIST-{i:04d}" for i in range(9, -1, -1)]
    assert "Older batches" not in rest and "Newest" in rest


def test_the_batch_page_does_not_query_per_step_or_value(demo, client, login):  # noqa: F811
    """A batch with one step recorded and, with more batches around, one with three: the page runs the
    same queries (the open steps of both have no time window, whose countdown reads one value each)."""
    _receive_buffer(demo)
    login("olivia")
    (first,) = _batches(client, 1)
    few = _queries(demo, client, f"/batches/{first}")
    second, *_others = _batches(client, 3)
    assert client.post(f"/batches/{second}/step/0/room_check/1", data={
        "v_room_temperature": "21.0", "v_settle_plate_count": "0", "v_room_status": "Clean",
        "v_remarks": "settle plates read at 10:00", "password": PASSWORD}).status_code == 302
    assert client.post(f"/batches/{second}/step/0/identify_material/1", data={
        "v_lot_scan": _lot(demo, second), "v_buffer": "PBS-7", "password": PASSWORD}).status_code == 302
    page = client.get(f"/batches/{second}").get_data(as_text=True)
    assert "2 of 3 steps complete" in page and "awaiting verification" in page and "PBS-7" in page
    many = _queries(demo, client, f"/batches/{second}")
    assert many == few, (few, many)


def test_the_batch_page_version_runs_two_queries_however_much_the_batch_holds(demo, client, login):  # noqa: F811
    """What the open batch page polls every few seconds: the batch and the aggregates of everything the page
    shows in one query, the newest signature in another (besides the request's own: the signed-in user)."""
    _receive_buffer(demo)
    login("olivia")
    (first,) = _batches(client, 1)
    few = _queries(demo, client, f"/batches/{first}/version.json")
    second, *_others = _batches(client, 3)
    assert client.post(f"/batches/{second}/step/0/room_check/1", data={
        "v_room_temperature": "21.0", "v_settle_plate_count": "0", "v_room_status": "Clean",
        "v_remarks": "settle plates read at 10:00", "password": PASSWORD}).status_code == 302
    many = _queries(demo, client, f"/batches/{second}/version.json")
    assert few == many == 4, (few, many)  # the signed-in user, the batch, the version (two)


def _newest(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.max(AuditEntry.seq)))


def test_the_audit_trail_screen_does_not_query_per_entry(demo, client, make_user, login):  # noqa: F811
    """Each filter QA uses, and an older page (the keyset cursor), with a few entries and with more than a
    page of them."""
    make_user("quinn", "qa")
    login("olivia")
    (batch_id,) = _batches(client, 1)
    client.post("/auth/logout")
    login("quinn")
    urls = ["/audit/", "/audit/?username=olivia", "/audit/?action=recorded_value",
            f"/audit/?entity_type=batch&entity_id={batch_id}", "/audit/?since=2000-01-01&until=2999-12-31"]

    def counts() -> dict[str, int]:
        found = {url: _queries(demo, client, url) for url in urls}
        newest = _newest(demo)
        for url in ("/audit/?", "/audit/?username=olivia&", "/audit/?action=recorded_value&"):
            found[f"{url}before=newest"] = _queries(demo, client, f"{url}before={newest}")
        return found

    few = counts()
    assert client.get("/audit/?username=olivia").get_data(as_text=True).count('<td class="what">') < 50

    client.post("/auth/logout")
    login("olivia")
    _batches(client, 12)
    client.post("/auth/logout")
    login("quinn")
    assert client.get("/audit/?username=olivia").get_data(as_text=True).count('<td class="what">') == 50
    many = counts()
    assert many == few, (few, many)


def test_the_work_queue_repeats_a_step_as_often_as_the_recorded_count_says(nk_batch, client, login):  # noqa: F811
    """The queue loads values only of the steps that set a repeat count: one bag planned and scanned back,
    so no second scan-back is offered and the final inspection is."""
    batch_id, lot = nk_batch(("NK-FORMULATE", "final_inspection"))
    login("olivia")
    page = client.get("/batches/").get_data(as_text=True)
    queue = page[:page.index("<h2>Active batches</h2>")]
    assert "Final visual inspection" in queue and "Scan back each bag label" not in queue
