"""Two operators acting on the same step at the same moment, with real threads and connections."""

from __future__ import annotations

import threading
from zoneinfo import ZoneInfo

from mfg.domain.errors import StepConflict
from mfg.extensions import db
from mfg.models import Batch, Signature, StepExecution, User
from mfg.services import audit, evaluation, signatures, steps
from tests.support import PASSWORD, assert_audit_intact

from .test_batch_engine import GOOD, plant  # noqa: F401 - the fixture


def _race(app, action, n=2):
    """Run ``action(session, i)`` in ``n`` threads released together; collect results or errors."""
    barrier = threading.Barrier(n)
    outcomes: list[object] = [None] * n

    def worker(i):
        with app.app_context():
            session = db.new_session()
            audit.set_actor(session, name=f"thread-{i}")
            try:
                barrier.wait(timeout=30)
                outcomes[i] = action(session, i)
                session.commit()
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                session.rollback()
                outcomes[i] = exc
            finally:
                session.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return outcomes


def test_two_operators_complete_the_same_step_exactly_one_wins(app, plant):  # noqa: F811
    batch_id = plant["batch"].id
    users = [plant["olivia"].id, plant["oscar"].id]

    def perform(session, i):
        batch = session.get(Batch, batch_id)
        signer = session.get(User, users[i])
        audit.set_actor(session, signer)
        return steps.perform_step(session, batch, position=0, step_id="line_clearance", instance=1,
                                    entry=evaluation.StepInput(raw=GOOD["line_clearance"]()), signer=signer,
                                    password=PASSWORD, username=None, require_username=False, tz=ZoneInfo("UTC")).id

    outcomes = _race(app, perform)
    wins = [o for o in outcomes if isinstance(o, int)]
    conflicts = [o for o in outcomes if isinstance(o, StepConflict)]
    assert len(wins) == 1 and len(conflicts) == 1, outcomes
    with app.app_context():
        session = db.new_session()
        (execution,) = session.query(StepExecution).all()
        assert execution.id == wins[0] and len(execution.values) == 3
        assert signatures.check_all(session)[1] == []
        assert_audit_intact(session)
        session.close()


def test_two_verifiers_at_once_no_lost_update(app, plant, make_user):  # noqa: F811
    session = plant["session"]
    from .test_batch_engine import _prepare

    ex = _prepare(plant)
    third = make_user("vera", "operator")
    execution_id, verifiers = ex.id, [plant["oscar"].id, third.id]
    session.close()

    def verify(session, i):
        execution = session.get(StepExecution, execution_id)
        signer = session.get(User, verifiers[i])
        audit.set_actor(session, signer)
        steps.verify_step(session, execution, signer=signer, password=PASSWORD, username=None,
                            require_username=False)
        return signer.id

    outcomes = _race(app, verify)
    wins = [o for o in outcomes if isinstance(o, int)]
    assert len(wins) == 1 and sum(isinstance(o, StepConflict) for o in outcomes) == 1, outcomes
    with app.app_context():
        s = db.new_session()
        execution = s.get(StepExecution, execution_id)
        assert execution.status == "complete"
        assert s.get(Signature, execution.verified_signature_id).user_id == wins[0]
        assert audit.verify(s).ok
        s.close()
