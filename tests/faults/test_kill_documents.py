"""kill -9 of the whole server after QA's decision was acknowledged and before its documents were made.

gunicorn runs as `make run` starts it, with its documents worker threads off for this first run
(``MFG_DOCUMENT_WORKER=false``), so that the kill certainly comes before the documents exist: QA signs the
conditional release of a demo NK batch on the review page, the answer is the redirect (the decision
committed), and the process group gets SIGKILL. The database as the crash left it holds the signed
decision and its documents job, pending, and no document. gunicorn started again on the same database,
workers on (the default), makes the documents at its start: the batch record and certificate of analysis
are stored, signed and valid (`flask --app mfg verify-pdf`), the job is done, and the audit trail verifies.
"""

from __future__ import annotations

import time
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from tests.faults.live import Client, Gunicorn, alive, run_clis

DEMO_PASSWORD = "demo-pass-2026"  # mfg.demo.seed.DEMO_PASSWORD, of the demo users `init --demo` made


def prepare_batch_for_decision(instance: Path, database_url: str) -> int:
    """A demo NK batch made through the services, every review item marked by qa1: ready for QA's decision."""
    from mfg import create_app
    from mfg.demo import nk_batch as demo_nk
    from mfg.extensions import db
    from mfg.models import User
    from mfg.services import audit, review

    app = create_app({"INSTANCE_PATH": instance, "DATABASE_URL": database_url, "DOCUMENT_WORKER": False})
    try:
        with app.app_context():
            s = db.session
            users = {u.username: u for u in s.scalars(sa.select(User))}
            audit.set_actor(s, users["operator1"])
            subject = demo_nk.seed_demo_subject(s, users["clinical1"], DEMO_PASSWORD)
            batch = demo_nk.run_nk_batch(s, subject=subject, performer=users["operator1"],
                                         verifier=users["operator2"], password=DEMO_PASSWORD, tz=ZoneInfo("UTC"))
            audit.set_actor(s, users["qa1"])
            for item in review.exceptions(s, batch):
                review.mark_reviewed(s, batch, item.key, user=users["qa1"], comment="fault test")
            s.commit()
            return batch.id
    finally:
        app.extensions["mfg.db"].engine.dispose()


def _jobs(engine: sa.Engine, batch_id: int) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT status, kinds FROM document_job WHERE batch_id = :b ORDER BY id"), {"b": batch_id})]


def _documents(engine: sa.Engine, batch_id: int) -> list[tuple[str, int, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT kind, revision, filename FROM document_revision WHERE batch_id = :b AND kind != 'labels' "
            "ORDER BY id"), {"b": batch_id})]


def test_kill_9_after_the_decision_and_the_documents_are_made_at_the_next_start(live_instance, inspect_engine,
                                                                                tmp_path: Path) -> None:
    batch_id = prepare_batch_for_decision(live_instance.path, live_instance.database_url)
    log = tmp_path / "gunicorn.log"
    server = Gunicorn(live_instance.path, live_instance.database_url, log, env={"MFG_DOCUMENT_WORKER": "false"})
    try:
        server.start()
        qa = Client(server.port, timeout=60)
        qa.sign_in("qa1", DEMO_PASSWORD)
        status, _, page = qa.request("GET", f"/review/batches/{batch_id}")
        assert status == 200 and "Sign the decision" in page
        status, location, text = qa.request("POST", f"/review/batches/{batch_id}/decide", {
            "csrf_token": qa.scrape_csrf(page), "decide-decision": "conditionally_released",
            "decide-comment": "sterility pending", "decide-username": "qa1", "decide-password": DEMO_PASSWORD})
        assert status == 302 and location.endswith(f"/review/batches/{batch_id}"), (status, location, text[:500])
        status, _, page = qa.request("GET", f"/review/batches/{batch_id}")
        assert "Documents being prepared" in page
        killed = server.kill()
        assert len(killed) == 3 and not any(alive(pid) for pid in killed), killed

        # the database as the crash left it: the decision and its job, no document
        with inspect_engine.connect() as conn:
            decisions = conn.execute(sa.text("SELECT decision FROM batch_decision WHERE batch_id = :b"),
                                     {"b": batch_id}).scalars().all()
        assert decisions == ["conditionally_released"]
        assert _jobs(inspect_engine, batch_id) == [("pending", "batch_record,coa")]
        assert _documents(inspect_engine, batch_id) == []

        # the next start makes them (workers on, the default)
        server = Gunicorn(live_instance.path, live_instance.database_url, log, port=server.port)
        server.start()
        end = time.monotonic() + 180
        while time.monotonic() < end and _jobs(inspect_engine, batch_id) != [("done", "batch_record,coa")]:
            time.sleep(0.5)
        assert _jobs(inspect_engine, batch_id) == [("done", "batch_record,coa")], server.log_text()[-3000:]
        made = _documents(inspect_engine, batch_id)
        assert [(kind, revision) for kind, revision, _ in made] == [("batch_record", 1), ("coa", 1)]
        qa = Client(server.port, timeout=60)
        qa.sign_in("qa1", DEMO_PASSWORD)
        status, _, page = qa.request("GET", f"/review/batches/{batch_id}")
        assert status == 200 and "Documents being prepared" not in page
    finally:
        server.kill()

    with inspect_engine.connect() as conn:
        content = conn.execute(sa.text("SELECT content FROM document_revision WHERE batch_id = :b AND "
                                       "kind = 'batch_record'"), {"b": batch_id}).scalar_one()
    pdf = tmp_path / made[0][2]
    pdf.write_bytes(content)
    verify, checked = run_clis(live_instance.path, live_instance.database_url, ("audit", "verify"),
                               ("verify-pdf", str(pdf)))
    assert verify[0] == 0 and "audit trail intact" in verify[1], verify
    assert checked[0] == 0 and "VALID" in checked[1], checked
