"""Signed step submit under load, through the real application served by gunicorn on 127.0.0.1 (issue 6).

Usage: .venv/bin/python bench/load.py [--levels 1,5,20] [--seconds 15] [--database-url URL] [--json PATH]

Makes a temporary instance (SQLite file in it, or with --database-url a fresh PostgreSQL schema that is
dropped at the end), runs `flask --app mfg init --demo`, creates one operator account per simulated
operator, then for each level starts gunicorn exactly as `make run` does (2 workers, 4 threads) on a free
port of 127.0.0.1, lets N operator threads (own HTTP connection and cookie, CSRF token scraped from the
forms) start a DEMO-PROC batch and sign its line-clearance step, over and over, for --seconds, and stops
gunicorn (always, also on error). A signed step counts only when answered 302 to the batch page.

Floor, measured in this same process before the load: argon2 verification alone (the app's
accounts.password_matches on a hash made by accounts.hash_password) in 2 processes for --floor-seconds
-> verifications/s the two cores allow; one verification alone in one process; one committed insert into
a scratch table of the same database. Peak RSS: VmHWM of each gunicorn worker (children of the master)
read just before the server is stopped; each level has a fresh server, so the figure is per level.

The load generator runs on the same machine (and cores) as the server: its own CPU use is reported.
Figures only: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import sqlalchemy as sa
from _database import temporary_database  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
PASSWORD = "bench-load-password-123"
CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')
FLASH_RE = re.compile(r'class="[^"]*(?:flash|error|problem)[^"]*"[^>]*>(.*?)<', re.S)


# ---------------------------------------------------------------- database and instance

def _database(url: str | None, tmp: Path) -> tuple[str, Callable[[], None]]:
    return temporary_database(url, tmp, prefix="mfg_load", sqlite_name="mfg.sqlite3")


def _env(tmp: Path, url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["MFG_INSTANCE_PATH"] = str(tmp)
    env["MFG_DATABASE_URL"] = url
    return env


def prepare_instance(tmp: Path, url: str, n_operators: int) -> list[str]:
    env = _env(tmp, url)
    out = subprocess.run([str(BIN / "flask"), "--app", "mfg", "init", "--demo"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"flask init --demo failed:\n{out.stdout}\n{out.stderr}")
    # The operator accounts, in-process through the services (20 CLI runs would each start the app).
    os.environ["MFG_INSTANCE_PATH"] = str(tmp)
    from mfg import create_app
    from mfg.extensions import db
    from mfg.services import accounts, audit

    app = create_app({"INSTANCE_PATH": tmp, "DATABASE_URL": url})
    names = [f"loadop{i:02d}" for i in range(1, n_operators + 1)]
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="bench/load.py")
        for name in names:
            accounts.create_user_at_setup(s, username=name, full_name=f"Load Operator {name[-2:]}", roles="operator",
                                          password=PASSWORD, policy=accounts.Policy())
        s.commit()
        app.extensions["mfg.db"].engine.dispose()
    return names


# ---------------------------------------------------------------- floor

def _verify_loop(password_hash: str, seconds: float, queue) -> None:
    from mfg.services import accounts

    class _U:
        pass

    user = _U()
    user.password_hash = password_hash
    count = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        assert accounts.password_matches(user, PASSWORD)
        count += 1
    queue.put(count)


def argon2_floor(seconds: float, processes: int = 2) -> dict:
    from mfg.services import accounts

    password_hash = accounts.hash_password(PASSWORD)

    class _U:
        password_hash = ""

    user = _U()
    user.password_hash = password_hash
    single = []
    for _ in range(20):
        start = time.perf_counter()
        accounts.password_matches(user, PASSWORD)
        single.append((time.perf_counter() - start) * 1000)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_verify_loop, args=(password_hash, seconds, queue)) for _ in range(processes)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    counts = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - start
    return {"hash_parameters": password_hash.split("$")[3], "verify_ms_single": statistics.median(single),
            "processes": processes, "verifications": sum(counts),
            "verifications_per_s": sum(counts) / seconds, "wall_s": wall}


def insert_floor(url: str, n: int = 50) -> dict:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    timings = []
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE bench_floor_insert (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)"))
        with engine.connect() as conn:
            for i in range(n):
                start = time.perf_counter()
                conn.execute(sa.text("INSERT INTO bench_floor_insert (id, payload) VALUES (:i, :p)"),
                             {"i": i, "p": "x" * 200})
                conn.commit()
                timings.append((time.perf_counter() - start) * 1000)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE bench_floor_insert"))
    finally:
        engine.dispose()
    timings.sort()
    return {"insert_commit_ms_median": statistics.median(timings), "insert_commit_ms_p95": _pct(timings, 0.95)}


# ---------------------------------------------------------------- server

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """gunicorn as `make run` starts it (access log off), on a free port of 127.0.0.1."""

    def __init__(self, tmp: Path, url: str, log: Path):
        self.port = _free_port()
        self.log = log
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "--workers", "2", "--threads", "4", "--bind", f"127.0.0.1:{self.port}",
             "mfg:create_app()"], cwd=ROOT, env=_env(tmp, url), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_ready(self, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}; see {self.log}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/auth/login")
                if conn.getresponse().status == 200 and len(self.workers()) == 2:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer in time")

    def workers(self) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid:
                pids.append(int(entry))
        return pids

    def worker_memory(self) -> dict[int, dict[str, float]]:
        found = {}
        for pid in self.workers():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            found[pid] = {k: int(fields[k].split()[0]) / 1024 for k in ("VmHWM", "VmRSS") if k in fields}
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the master stops its workers
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


# ---------------------------------------------------------------- simulated operator

class Operator:
    def __init__(self, port: int, username: str):
        self.port, self.username = port, username
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, str, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            if method == "POST":  # what once.js does in a browser: a fresh one-time token per submission
                form = {"submission_token": secrets.token_hex(16), **form}
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    raise
        text = response.read().decode("utf-8", "replace")
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key.strip()] = rest.split(";", 1)[0]
        return response.status, response.getheader("Location") or "", text

    def scrape_csrf(self, text: str) -> str:
        match = CSRF_RE.search(text)
        if not match:
            raise RuntimeError("no csrf_token in the page")
        return match.group(1) or match.group(2)

    def sign_in(self) -> None:
        status, _, text = self.request("GET", "/auth/login")
        status, location, text = self.request("POST", "/auth/login", {
            "csrf_token": self.scrape_csrf(text), "username": self.username, "password": PASSWORD})
        if status != 302:
            raise RuntimeError(f"{self.username}: sign-in answered {status}")
        # the session is cleared at sign-in: the token comes from a page served after it
        status, _, text = self.request("GET", "/batches/")
        if status != 200:
            raise RuntimeError(f"{self.username}: /batches/ answered {status}")
        self.csrf = self.scrape_csrf(text)

    def start_batch(self) -> int:
        status, location, text = self.request("POST", "/batches/start", {"csrf_token": self.csrf, "code": "DEMO-PROC"})
        match = re.search(r"/batches/(\d+)$", location)
        if status != 302 or not match:
            raise BatchStartFailed(status, location)
        return int(match.group(1))

    def sign_step(self, batch_id: int) -> tuple[int, str, str]:
        from datetime import datetime, timezone

        return self.request("POST", f"/batches/{batch_id}/step/0/line_clearance/1", {
            "csrf_token": self.csrf, "v_area_clear": "y", "v_cabinet": "BSC-01",
            "v_started_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "username": self.username, "password": PASSWORD})


class BatchStartFailed(Exception):
    pass


def _snippet(text: str) -> str:
    found = [re.sub(r"\s+", " ", m).strip() for m in FLASH_RE.findall(text)]
    found = [f for f in found if f]
    if found:
        return " | ".join(found[:3])[:200]
    title = re.search(r"<title>(.*?)</title>", text, re.S)
    return (title.group(1).strip() if title else re.sub(r"\s+", " ", text)[:120])[:200]


def run_level(port: int, names: list[str], seconds: float) -> dict:
    n = len(names)
    stop_at = [0.0]
    clock: dict[str, float] = {}

    def go() -> None:  # run by the last thread to arrive, before any is released
        clock["cpu0"], clock["t0"] = time.process_time(), time.perf_counter()
        stop_at[0] = clock["t0"] + seconds

    ready = threading.Barrier(n + 1, action=go)
    lock = threading.Lock()
    latencies: list[float] = []
    start_latencies: list[float] = []
    statuses: Counter = Counter()
    in_window = [0]
    problems: Counter = Counter()
    setup_errors: list[str] = []

    def work(name: str) -> None:
        op = Operator(port, name)
        try:
            op.sign_in()
            batch_id = op.start_batch()
        except Exception as exc:  # noqa: BLE001 - reported, not hidden
            setup_errors.append(f"{name}: {exc!r}")
            ready.abort()
            return
        ready.wait()
        mine, mine_starts = [], []
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                status, location, text = op.sign_step(batch_id)
            except Exception as exc:  # noqa: BLE001
                with lock:
                    statuses["exception"] += 1
                    problems[f"step: {exc!r}"[:200]] += 1
                op = Operator(port, name)
                op.sign_in()
                batch_id = op.start_batch()
                continue
            elapsed = (time.perf_counter() - t0) * 1000
            ok = status == 302 and re.search(rf"/batches/{batch_id}$", location) is not None
            with lock:
                statuses[f"step {status}" + ("" if ok or status != 302 else f" -> {location}")] += 1
                if not ok:
                    problems[f"step {status}: {_snippet(text) if status != 302 else location}"] += 1
            if ok:
                mine.append(elapsed)
                if time.perf_counter() <= stop_at[0]:
                    with lock:
                        in_window[0] += 1
            if time.perf_counter() >= stop_at[0]:
                break
            t1 = time.perf_counter()
            try:
                batch_id = op.start_batch()
                mine_starts.append((time.perf_counter() - t1) * 1000)
            except BatchStartFailed as exc:
                with lock:
                    statuses[f"start {exc.args[0]}"] += 1
                    problems[f"batch start {exc.args[0]} -> {exc.args[1]}"] += 1
        with lock:
            latencies.extend(mine)
            start_latencies.extend(mine_starts)

    threads = [threading.Thread(target=work, args=(name,), daemon=True) for name in names]
    for t in threads:
        t.start()
    try:
        ready.wait(timeout=120)
    except threading.BrokenBarrierError as broken:
        for t in threads:
            t.join(timeout=5)
        raise RuntimeError(f"operators could not get ready: {setup_errors}") from broken
    cpu0, t0 = clock["cpu0"], clock["t0"]
    for t in threads:
        t.join(timeout=seconds + 120)
    wall = time.perf_counter() - t0
    client_cpu = time.process_time() - cpu0
    latencies.sort()
    start_latencies.sort()
    return {"operators": n, "seconds": wall, "signed_steps": len(latencies),
            "steps_per_s": in_window[0] / seconds,  # completed inside the fixed window
            "steps_per_s_incl_drain": len(latencies) / wall,  # all completed, over the window plus the drain
            "p50_ms": statistics.median(latencies) if latencies else None,
            "p95_ms": _pct(latencies, 0.95), "max_ms": latencies[-1] if latencies else None,
            "batch_start_p50_ms": statistics.median(start_latencies) if start_latencies else None,
            "batch_start_p95_ms": _pct(start_latencies, 0.95),
            "statuses": dict(statuses), "problems": dict(problems.most_common(10)),
            "client_cpu_fraction_of_one_core": client_cpu / wall}


def _pct(values: list[float], q: float) -> float | None:
    return values[int(q * (len(values) - 1))] if values else None


def _log_findings(log: Path) -> dict:
    text = log.read_text(errors="replace") if log.exists() else ""
    keys = ("Traceback", "database is locked", "OperationalError", "IntegrityError", "WORKER TIMEOUT",
            "Exception on ", "SerializationFailure", "deadlock", "[ERROR]", "[CRITICAL]")
    return {k: text.count(k) for k in keys if text.count(k)}


# ---------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default="1,5,20")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--floor-seconds", type=float, default=8)
    parser.add_argument("--database-url")
    parser.add_argument("--json")
    parser.add_argument("--keep-log", help="copy the gunicorn log here")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    kind = "postgresql" if args.database_url else "sqlite"
    tmp = Path(tempfile.mkdtemp(prefix="mfg-load-"))
    url, drop = _database(args.database_url, tmp)
    log = tmp / "gunicorn.log"
    result: dict = {"database": kind, "cpus": os.cpu_count(), "levels": []}
    server = None
    try:
        names = prepare_instance(tmp, url, max(levels))
        result["floor"] = argon2_floor(args.floor_seconds)
        result["floor"].update(insert_floor(url))
        result["floor"]["one_step_floor_ms"] = (result["floor"]["verify_ms_single"]
                                                + result["floor"]["insert_commit_ms_median"])
        argon_rate = result["floor"]["verifications_per_s"]
        for n in levels:
            server = Server(tmp, url, log)
            server.wait_ready()
            level = run_level(server.port, names[:n], args.seconds)
            memory = server.worker_memory()
            level["worker_peak_rss_mb"] = {str(pid): round(m["VmHWM"], 1) for pid, m in memory.items()}
            level["max_worker_peak_rss_mb"] = max((m["VmHWM"] for m in memory.values()), default=None)
            level["ratio_to_argon2_floor"] = level["steps_per_s"] / argon_rate
            server.stop()
            server = None
            result["levels"].append(level)
            print(f"[{kind}] {n:>2} operators: {level['signed_steps']} signed steps, "
                  f"{level['steps_per_s']:.2f}/s, statuses {level['statuses']}", file=sys.stderr, flush=True)
        result["server_log_findings"] = _log_findings(log)
    finally:
        if server is not None:
            server.stop()
        if args.keep_log and log.exists():
            shutil.copy(log, args.keep_log)
        try:
            drop()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def _fmt(value, spec=".1f") -> str:
    return "–" if value is None else format(value, spec)


def _report(result: dict) -> None:
    f = result["floor"]
    print(f"\n### Signed step submit under load: {result['database']} (gunicorn 2 workers × 4 threads, "
          f"{result['cpus']} CPUs)\n")
    print(f"Floor (same process): argon2 verify {f['verify_ms_single']:.1f} ms ({f['hash_parameters']}); "
          f"committed insert {f['insert_commit_ms_median']:.2f} ms (p95 {f['insert_commit_ms_p95']:.2f}); "
          f"one step floor {f['one_step_floor_ms']:.1f} ms; argon2 alone in {f['processes']} processes: "
          f"{f['verifications_per_s']:.2f} verifications/s (target 70 %: {0.7 * f['verifications_per_s']:.2f}/s)\n")
    print("| operators | signed steps | p50 ms | p95 ms | steps/s in window (incl. drain) | ratio to argon2 floor "
          "| peak worker RSS MB | batch start p50 ms | client CPU | non-success |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for lv in result["levels"]:
        bad = {k: v for k, v in lv["statuses"].items() if k != "step 302"}
        print(f"| {lv['operators']} | {lv['signed_steps']} | {_fmt(lv['p50_ms'])} | {_fmt(lv['p95_ms'])} "
              f"| {lv['steps_per_s']:.2f} ({lv['steps_per_s_incl_drain']:.2f}) | {lv['ratio_to_argon2_floor']:.0%} "
              f"| {_fmt(lv['max_worker_peak_rss_mb'])} "
              f"| {_fmt(lv['batch_start_p50_ms'])} | {lv['client_cpu_fraction_of_one_core']:.0%} "
              f"| {bad or '–'} |")
    for lv in result["levels"]:
        if lv["problems"]:
            print(f"\n{lv['operators']} operators, problems: {json.dumps(lv['problems'], indent=1)}")
    if result.get("server_log_findings"):
        print(f"\nServer log: {result['server_log_findings']}")


if __name__ == "__main__":
    main()
