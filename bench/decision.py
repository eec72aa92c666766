"""QA's decision while operators sign steps, through gunicorn as `make run` serves it (issue 3.3, deliverable 8).

Usage: .venv/bin/python bench/decision.py [--operators 4] [--baseline-seconds 8] [--database-url URL] [--json PATH]

A temporary instance (`flask --app mfg init --demo`, operator accounts as in bench/load.py) gets one demo
NK batch made in-process through the services, every review item marked by qa1, ready for QA's decision.
gunicorn starts as `make run` starts it; N operators start DEMO-PROC batches and sign their line clearance,
over and over. After --baseline-seconds, qa1 signs "conditionally released" on the review page. Measured:

- decision_s: QA's click (the signed POST) until the answer, i.e. until the decision is committed;
- documents_s: QA's click until the batch record and certificate of analysis are stored (polled in the
  database every 0.1 s);
- the operators' signed steps (POST until the 302): p50/p95 in the baseline, and p95/max of the steps
  that overlapped the window from QA's click to the documents stored.

Figures only: nothing here is asserted. The load generator shares the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from _database import temporary_database  # bench/ is on sys.path when a script runs
from load import Operator, Server, prepare_instance

DECISION = "conditionally_released"


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def prepare_batch(tmp: Path, url: str) -> int:
    """One demo NK batch, every review item marked by qa1: ready for QA's decision. Its id."""
    from mfg import create_app
    from mfg.demo import nk_batch as demo_nk
    from mfg.demo.seed import DEMO_PASSWORD
    from mfg.extensions import db
    from mfg.models import User
    from mfg.services import audit, review

    app = create_app({"INSTANCE_PATH": tmp, "DATABASE_URL": url})
    with app.app_context():
        s = db.session
        users = {u.username: u for u in s.scalars(sa.select(User))}
        audit.set_actor(s, users["operator1"])
        subject = demo_nk.seed_demo_subject(s, users["clinical1"], DEMO_PASSWORD)
        batch = demo_nk.run_nk_batch(s, subject=subject, performer=users["operator1"], verifier=users["operator2"],
                                     password=DEMO_PASSWORD, tz=ZoneInfo("UTC"))
        audit.set_actor(s, users["qa1"])
        for item in review.exceptions(s, batch):
            review.mark_reviewed(s, batch, item.key, user=users["qa1"], comment="bench")
        s.commit()
        batch_id = batch.id
    app.extensions["mfg.db"].engine.dispose()
    return batch_id


class QA(Operator):
    def sign_in(self) -> None:
        from mfg.demo.seed import DEMO_PASSWORD

        _, _, text = self.request("GET", "/auth/login")
        status, _, _ = self.request("POST", "/auth/login", {"csrf_token": self.scrape_csrf(text),
                                                            "username": self.username, "password": DEMO_PASSWORD})
        if status != 302:
            raise RuntimeError(f"{self.username}: sign-in answered {status}")

    def decide(self, batch_id: int) -> tuple[int, str, str]:
        from mfg.demo.seed import DEMO_PASSWORD

        status, _, text = self.request("GET", f"/review/batches/{batch_id}")
        if status != 200:
            raise RuntimeError(f"review page answered {status}")
        return self.request("POST", f"/review/batches/{batch_id}/decide", {
            "csrf_token": self.scrape_csrf(text), "decide-decision": DECISION, "decide-comment": "bench",
            "decide-username": self.username, "decide-password": DEMO_PASSWORD})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--operators", type=int, default=4)
    parser.add_argument("--baseline-seconds", type=float, default=8)
    parser.add_argument("--timeout", type=float, default=180, help="longest wait for the documents")
    parser.add_argument("--database-url")
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url, drop = temporary_database(args.database_url, tmp, prefix="mfg_decision", sqlite_name="mfg.sqlite3")
        try:
            figures = run(tmp, url, args)
        finally:
            drop()
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


def run(tmp: Path, url: str, args: argparse.Namespace) -> dict:
    names = prepare_instance(tmp, url, args.operators)
    batch_id = prepare_batch(tmp, url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    server = Server(tmp, url, tmp / "gunicorn.log")
    steps: list[tuple[float, float, int]] = []  # (start, end, status) of every signed step
    errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def operate(name: str) -> None:
        op = Operator(server.port, name)
        try:
            op.sign_in()
            while not stop.is_set():
                batch = op.start_batch()
                start = time.perf_counter()
                status, _, _ = op.sign_step(batch)
                with lock:
                    steps.append((start, time.perf_counter(), status))
        except Exception as exc:  # noqa: BLE001 - reported, the figures say how many
            errors.append(f"{name}: {exc!r}")

    def documents_stored() -> int:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM document_revision WHERE batch_id = :b AND kind IN "
                                        "('batch_record', 'coa')"), {"b": batch_id}).scalar_one()

    try:
        server.wait_ready(60)
        qa = QA(server.port, "qa1")
        qa.sign_in()
        threads = [threading.Thread(target=operate, args=(n,), daemon=True) for n in names]
        for t in threads:
            t.start()
        time.sleep(args.baseline_seconds)
        click = time.perf_counter()
        status, location, text = qa.decide(batch_id)
        answered = time.perf_counter()
        if status != 302:
            raise SystemExit(f"QA's decision answered {status} {location}: {text[:500]}")
        ready = None
        while time.perf_counter() - click < args.timeout:
            if documents_stored() >= 2:
                ready = time.perf_counter()
                break
            time.sleep(0.1)
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join(90)
    finally:
        stop.set()
        server.stop()
        engine.dispose()
    window_end = ready or time.perf_counter()
    ok = [(s, e) for s, e, status in steps if status == 302]
    baseline = [(e - s) * 1000 for s, e in ok if e < click]
    during = [(e - s) * 1000 for s, e in ok if e > click and s < window_end]
    return {"operators": args.operators, "decision": DECISION, "decision_s": answered - click,
            "documents_s": None if ready is None else ready - click,
            "baseline_steps": len(baseline), "baseline_p50_ms": _pct(baseline, 0.5),
            "baseline_p95_ms": _pct(baseline, 0.95),
            "during_steps": len(during), "during_p50_ms": _pct(during, 0.5), "during_p95_ms": _pct(during, 0.95),
            "during_max_ms": max(during) if during else None,
            "refused_steps": sum(1 for _, _, status in steps if status != 302), "errors": errors[:5],
            "median_all_ms": statistics.median([(e - s) * 1000 for s, e in ok]) if ok else None}


if __name__ == "__main__":
    sys.exit(main())
