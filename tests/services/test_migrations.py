"""The migrations build exactly the schema the models describe (a model change without its migration
would otherwise only show up on a customer's database)."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mfg.domain.audit_chain import GENESIS_HASH, ChainEntry
from mfg.extensions import db
from mfg.migrate import alembic_config
from mfg.models import AuditEntry, AuditHead, Base
from mfg.services import audit
from tests.support import owner_url, upgrade_as_owner


def test_the_migrated_schema_matches_the_models(app):
    engine = app.extensions["mfg.db"].engine
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert differences == []


def test_the_audit_heads_record_of_times_is_filled_from_an_existing_trail(database_url, app_factory):
    """Migration 0010 fills the head's latest time and latest out-of-order time from a trail written before
    it (here, the clock set back from day 3 to day 1), so verify and the date filter agree at once."""
    command.downgrade(alembic_config(owner_url(database_url)), "0009")  # as the schema's owner migrates it
    at = [datetime(2026, 3, day, 9, 30, tzinfo=timezone.utc) for day in (3, 1, 2)]
    prev, rows = GENESIS_HASH, []
    for seq, when in enumerate(at, start=1):
        entry = ChainEntry(seq, when, None, "cli:root", "login.failure", None, None, None, None, None, prev)
        prev = entry.compute_hash()
        rows.append({**entry.content(), "occurred_at": when, "entry_hash": prev})
    engine = sa.create_engine(owner_url(database_url), poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.insert(AuditEntry.__table__), rows)
        conn.execute(sa.text("UPDATE audit_head SET seq = 3, entry_hash = :hash"), {"hash": prev})
    upgrade_as_owner(database_url)
    with engine.connect() as conn:
        head = conn.execute(sa.select(AuditHead.max_at, AuditHead.unordered_at)).one()
    engine.dispose()
    assert tuple(head) == (at[0], at[2])
    app = app_factory()
    with app.app_context():  # a trail written before sealing: verify says so until it is sealed
        result = audit.verify(db.session)
        assert result.checked == 3 and "not sealed" in result.problem
        audit.set_actor(db.session, name="test-setup")
        assert audit.seal_existing(db.session) == audit.Sealed(head_seq=4, vouches_from=4)
        db.session.commit()
        result = audit.verify(db.session)
    assert result.ok and result.checked == 4


def test_migrating_to_head_makes_exactly_the_guards_qualify_checks(app):
    """mfg.migrate.GUARDS lists the guards of the newest schema: the migrations create exactly those
    triggers, as the same code writes their SQL, and every guarded table is a model's."""
    from mfg.migrate import GUARDS, guard_problems, guard_triggers

    engine = app.extensions["mfg.db"].engine
    with engine.connect() as conn:
        assert guard_problems(conn) == []
        names = conn.execute(sa.text(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'" if engine.dialect.name == "sqlite" else
            "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND n.nspname = current_schema()")).scalars()
        assert set(names) == set(guard_triggers(engine.dialect.name))
    assert set(GUARDS) <= set(Base.metadata.tables)
