"""The work queue and the batch list run a fixed number of SQL queries however many batches are active
(the count is deterministic, so it is asserted; their speed is measured in bench/, never asserted)."""

from __future__ import annotations

import sqlalchemy as sa

from .test_batches_web import _clearance, _start, demo  # noqa: F401 - the fixture


def _queries(app, client, url: str) -> int:
    engine = app.extensions["mfg.db"].engine
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        assert client.get(url).status_code == 200
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return len(seen)


def _batches(client, n: int) -> None:
    """``n`` more batches, each with its first step performed (so each has an execution and values)."""
    for _ in range(n):
        batch_id = _start(client)
        assert client.post(f"/batches/{batch_id}/step/0/line_clearance/1", data=_clearance()).status_code == 302


def test_the_work_queue_does_not_query_per_batch(demo, client, login):  # noqa: F811
    login("olivia")
    _batches(client, 2)
    client.post("/auth/logout")
    login("oscar")  # oscar may verify olivia's steps: the queue also lists verifications
    few = _queries(demo, client, "/batches/")
    client.post("/auth/logout")
    login("olivia")
    _batches(client, 4)
    client.post("/auth/logout")
    login("oscar")
    many = _queries(demo, client, "/batches/")
    page = client.get("/batches/").get_data(as_text=True)
    assert page.count("Open step") >= 6 and page.count("DEMO-PROC-") >= 12  # every batch, in queue and list
    assert many == few, (few, many)
