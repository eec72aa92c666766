"""Consistent online backups of the application database (``flask --app mfg backup --out DIR``).

SQLite: the SQLite online backup API copies the live file page by page inside one read transaction, so
the copy holds exactly the data committed when it started (the app runs in WAL mode: writers carry on
meanwhile); ``PRAGMA integrity_check`` must then pass on the copy. PostgreSQL: ``pg_dump`` in custom
format (one snapshot), of the URL's schema alone when its ``options`` set a ``search_path``.

Each backup is one file named with the UTC time plus a ``sha256sum``-compatible sidecar
``<file>.sha256``. Passwords never reach argv or output: ``pg_dump`` gets it in ``PGPASSWORD``.
Restore steps are in README.md ("Backup and restore").
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from .files import owner_only


class BackupError(Exception):
    """A backup that could not be made; the message is safe to show (no password)."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    checksum_path: Path
    size: int
    sha256: str
    seconds: float


def backup(database_url: str, out_dir: Path, *, now: datetime | None = None) -> BackupResult:
    """Write a backup of ``database_url`` into ``out_dir`` (created if missing) and its ``.sha256``."""
    url = sa.engine.make_url(database_url)
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(out_dir)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    started = time.monotonic()
    if url.get_backend_name() == "sqlite":
        target = out_dir / f"mfg-backup-{stamp}.sqlite3"
        _refuse_existing(target)
        _sqlite_backup(url, target)
    elif url.get_backend_name() == "postgresql":
        target = out_dir / f"mfg-backup-{stamp}.dump"
        _refuse_existing(target)
        _pg_dump(url, target)
    else:
        raise BackupError(f"no backup method for {url.get_backend_name()} databases")
    digest = file_sha256(target)
    checksum = target.with_name(target.name + ".sha256")
    owner_only(checksum).write_text(f"{digest}  {target.name}\n", encoding="utf-8")
    return BackupResult(target, checksum, target.stat().st_size, digest, time.monotonic() - started)


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _refuse_existing(target: Path) -> None:
    if target.exists() or target.with_name(target.name + ".sha256").exists():
        raise BackupError(f"{target} already exists: not overwritten")


# --- SQLite ------------------------------------------------------------------------------------------

def _sqlite_backup(url: sa.URL, target: Path) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError("SQLite backup needs a database file path in DATABASE_URL")
    source_path = Path(database)
    if not source_path.is_file():
        raise BackupError(f"no SQLite database at {source_path}")
    partial = owner_only(target.with_name(target.name + ".partial"))  # the copy is as private as the original
    source = sqlite3.connect(source_path, timeout=30)
    try:
        destination = sqlite3.connect(partial)
        try:
            # pages=-1: the whole database in one step, inside one read transaction of the source.
            source.backup(destination)
            # A self-contained single file (the app switches it back to WAL when it opens it).
            destination.execute("PRAGMA journal_mode=DELETE")
            problems = [row[0] for row in destination.execute("PRAGMA integrity_check")]
        finally:
            destination.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"SQLite backup failed: {exc}") from None
    finally:
        source.close()
    if problems != ["ok"]:
        partial.unlink(missing_ok=True)
        raise BackupError("integrity check of the copy failed: " + "; ".join(problems[:5]))
    partial.rename(target)


# --- PostgreSQL --------------------------------------------------------------------------------------

def find_pg_tool(name: str) -> str | None:
    """``name`` (pg_dump, pg_restore) on PATH, else the newest /usr/lib/postgresql/*/bin copy."""
    found = shutil.which(name)
    if found:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")

    def version(path: str) -> tuple[int, ...]:
        match = re.search(r"/postgresql/([\d.]+)/", path)
        return tuple(int(part) for part in match.group(1).split(".") if part) if match else ()

    return max(candidates, key=version) if candidates else None


def url_schemas(url: sa.URL) -> list[str]:
    """The schemas named by a ``-csearch_path=...`` (or ``-c search_path=...``) in the URL's options."""
    options = url.query.get("options")
    if isinstance(options, tuple):
        options = " ".join(options)
    if not options:
        return []
    match = re.search(r"-c\s*search_path\s*=\s*(\S+)", options)
    if not match:
        return []
    schemas = [part.strip().strip('"') for part in match.group(1).split(",")]
    return [s for s in schemas if s and s != "$user"]


def pg_environment(url: sa.URL) -> dict[str, str]:
    """libpq environment for the URL: connection settings go here rather than on the command line."""
    env = dict(os.environ)
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGOPTIONS"):
        env.pop(name, None)
    settings = {"PGHOST": url.host or url.query.get("host"), "PGPORT": url.port or url.query.get("port"),
                "PGUSER": url.username, "PGPASSWORD": url.password, "PGDATABASE": url.database,
                "PGSSLMODE": url.query.get("sslmode")}
    env.update({key: str(value) for key, value in settings.items() if value not in (None, "")})
    return env


def _pg_pattern(schema: str) -> str:
    """An exact-match pg_dump pattern for a schema name (double quotes make it literal)."""
    return '"' + schema.replace('"', '""') + '"'


def _pg_dump(url: sa.URL, target: Path) -> None:
    pg_dump = find_pg_tool("pg_dump")
    if pg_dump is None:
        raise BackupError("pg_dump not found on PATH or in /usr/lib/postgresql/*/bin: "
                          "install the PostgreSQL client tools (same major version as the server)")
    owner_only(target)  # pg_dump writes into it, keeping its mode
    args = [pg_dump, "--format=custom", "--no-password", f"--file={target}"]
    for schema in url_schemas(url):
        args += ["--schema", _pg_pattern(schema)]
    completed = subprocess.run(args, env=pg_environment(url), capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        target.unlink(missing_ok=True)
        message = completed.stderr.strip()
        if url.password:
            message = message.replace(url.password, "***")
        raise BackupError(f"pg_dump failed (exit {completed.returncode}): {message}")
