"""Time a signed step submit through the real application (Flask test client, real database).

Usage: .venv/bin/python bench/step_submit.py [--n 40] [--database-url URL]
Without --database-url a temporary SQLite file is used; with a PostgreSQL URL, a temporary schema.
Prints the median and p95 in milliseconds. Figures only: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

from _database import seal_new_trail, temporary_database  # bench/ is on sys.path when a script runs

from mfg import create_app
from mfg.config import RESOURCE_ROOT
from mfg.extensions import db
from mfg.migrate import upgrade
from mfg.models import utcnow
from mfg.services import accounts, audit, masterdata, sops

PASSWORD = "bench-password-123"


def _database(url: str | None, tmp: Path) -> tuple[str, Callable[[], None]]:
    return temporary_database(url, tmp, prefix="mfg_bench", sqlite_name="bench.sqlite3")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    url, drop = _database(args.database_url, tmp)
    try:
        upgrade(url)
        seal_new_trail(url, tmp)  # the instance (tmp) gets its audit key ring, as `flask --app mfg init` does
        (tmp / "sops").mkdir()
        shutil.copy(RESOURCE_ROOT / "sops" / "demo" / "DEMO-PROC_v1.yaml", tmp / "sops")
        app = create_app({"SECRET_KEY": "bench", "INSTANCE_PATH": tmp, "DATABASE_URL": url,
                          "SOPS_DIR": str(tmp / "sops"), "WTF_CSRF_ENABLED": False})
        with app.app_context():
            s = db.session
            audit.set_actor(s, name="bench")
            policy = accounts.Policy()
            users = {name: accounts.create_user_at_setup(s, username=name, full_name=name, roles=roles,
                                                         password=PASSWORD, policy=policy)
                     for name, roles in (("loader", "qa"), ("approver", "qa"), ("op", "operator"))}
            version = sops.load_directory(s, tmp / "sops", loader=users["loader"]).loaded[0]
            sops.approve(s, version, site_timezone="UTC",
                         signer=users["approver"], password=PASSWORD, username="approver",
                         require_username=True)
            masterdata.add_equipment(s, identifier="BSC-01", equipment_type="biosafety cabinet",
                                     calibration_due=date.today() + timedelta(days=30))
            s.commit()
        client = app.test_client()
        client.post("/auth/login", data={"username": "op", "password": PASSWORD})
        timings = []
        for _ in range(args.n):
            started = client.post("/batches/start",
                                  data={"code": "DEMO-PROC", "submission_token": secrets.token_hex(16)})
            batch_id = int(started.location.rsplit("/", 1)[1])
            data = {"v_area_clear": "y", "v_cabinet": "BSC-01", "v_started_at": utcnow().strftime("%Y-%m-%d %H:%M"),
                    "username": "op", "password": PASSWORD, "submission_token": secrets.token_hex(16)}
            start = time.perf_counter()
            response = client.post(f"/batches/{batch_id}/step/0/line_clearance/1", data=data)
            timings.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 302, response.get_data(as_text=True)
        app.extensions["mfg.db"].engine.dispose()
        timings.sort()
        kind = "postgresql" if args.database_url else "sqlite"
        print(f"{kind}: signed step submit over {args.n} submits: median {statistics.median(timings):.1f} ms, "
              f"p95 {timings[int(0.95 * (len(timings) - 1))]:.1f} ms, min {timings[0]:.1f} ms")
    finally:
        drop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
