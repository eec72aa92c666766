"""The application served for real, for fault tests: a temporary instance, gunicorn started as `make run`
starts it, and operators that speak plain HTTP to it (own cookies, CSRF tokens scraped from the forms).

Everything is bounded: every wait has a timeout, every socket has one, and ``Gunicorn`` is a context
manager that kills its whole process group on the way out, whatever happened.
"""

from __future__ import annotations

import http.client
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

from mfg.config import RESOURCE_ROOT
from tests.support import AUDIT_KEY_RING

BIN = Path(sys.executable).parent  # the virtual environment's bin/, where flask and gunicorn live
OPERATOR_PASSWORD = "fault-test-password-2026"
CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')


def instance_env(instance: Path, database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["MFG_INSTANCE_PATH"] = str(instance)
    env["MFG_DATABASE_URL"] = database_url
    env.pop("FLASK_APP", None)
    return env


def run_cli(instance: Path, database_url: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """``flask --app mfg ARGS`` in its own process, as an administrator runs it."""
    return subprocess.run([str(BIN / "flask"), "--app", "mfg", *args], cwd=RESOURCE_ROOT,
                          env=instance_env(instance, database_url), capture_output=True, text=True,
                          timeout=timeout, check=False)


def run_clis(instance: Path, database_url: str, *commands: tuple[str, ...],
             timeout: float = 90) -> list[tuple[int, str, str]]:
    """Several ``flask --app mfg`` commands at once (each starts the app: seconds of imports);
    (exit code, stdout, stderr) of each, in order."""
    procs = [subprocess.Popen([str(BIN / "flask"), "--app", "mfg", *command], cwd=RESOURCE_ROOT,
                              env=instance_env(instance, database_url), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for command in commands]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def init_instance(instance: Path, database_url: str, site_material: Path | None = None) -> None:
    """`flask --app mfg init --demo` on a new instance folder (as `make run` does). ``site_material``
    (key.pem, cert.pem) spares generating the site's RSA key."""
    instance.mkdir(parents=True, exist_ok=True)
    if site_material is not None:
        signing = instance / "signing"
        signing.mkdir(exist_ok=True)
        shutil.copy(site_material / "key.pem", signing / "site-key.pem")
        shutil.copy(site_material / "cert.pem", signing / "site-cert.pem")
    # the test database's trail is sealed with the tests' audit key ring (tests/conftest.py): the instance's
    key_file = instance / "audit.key"
    if not key_file.exists():
        shutil.copy(AUDIT_KEY_RING, key_file)
        key_file.chmod(0o600)
    out = run_cli(instance, database_url, "init", "--demo", timeout=180)
    if out.returncode:
        raise RuntimeError(f"flask init --demo failed:\n{out.stdout}\n{out.stderr}")


def create_operators(instance: Path, database_url: str, names: Iterable[str]) -> None:
    """Operator accounts with ``OPERATOR_PASSWORD``, through the account service, committed."""
    from mfg import create_app
    from mfg.extensions import db
    from mfg.services import accounts, audit

    app = create_app({"INSTANCE_PATH": instance, "DATABASE_URL": database_url})
    try:
        with app.app_context():
            session = db.session
            audit.set_actor(session, name="tests/faults")
            for name in names:
                accounts.create_user_at_setup(session, username=name, full_name=f"Fault Operator {name}",
                                              roles="operator", password=OPERATOR_PASSWORD, policy=accounts.Policy())
            session.commit()
    finally:
        app.extensions["mfg.db"].engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> Iterator[tuple[int, str, int, int]]:
    """(pid, state, parent pid, process group) of every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        yield int(entry), state, int(ppid), int(pgrp)


def _children(pid: int) -> list[int]:
    return sorted(p for p, state, ppid, _ in _processes() if ppid == pid and state != "Z")


def _group(pgid: int) -> list[int]:
    return sorted(p for p, state, _, pgrp in _processes() if pgrp == pgid and state != "Z")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Gunicorn:
    """``gunicorn --workers 2 --threads 4 --bind 127.0.0.1:PORT 'mfg:create_app()'`` (as `make run`, access
    log off), in a process group of its own so that one signal reaches the master and its workers."""

    def __init__(self, instance: Path, database_url: str, log: Path, port: int | None = None,
                 env: dict[str, str] | None = None):
        self.instance, self.database_url, self.log_path = instance, database_url, log
        self.env = env or {}  # MFG_* settings of this run only
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self._log = None

    def __enter__(self) -> Gunicorn:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.kill()

    def start(self, timeout: float = 60) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "--workers", "2", "--threads", "4", "--bind", f"127.0.0.1:{self.port}",
             "mfg:create_app()"], cwd=RESOURCE_ROOT, env={**instance_env(self.instance, self.database_url), **self.env},
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if len(self.workers()) == 2:
                try:
                    status, _, _ = Client(self.port, timeout=5).request("GET", "/auth/login")
                except (OSError, http.client.HTTPException):
                    status = None
                if status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within {timeout} s:\n{self.log_text()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def workers(self) -> list[int]:
        return _children(self.pid) if self.proc is not None else []

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the master, which stops its workers gracefully; SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def kill(self) -> list[int]:
        """SIGKILL to the whole process group (master and workers); returns the pids it reached. Waits
        (bounded) until none of them runs any more."""
        if self.proc is None:
            return []
        pgid = self.proc.pid  # start_new_session: the master leads its own group
        # While a member lives, the group id cannot be reused: signal it only then.
        pids = _group(pgid)
        try:
            if pids:
                os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
            end = time.monotonic() + 30
            while _group(pgid) and time.monotonic() < end:
                time.sleep(0.05)
            assert not _group(pgid), f"gunicorn processes {_group(pgid)} survived SIGKILL"
        finally:
            self.proc = None
            if self._log is not None:
                self._log.close()
                self._log = None
        return pids


class Client:
    """One user agent: its own cookies, a new connection per request (so a stale keep-alive connection
    is never mistaken for a refused request, and nothing is ever sent twice)."""

    def __init__(self, port: int, timeout: float = 30):
        self.port, self.timeout = port, timeout
        self.cookies: dict[str, str] = {}
        self.csrf = ""
        self.username = ""

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, str, str]:
        headers = {"Connection": "close"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            if method == "POST":  # what once.js does in a browser: a fresh one-time token per submission
                form = {"submission_token": secrets.token_hex(16), **form}
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
        finally:
            conn.close()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key.strip()] = rest.split(";", 1)[0]
        return response.status, response.getheader("Location") or "", text

    @staticmethod
    def scrape_csrf(text: str) -> str:
        match = CSRF_RE.search(text)
        if not match:
            raise AssertionError("no csrf_token in the page")
        return match.group(1) or match.group(2)

    def sign_in(self, username: str, password: str = OPERATOR_PASSWORD) -> None:
        self.username = username
        _, _, text = self.request("GET", "/auth/login")
        status, location, text = self.request("POST", "/auth/login", {
            "csrf_token": self.scrape_csrf(text), "username": username, "password": password})
        if status != 302:
            raise AssertionError(f"{username}: sign-in answered {status}: {text[:500]}")
        # the session is renewed at sign-in: the token comes from a page served after it
        status, _, text = self.request("GET", "/batches/")
        if status != 200:
            raise AssertionError(f"{username}: /batches/ answered {status}")
        self.csrf = self.scrape_csrf(text)

    def start_batch(self) -> int:
        status, location, text = self.request("POST", "/batches/start", {"csrf_token": self.csrf, "code": "DEMO-PROC"})
        match = re.search(r"/batches/(\d+)$", location)
        if status != 302 or not match:
            raise AssertionError(f"batch start answered {status} -> {location!r}: {text[:500]}")
        return int(match.group(1))

    def sign_line_clearance(self, batch_id: int, password: str = OPERATOR_PASSWORD) -> tuple[int, str, str]:
        """Record and sign DEMO-PROC's first step; (status, Location, body)."""
        return self.request("POST", f"/batches/{batch_id}/step/0/line_clearance/1", {
            "csrf_token": self.csrf, "v_area_clear": "y", "v_cabinet": "BSC-01",
            "v_started_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "username": self.username, "password": password})


def acknowledged(batch_id: int, status: int, location: str) -> bool:
    """A signed step counts as stored only when answered 302 to its batch page."""
    return status == 302 and re.search(rf"/batches/{batch_id}$", location) is not None
