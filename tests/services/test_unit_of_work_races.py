"""The net under the row locks: a race lost at the database is a conflict in the one unit of work, never a 500."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import IntegrityError

from mfg.domain.errors import ConflictError
from mfg.extensions import db
from mfg.models import DonorTest, Equipment, utcnow
from mfg.services import accounts, audit
from mfg.unit_of_work import RACE_LOST, unit_of_work


def test_two_transactions_inserting_the_same_unique_key_one_wins_the_other_is_a_conflict(app):
    """Both pass any check they would make (the barrier) and insert the same equipment identifier: the database's
    unique key lets one commit; the other's unit of work rolls back and raises ``ConflictError(RACE_LOST)``."""
    together = threading.Barrier(2, timeout=20)
    outcomes: list[object] = [None, None]

    def insert(i: int) -> None:
        with app.app_context():
            session = db.new_session()
            audit.set_actor(session, name=f"thread-{i}")
            try:
                together.wait()
                with unit_of_work(session, actor=None, policy=accounts.Policy()):
                    session.add(Equipment(identifier="BSC-RACE", equipment_type="biosafety cabinet",
                                          description="", status="in_service", calibration_due=None))
                    audit.flush(session, reason="equipment registered")
                outcomes[i] = "committed"
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                outcomes[i] = exc
            finally:
                session.close()

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(map(str, outcomes)) == sorted(["committed", RACE_LOST]), outcomes
    assert any(isinstance(o, ConflictError) for o in outcomes)
    with app.app_context():
        assert db.session.query(Equipment).filter_by(identifier="BSC-RACE").count() == 1
        assert audit.verify(db.session).ok


def test_an_integrity_error_that_is_not_a_lost_race_stays_a_bug(app):
    """A foreign key to nothing is a bug, not a race: it keeps its IntegrityError (and its 500 at the web edge)."""
    with app.app_context():
        session = db.new_session()
        audit.set_actor(session, name="test")
        with pytest.raises(IntegrityError):
            with unit_of_work(session, actor=None, policy=accounts.Policy()):
                session.add(DonorTest(donor_id=999_999, test="HBsAg", result="negative", specimen_date=utcnow().date(),
                                      recorded_by_id=999_999))
                session.flush()
        session.close()
