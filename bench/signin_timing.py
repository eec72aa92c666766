"""Time failed sign-ins by account state (issue [3.6] item 3: no timing oracle), through the real application.

Usage: .venv/bin/python bench/signin_timing.py [--n 30] [--database-url URL]
Four kinds of failed sign-in, interleaved round by round so that machine noise falls on all alike: an unknown
user name, a locked account, a deactivated account (each with the right password) and a wrong password for an
active account. Throttling is lifted for the run (each round would otherwise be refused after five). Prints
the median and the spread (p10-p90) of each in milliseconds. Figures only: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _database import seal_new_trail, temporary_database  # bench/ is on sys.path when a script runs

from mfg import create_app
from mfg.extensions import db
from mfg.migrate import upgrade
from mfg.services import accounts, audit

PASSWORD = "bench-password-123"
KINDS = (("unknown user", "nobody-here", PASSWORD), ("locked", "larry", PASSWORD),
         ("deactivated", "dora", PASSWORD), ("wrong password", "olivia", "not-the-password-1"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    url, drop = temporary_database(args.database_url, tmp, prefix="mfg_bench_signin")
    try:
        upgrade(url)
        seal_new_trail(url, tmp)
        app = create_app({"SECRET_KEY": "bench", "INSTANCE_PATH": tmp, "DATABASE_URL": url,
                          "WTF_CSRF_ENABLED": False, "DOCUMENT_WORKER": False, "LOCKOUT_THRESHOLD": 1_000_000,
                          "SIGNIN_LIMIT_PER_ACCOUNT": "1000000 per minute",
                          "SIGNIN_LIMIT_PER_ADDRESS": "1000000 per minute"})
        policy = accounts.Policy.from_config(app.config)
        with app.app_context():
            s = db.session
            audit.set_actor(s, name="bench-setup")
            for name in ("olivia", "larry", "dora"):
                accounts.create_user(s, username=name, full_name=name.title(), roles="operator",
                                     password=PASSWORD, policy=policy, temporary=False)
            s.flush()
            accounts.get_by_username(s, "larry").locked_at = accounts.utcnow()
            accounts.deactivate(s, accounts.get_by_username(s, "dora"), reason="bench")
            s.commit()
        client = app.test_client()
        times: dict[str, list[float]] = {kind: [] for kind, _, _ in KINDS}
        for _ in range(3):  # warm-up: the dummy hash is made once per process
            for _kind, username, password in KINDS:
                client.post("/auth/login", data={"username": username, "password": password})
        for _ in range(args.n):
            for kind, username, password in KINDS:
                start = time.perf_counter()
                status = client.post("/auth/login", data={"username": username, "password": password}).status_code
                times[kind].append((time.perf_counter() - start) * 1000)
                assert status == 401, (kind, status)
        for kind, values in times.items():
            deciles = statistics.quantiles(values, n=10)
            median = statistics.median(values)
            print(f"{kind:16s} median {median:7.1f} ms   p10-p90 {deciles[0]:7.1f}-{deciles[-1]:7.1f} ms")
        app.extensions["mfg.db"].engine.dispose()
    finally:
        drop()


if __name__ == "__main__":
    main()
