"""The migrations build exactly the schema the models describe (a model change without its migration
would otherwise only show up on a customer's database)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mfg.models import Base


def test_the_migrated_schema_matches_the_models(app):
    engine = app.extensions["mfg.db"].engine
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert differences == []
