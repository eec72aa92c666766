"""The batch page's version (``batch_pages.page_version``, polled by the open page, which reloads itself when it
changes) changes with everything the page shows or that changes what it shows, not only with the steps: a
document issued, a bag infused (custody), a pending result entered and verified, a clinical alert acknowledged,
QA's decision; and "updated by" names whoever signed last on any of them. On SQLite and PostgreSQL.

Each change below leaves the batch row and its steps as they were, so only the new parts of the version can see
it (asserted: the batch's status and row version, and the steps' versions, do not move)."""

from __future__ import annotations

import sqlalchemy as sa

from mfg.demo import scenarios
from mfg.extensions import db
from mfg.models import Batch, StepExecution
from mfg.services import bags, batch_pages, documents, lifecycle, results

from .test_lifecycle import _sign, _user, act, demo_site  # noqa: F401 - the fixture

NEGATIVE_PRELIMINARY = scenarios.NEGATIVE["preliminary"]


def _steps(batch: Batch) -> tuple:
    return (batch.status, batch.row_version, *db.session.execute(sa.select(
        sa.func.count(StepExecution.id), sa.func.sum(StepExecution.row_version)).where(
        StepExecution.batch_id == batch.id)).one())


class Versions:
    """The versions seen of one batch's page: each new one must differ from all before it."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.seen = [batch_pages.page_version(db.session, batch)]

    def changed(self, by: str | None = None) -> None:
        db.session.expire_all()
        found = batch_pages.page_version(db.session, self.batch)
        assert found.token not in {v.token for v in self.seen}, (found, self.seen)
        if by is not None:
            assert found.by == _user(by).full_name
        self.seen.append(found)


def _batch(lot: str) -> Batch:
    return db.session.scalars(sa.select(Batch).where(Batch.lot == lot)).one()


def test_the_batch_page_version_changes_with_documents_custody_alerts_and_decisions(demo_site):  # noqa: F811
    batch = _batch(scenarios.conditional(act, demo_site, subject_code="NK-002", dose_level="DL4").lot)
    first, _second = bags.of_batch(db.session, batch)
    versions = Versions(batch)
    assert versions.seen[0].by == _user("qa1").full_name  # the conditional release: QA's signature on the batch

    steps = _steps(batch)
    # a reprint of the labels: a document issued
    act("operator1", lambda s: documents.print_labels(s, batch, reason="label damaged", site=demo_site.site,
                                                      demo=demo_site.demo, **_sign("operator1")))
    versions.changed("operator1")
    # a bag infused after the two-person bedside check: a custody event (the bag's state on the clinic's side)
    scenarios._infuse(act, demo_site, batch.lot, first.division)
    versions.changed("clinical2")
    db.session.expire_all()
    assert _steps(batch) == steps  # neither touched the batch row or its steps

    # the culture flags growth: under investigation (the batch moves), then the clinic acknowledges its alert
    scenarios._enter_sterility(act, demo_site, batch.lot, scenarios.POSITIVE, comment="bottle flagged positive")
    versions.changed("operator2")
    steps = _steps(batch)
    [alert] = lifecycle.alerts_of(db.session, batch)
    act("clinical2", lambda s: lifecycle.acknowledge(s, alert, **_sign("clinical2")))
    versions.changed("clinical2")
    db.session.expire_all()
    assert _steps(batch) == steps

    # QA rejects the batch: QA's signature on the batch is the newest; then its documents exist (the page's
    # "being prepared" notice goes)
    act("qa1", lambda s: documents.decide_and_request_documents(s, batch, decision="rejected", comment="positive",
                                                                tz=demo_site.tz, **_sign("qa1")))
    versions.changed("qa1")
    steps = _steps(batch)
    demo_site.make_documents()
    versions.changed()
    db.session.expire_all()
    assert _steps(batch) == steps


def test_the_batch_page_version_changes_with_a_result_entered_and_verified(demo_site):  # noqa: F811
    """A pending result filled in later (the preliminary read, 15 days after the process), then verified."""
    batch = _batch(scenarios.conditional(act, demo_site, days_back=15).lot)
    versions = Versions(batch)
    steps = _steps(batch)
    [preliminary] = [p for p in results.of_batch(db.session, batch)
                     if NEGATIVE_PRELIMINARY in (results.answers(results.field_of(db.session, p)) or [])]
    act("operator1", lambda s: results.enter_result(s, preliminary, raw=NEGATIVE_PRELIMINARY, comment="",
                                                    tz=demo_site.tz, **_sign("operator1")))
    versions.changed("operator1")
    act("operator2", lambda s: results.verify_result(s, preliminary, **_sign("operator2")))
    versions.changed("operator2")
    db.session.expire_all()
    assert _steps(batch) == steps
