"""The demo's cohort ledger (issue [3.7] item 8): ``init --demo`` makes two cohorts at different levels (NK-011 to
NK-013 at DL1, NK-001 at DL2, each level opened by a signed decision); the ``cohorts`` scenario infuses NK-001,
records one DLT and signs the decision that follows, as the rule recommends. Both databases."""

from __future__ import annotations

import sqlalchemy as sa

from mfg.demo import scenarios
from mfg.extensions import db
from mfg.models import DltEvent, Signature
from mfg.services import trial
from tests.support import assert_audit_intact

from .test_lifecycle import act, demo_site  # noqa: F401 - the fixture


def test_the_demo_has_two_cohorts_one_dlt_and_the_decision_that_follows(demo_site):  # noqa: F811
    book = trial.ledger(db.session)
    assert [(r.subject.code, r.level, r.cohort) for r in book.rows] == [
        ("NK-011", "DL1", 1), ("NK-012", "DL1", 1), ("NK-013", "DL1", 1), ("NK-001", "DL2", 2)]
    assert [(d.action, d.level) for d, _ in book.decisions] == [("start", "DL1"), ("escalate", "DL2")]
    assert book.decisions[1][0].reason.startswith("DEMO: ")  # escalated before DL1 was evaluable, and says so

    outcome = scenarios.cohorts(act, demo_site)
    assert "DLT recorded for NK-001: Cytokine release syndrome, grade 3" in outcome.notes
    assert "safety review: stay at DL2 (recommended wait)" in outcome.notes
    book = trial.ledger(db.session)
    nk001 = next(r for r in book.rows if r.subject.code == "NK-001")
    assert nk001.status == "DLT" and nk001.infused_at is not None and nk001.achieved_nk_per_kg is not None
    assert book.counts["DL2"] == trial.escalation.LevelCounts(1, 1, 0)
    last, signature = book.decisions[-1]
    assert (last.action, last.level, last.recommendation, len(book.decisions)) == ("stay", "DL2", "wait", 3)
    assert (signature.username, signature.meaning) == ("clinical2", "approved")
    [event] = db.session.scalars(sa.select(DltEvent))
    assert db.session.scalar(sa.select(Signature.username).where(
        Signature.record_type == "dlt_event", Signature.record_id == str(event.id))) == "clinical1"
    assert (book.open.level, book.open.cohort, book.open.assigned) == ("DL2", 3, 0)
    assert_audit_intact(db.session)
