"""Fixtures of the fault tests: a live instance made by `flask --app mfg init --demo`, and a connection
of the test's own to look at what the application stored."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.faults.live import create_operators, init_instance

OPERATORS = ["faultop1", "faultop2", "faultop3", "faultop4"]


@dataclass
class LiveInstance:
    path: Path
    database_url: str
    operators: list[str]


@pytest.fixture
def live_instance(database_url: str, tmp_path: Path, _site_material: Path) -> LiveInstance:
    """An instance folder as `make run` prepares it (demo data), on the test's database, with four
    operator accounts of the test's own."""
    instance = tmp_path / "live-instance"
    init_instance(instance, database_url, _site_material)
    create_operators(instance, database_url, OPERATORS)
    return LiveInstance(instance, database_url, list(OPERATORS))


@pytest.fixture
def inspect_engine(database_url: str) -> Iterator[sa.Engine]:
    """The test's own engine (no pool): reads what the application stored."""
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def demo_app(app, approved_sop, make_user):
    """In-process app (Flask test client tier) with DEMO-PROC approved, operator ``olivia`` and the
    cabinet BSC-01: enough to start a batch and sign its line clearance."""
    from datetime import date, timedelta

    from mfg.extensions import db
    from mfg.services import audit, masterdata

    make_user("olivia", "operator", full_name="Olivia Operator")
    with app.app_context():
        audit.set_actor(db.session, name="test-setup")
        masterdata.add_equipment(db.session, identifier="BSC-01", equipment_type="biosafety cabinet",
                                 calibration_due=date.today() + timedelta(days=30))
        db.session.commit()
    return app
