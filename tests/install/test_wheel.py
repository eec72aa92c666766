"""The built package works where a site installs it: a wheel built from this checkout, installed from the
lock into a new virtual environment outside the checkout, initialises a demo instance, lists its master
records, serves every page (through gunicorn and by following every link as each demo user), writes a
signed batch record, and qualifies; then a package at another version fails the qualification.

Needs the package registry (PyPI), as `make install` does; pip's cache makes it quick after `make install`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from mfg.config import RESOURCE_ROOT, RUN_LOCK
from mfg.demo.seed import DEMO_PASSWORD
from mfg.domain import lockfile

CRAWL = Path(__file__).with_name("crawl.py")
NK_RECORDS = ("NK-EXPAND", "NK-FORMULATE", "NK-INTAKE", "NK-RELEASE")


def _run(*command: str, cwd: Path, env: dict[str, str], timeout: int = 600, check: bool = True
         ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(the new environment's bin folder, a working folder outside the checkout, its environment variables)."""
    root = tmp_path_factory.mktemp("wheel")
    assert not root.is_relative_to(RESOURCE_ROOT)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MFG_", "PYTHON", "VIRTUAL_ENV", "FLASK_"))}
    env["PYTHONNOUSERSITE"] = "1"
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir",
         str(root / "dist"), str(RESOURCE_ROOT), cwd=root, env=env)
    (wheel,) = (root / "dist").glob("mfg-*.whl")
    _run(sys.base_prefix + "/bin/python3", "-m", "venv", str(root / "venv"), cwd=root, env=env)
    bin_dir = root / "venv" / "bin"
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    # as README.md tells a site, and as `make install` does
    _run(str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--require-hashes", "--only-binary", ":all:", "-r", str(RUN_LOCK), cwd=root, env=env)
    _run(str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         str(wheel), cwd=root, env=env)
    _run(str(bin_dir / "python"), "-m", "pip", "check", cwd=root, env=env)
    return bin_dir, root, env


def test_the_wheel_carries_templates_master_records_migrations_and_the_lock(installed):
    _bin, root, _env = installed
    (wheel,) = (root / "dist").glob("mfg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("templates", "sops"):
        for path in (RESOURCE_ROOT / folder).rglob("*"):
            if path.is_file():
                assert f"mfg/{path.relative_to(RESOURCE_ROOT)}" in names, path
    assert "mfg/requirements/run.lock" in names and "mfg/static/app.css" in names
    migrations = (RESOURCE_ROOT / "mfg" / "migrations" / "versions").glob("*.py")
    assert {f"mfg/migrations/versions/{p.name}" for p in migrations} <= names
    assert not any(name.startswith(("tests/", "bench/", "instance/")) for name in names)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_installed_wheel_sets_up_serves_every_page_and_qualifies(installed):
    bin_dir, root, env = installed
    flask = str(bin_dir / "flask")
    work = root / "work"  # the current folder: nothing of the checkout is reachable from here
    work.mkdir()

    init = _run(flask, "--app", "mfg", "init", "--demo", cwd=work, env=env)
    instance = root / "venv" / "var" / "mfg-instance"  # an installed package's default instance folder
    assert (instance / "config.py").is_file() and (instance / "mfg.sqlite3").is_file()
    for code in NK_RECORDS:
        assert f"loaded and approved {code} v1" in init.stdout
    listed = _run(flask, "--app", "mfg", "sops", "list", cwd=work, env=env).stdout.splitlines()
    effective = {line.split("\t")[0] for line in listed if line.split("\t")[2] == "effective"}
    assert set(NK_RECORDS) <= effective, listed

    port, log = _free_port(), root / "gunicorn.log"
    with log.open("w") as output, subprocess.Popen(
            [str(bin_dir / "gunicorn"), "--workers", "1", "--bind", f"127.0.0.1:{port}", "mfg:create_app()"],
            cwd=work, env=env, stdout=output, stderr=output) as server:
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/auth/login", timeout=5) as response:
                        page = response.read().decode()
                    break
                except OSError:
                    assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                    time.sleep(0.3)
            assert "Sign in" in page and "DEMO" in page
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/app.css", timeout=5) as response:
                assert response.status == 200 and b"DejaVu Sans" in response.read()
        finally:
            server.terminate()
            server.wait(timeout=30)

    documents = _run(flask, "--app", "mfg", "demo-batch", "--out", str(root / "documents"), cwd=work, env=env)
    assert "conditionally released" in documents.stdout
    crawl = json.loads(_run(str(bin_dir / "python"), str(CRAWL), DEMO_PASSWORD, cwd=work, env=env).stdout)
    assert crawl["failures"] == []
    routes = {"main.index", "batches.index", "batches.show", "batches.execution", "batches.step",
              "batches.growth_chart", "custody.show", "documents.index", "documents.download", "review.index",
              "review.batch", "review.deviation", "clinical.index", "clinical.subject", "clinical.donor",
              "sops.index", "sops.show", "masterdata.index", "audit_trail.index", "admin.users", "admin.user",
              "admin.create_user", "auth.change_password", "static"}
    assert routes - set(crawl["reached"]) == set()

    qualified = _run(flask, "--app", "mfg", "qualify", "--out", str(root / "iq"), cwd=work, env=env)
    assert "QUALIFICATION PASSED: 9 of 9 checks" in qualified.stdout
    (report,) = (root / "iq").glob("IQ-*.pdf")
    verified = _run(flask, "--app", "mfg", "verify-pdf", str(report), cwd=work, env=env)
    assert "VALID" in verified.stdout and "installation qualification of" in verified.stdout

    # a package at another version than the lock's: the qualification fails and names it
    locked = lockfile.parse(RUN_LOCK.read_text()).pins["itsdangerous"]
    other = "2.1.2" if locked != "2.1.2" else "2.1.1"
    _run(str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         f"itsdangerous=={other}", cwd=work, env=env)
    failed = _run(flask, "--app", "mfg", "qualify", "--out", str(root / "iq-2"), cwd=work, env=env, check=False)
    assert failed.returncode == 1
    assert f"itsdangerous {other} is installed; the lock has {locked}" in failed.stderr
    assert "QUALIFICATION FAILED: 1 of 9 checks: Installed packages equal the lock" in failed.stderr

