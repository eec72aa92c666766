"""Constants and helpers shared by tests (fixtures live in conftest.py files)."""

from __future__ import annotations

from mfg.config import RESOURCE_ROOT

PASSWORD = "correct-horse-battery"
DEMO_SOP = RESOURCE_ROOT / "sops" / "demo" / "DEMO-PROC_v1.yaml"


def drop_audit_update_guard(engine) -> None:  # noqa: ANN001 - a SQLAlchemy engine
    """What an attacker with database access would do first: drop the trigger that refuses UPDATE on
    audit entries (SQLite has one per operation, PostgreSQL one for UPDATE and DELETE)."""
    import sqlalchemy as sa

    with engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER audit_entry_refuse_update" if engine.dialect.name == "sqlite" else
                             "DROP TRIGGER audit_entry_refuse_change ON audit_entry"))
