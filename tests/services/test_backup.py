"""`flask --app mfg backup`: a consistent online copy, its checksum, and a restore round trip on both
databases (SQLite: the copy opened as the app's database; PostgreSQL: pg_restore into a fresh database)."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from mfg import backup, create_app, db_roles
from mfg.extensions import db, make_engine
from mfg.models import User
from mfg.services import accounts, audit
from tests.support import owner_url

PG_URL = os.environ.get("MFG_TEST_DATABASE_URL", "").strip()
_databases = itertools.count(1)


def _usernames(session: Session) -> set[str]:
    return set(session.scalars(sa.select(User.username)))


@contextmanager
def _restored(database_url: str, backup_file: Path, tmp_path: Path) -> Iterator[str]:
    """Restore ``backup_file`` to a fresh location, as README.md describes; yield its DATABASE_URL."""
    if database_url.startswith("sqlite"):
        # Stand-in for "stop the server and copy the file over the database path".
        target = tmp_path / "restored" / "mfg.sqlite3"
        target.parent.mkdir()
        target.write_bytes(backup_file.read_bytes())
        yield f"sqlite:///{target}"
        return
    url = sa.engine.make_url(database_url)
    # with two PostgreSQL roles, restored as the owner role, then `init`'s grants (README: Backup and restore)
    owner = sa.engine.make_url(owner_url(database_url))
    name = f"mfg_restore_{os.getpid()}_{next(_databases)}"
    admin = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" OWNER "{owner.username}"'))
    try:
        fresh, fresh_owner = url.set(database=name), owner.set(database=name)
        pg_restore = backup.find_pg_tool("pg_restore")
        assert pg_restore, "pg_restore not found"
        restored = subprocess.run([pg_restore, "--exit-on-error", "--no-owner", "--no-password", f"--dbname={name}",
                                   str(backup_file)], env=backup.pg_environment(fresh_owner), check=False,
                                  capture_output=True, text=True)
        assert restored.returncode == 0, restored.stderr
        if fresh_owner != fresh:
            db_roles.setup(fresh_owner.render_as_string(hide_password=False),
                           fresh.render_as_string(hide_password=False))
        yield fresh.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_backup_round_trip_holds_only_committed_data(app, make_user, database_url, tmp_path):
    make_user("olivia")
    make_user("quentin", "qa")
    with app.app_context():
        audit.set_actor(db.session, name="test-setup")
        audit.record_event(db.session, "backup_test_event", details={"n": 1})
        db.session.commit()

    # Another connection is mid-transaction (rows written, not committed) while the backup runs.
    writer = db.new_session(app)
    audit.set_actor(writer, name="uncommitted-writer")
    accounts.create_user(writer, username="ghost", full_name="Ghost Writer", roles="operator",
                         password="a-long-secret-1", policy=accounts.Policy())
    writer.flush()
    try:
        out = tmp_path / "backups"
        result = app.test_cli_runner().invoke(args=["backup", "--out", str(out)])
    finally:
        writer.rollback()
        writer.close()
    assert result.exit_code == 0, result.output

    files = sorted(p.name for p in out.iterdir())
    suffix = "sqlite3" if database_url.startswith("sqlite") else "dump"
    assert len(files) == 2 and re.fullmatch(rf"mfg-backup-\d{{8}}T\d{{6}}Z\.{suffix}", files[0]), files
    backup_file = out / files[0]
    digest = hashlib.sha256(backup_file.read_bytes()).hexdigest()
    assert (out / files[1]).read_text() == f"{digest}  {files[0]}\n"  # sha256sum -c format
    assert str(backup_file) in result.output and digest in result.output
    assert f"({backup_file.stat().st_size} bytes" in result.output
    assert "audit key ring" in result.output and "not in this backup" in result.output  # it is backed up apart
    password = sa.engine.make_url(database_url).password
    assert not password or password not in result.output

    with _restored(database_url, backup_file, tmp_path) as restored_url:
        # the restore puts back the instance's audit key ring from its own, separate backup (README)
        (tmp_path / "restored-instance").mkdir()
        shutil.copy(Path(app.instance_path) / "audit.key", tmp_path / "restored-instance" / "audit.key")
        restored = create_app({"TESTING": True, "SECRET_KEY": "test", "DATABASE_URL": restored_url,
                               "INSTANCE_PATH": tmp_path / "restored-instance",
                               "SOPS_DIR": str(tmp_path)})
        try:
            with restored.app_context():
                assert _usernames(db.session) == {"olivia", "quentin"}  # no "ghost": never committed
                check = audit.verify(db.session)
                assert check.ok, check.problem
                assert check.checked == 3  # two user creations and the event
            verified = restored.test_cli_runner().invoke(args=["audit", "verify"])
            assert verified.exit_code == 0 and "3 entries checked" in verified.output, verified.output
        finally:
            restored.extensions["mfg.db"].engine.dispose()


def test_backup_refuses_to_overwrite(app, database_url, tmp_path):
    moment = datetime(2026, 11, 26, 19, 30, tzinfo=timezone.utc)
    first = backup.backup(database_url, tmp_path / "b", now=moment)
    assert first.path.name.startswith("mfg-backup-20261126T193000Z.")
    assert first.size == first.path.stat().st_size > 0
    with pytest.raises(backup.BackupError, match="already exists"):
        backup.backup(database_url, tmp_path / "b", now=moment)


def test_sqlite_copy_is_a_single_checked_file(app, database_url, tmp_path):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    result = backup.backup(database_url, tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [result.path.name, result.checksum_path.name]
    copy = sqlite3.connect(result.path)
    try:
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        copy.close()


def test_missing_sqlite_file_and_pg_dump_are_refused(tmp_path, monkeypatch):
    with pytest.raises(backup.BackupError, match="no SQLite database"):
        backup.backup(f"sqlite:///{tmp_path / 'absent.sqlite3'}", tmp_path / "b")
    monkeypatch.setattr(backup, "find_pg_tool", lambda name: None)
    with pytest.raises(backup.BackupError, match="pg_dump not found") as refused:
        backup.backup("postgresql+psycopg://admin:s3cret-pw@db.example/mfg", tmp_path / "b")
    assert "s3cret-pw" not in str(refused.value)
    assert list((tmp_path / "b").iterdir()) == []


def test_pg_connection_settings_stay_off_the_command_line():
    url = sa.engine.make_url("postgresql+psycopg://admin:s3cret-pw@db.example:5433/mfg"
                             "?options=-csearch_path%3Dsite_a&sslmode=require")
    env = backup.pg_environment(url)
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGPASSWORD"], env["PGDATABASE"],
            env["PGSSLMODE"]) == ("db.example", "5433", "admin", "s3cret-pw", "mfg", "require")
    assert backup.url_schemas(url) == ["site_a"]
    assert backup.url_schemas(sa.engine.make_url("postgresql://h/db?options=-c search_path=a,%22$user%22,b")) \
        == ["a", "b"]
    assert backup.url_schemas(sa.engine.make_url("postgresql://h/db")) == []


@pytest.fixture
def open_umask():
    """The usual umask (0022: new files readable by everyone), whatever the test runner's."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_backup_copy_and_checksum_is_owner_only(app, database_url, tmp_path, open_umask):
    result = backup.backup(database_url, tmp_path / "b")
    assert (_mode(tmp_path / "b"), _mode(result.path), _mode(result.checksum_path)) == (0o700, 0o600, 0o600)


def test_the_sqlite_database_and_its_wal_are_owner_only(tmp_path, open_umask):
    """A new database file (as `flask init` creates it), its -wal and -shm files, and an existing file left
    readable by others (an older installation) are all owner-only once the application opens them."""
    fresh, older = tmp_path / "new.sqlite3", tmp_path / "old.sqlite3"
    older.touch(mode=0o644)
    older.chmod(0o644)
    for path in (fresh, older):
        engine = make_engine(f"sqlite:///{path}")
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
                conn.execute(sa.text("INSERT INTO t VALUES (1)"))
                files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
                assert all(f.exists() for f in files)
                assert [_mode(f) for f in files] == [0o600] * 3, path
        finally:
            engine.dispose()
