"""The documents outbox (services/document_jobs.py, mfg/document_worker.py) on a real database, no mocks:
a job is claimed by one worker only, a job left by a dead worker is taken again, a failing job is given back
and then given up, its row is audited and what it asks for is immutable, and nothing is issued to the clinic
while the documents of QA's decision are being prepared. The whole path (QA's decision, the worker, the
signed and valid documents) is tests/services/test_documents.py; the web edge, tests/web/test_review_web.py;
a kill -9 of gunicorn before the documents exist, tests/faults/test_kill_documents.py."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from mfg import document_worker
from mfg.domain import guards, lifecycle
from mfg.domain.errors import ValidationFailed
from mfg.extensions import db
from mfg.models import AuditEntry, BatchDecision, DocumentJob, utcnow
from mfg.reports import pdf as pdfs
from mfg.services import audit, batch_pages, custody, document_jobs, documents, starting
from tests.support import PASSWORD, app_refusal, assert_audit_intact, documents_worker


@pytest.fixture
def site(_site_material: Path) -> pdfs.SiteSigner:
    return pdfs.SiteSigner.from_files(_site_material / "key.pem", _site_material / "cert.pem")


@pytest.fixture
def decide(app, session, approved_sop, make_user):
    """Start a DEMO-PROC batch and record QA's "rejected" decision on it with its documents job (committed).
    The decision row is written directly: review.decide's rules are not what these tests are about (the
    whole path through review.decide is tests/services/test_documents.py)."""
    operator = session.merge(make_user("olivia", "operator"))
    quinn = session.merge(make_user("quinn", "qa"))

    def make(decision: str = "rejected") -> SimpleNamespace:
        batch = starting.start_batch(session, codes=["DEMO-PROC"], user=operator)
        record = BatchDecision(batch_id=batch.id, decision=decision, pending=None, comment="test",
                               decided_by_id=quinn.id, decided_at=utcnow())
        session.add(record)
        audit.flush(session)
        job = document_jobs.enqueue(session, batch, record, user=quinn)
        session.commit()
        return SimpleNamespace(batch=batch, job=job, quinn=quinn, operator=operator)

    return make


def _worker_session(app):
    s = db.new_session(app)
    audit.set_actor(s, name="test worker")
    return s


def _claim(app, lease_seconds: float = 120):
    s = _worker_session(app)
    try:
        job = document_jobs.claim(s, worker=f"test {threading.current_thread().name}", lease_seconds=lease_seconds)
        s.commit()
        return None if job is None else (job.id, job.claim_token)
    finally:
        s.close()


def test_the_decision_table_says_which_documents_each_decision_issues():
    assert document_jobs.DECISION_DOCUMENTS == {"released": ("batch_record", "coa"),
                                                "conditionally_released": ("batch_record", "coa"),
                                                "rejected": ("batch_record",),
                                                "under_investigation": ("batch_record",),
                                                "recalled": ("batch_record",)}
    assert set(lifecycle.DECISIONS) <= set(document_jobs.DECISION_DOCUMENTS)  # every decision issues something


def test_a_decision_commits_its_job_pending_and_the_worker_makes_the_documents(app, session, decide, site):
    decided = decide("rejected")
    job = session.get(DocumentJob, decided.job.id)
    assert (job.status, job.kind_list, job.reason, job.attempts) == ("pending", ["batch_record"], "rejected", 0)
    assert documents.revisions(session, decided.batch) == [] and document_jobs.documents_pending(session, decided.batch)

    [outcome] = document_worker.run_pending(documents_worker(app, site))
    assert outcome.job_id == job.id and [d.kind for d in outcome.documents] == ["batch_record"]
    session.expire_all()
    job = session.get(DocumentJob, decided.job.id)
    assert (job.status, job.attempts, job.claim_token) == ("done", 1, None) and job.done_at is not None
    [record] = documents.revisions(session, decided.batch)
    assert (record.revision, record.reason, record.created_by_id) == (1, "rejected", decided.quinn.id)
    assert documents.verify(session, record.content, site.certificate).valid  # signed, intact, the stored one
    assert not document_jobs.documents_pending(session, decided.batch)
    # every state change of the job is in the audit trail, with its reason
    reasons = session.scalars(sa.select(AuditEntry.reason).where(AuditEntry.entity_type == "document_job",
                                                                 AuditEntry.entity_id == str(job.id))
                              .order_by(AuditEntry.seq)).all()
    assert reasons == ["documents of the decision (rejected) requested", "documents job claimed",
                       "documents job done"]
    assert_audit_intact(session)
    assert document_worker.run_pending(documents_worker(app, site)) == []  # nothing left


def test_two_workers_racing_for_one_job_only_one_takes_it(app, decide):
    decide()
    results: list = []
    start = threading.Barrier(2)

    def worker() -> None:
        start.wait()
        results.append(_claim(app))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and sum(r is not None for r in results) == 1, results


def test_on_postgresql_a_second_worker_skips_the_job_another_is_claiming(app, database_url, decide):
    if not database_url.startswith("postgresql"):
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite's single writer is the race test above")
    first, second = decide(), decide()
    holder = db.new_session(app)
    try:  # another worker's claim in progress: its transaction holds the first job's row
        holder.execute(sa.text("SELECT id FROM document_job WHERE id = :id FOR UPDATE"), {"id": first.job.id})
        s = _worker_session(app)
        try:
            s.execute(sa.text("SET lock_timeout = '5s'"))  # waiting on the row would fail, not hang
            job = document_jobs.claim(s, worker="second")
            assert job is not None and job.id == second.job.id
            s.commit()
        finally:
            s.close()
    finally:
        holder.rollback()
        holder.close()
    claimed = _claim(app)  # the other worker gave up its claim: the first job is free again
    assert claimed is not None and claimed[0] == first.job.id


def test_a_job_claimed_by_a_dead_worker_is_taken_again_and_the_dead_claim_stores_nothing(app, session, decide,
                                                                                        site):
    decided = decide()
    job_id, dead_token = _claim(app)  # the worker that claimed it is killed while rendering
    assert document_worker.run_pending(documents_worker(app, site, lease_seconds=120)) == []  # its lease holds
    assert document_jobs.documents_pending(session, decided.batch)

    [outcome] = document_worker.run_pending(documents_worker(app, site, lease_seconds=0))  # the lease ran out
    assert outcome.job_id == job_id and len(outcome.documents) == 1
    s = _worker_session(app)
    try:  # the dead worker, back from the dead, cannot store what it rendered
        assert documents.complete_job(s, job_id, dead_token, []) is None
        s.commit()
    finally:
        s.close()
    session.expire_all()
    job = session.get(DocumentJob, job_id)
    assert (job.status, job.attempts) == ("done", 2)
    assert [d.revision for d in documents.revisions(session, decided.batch)] == [1]
    assert "documents job claimed again: the previous claim's lease ran out" in session.scalars(
        sa.select(AuditEntry.reason).where(AuditEntry.entity_type == "document_job")).all()


def test_a_failing_job_is_given_back_then_given_up_and_retried(app, session, decide, site, tmp_path):
    decided = decide()
    no_key = documents_worker(app, site)
    broken = document_worker.Settings(new_session=no_key.new_session, policy=no_key.policy, demo=True,
                                      site=lambda: pdfs.load_site_signer(app.config, tmp_path / "empty"))
    assert len(document_worker.run_pending(broken)) == 1  # a failed job waits for its retry delay (30 s)
    session.expire_all()
    assert session.get(DocumentJob, decided.job.id).last_error.startswith("SigningMaterialError")
    broken = dataclasses.replace(broken, retry_seconds=0)
    for attempt in range(2, document_jobs.MAX_ATTEMPTS + 1):
        [outcome] = document_worker.run_pending(broken, limit=1)
        assert outcome.documents == [] and "SigningMaterialError" in outcome.error
        session.expire_all()
        job = session.get(DocumentJob, decided.job.id)
        assert job.attempts == attempt and job.status == ("failed" if attempt == document_jobs.MAX_ATTEMPTS
                                                          else "pending")
    assert document_worker.run_pending(documents_worker(app, site)) == []  # given up: no worker takes it
    assert document_jobs.documents_pending(session, decided.batch)  # the clinic still gets nothing
    document_jobs.retry(session, decided.batch)
    session.commit()
    [outcome] = document_worker.run_pending(documents_worker(app, site))
    assert len(outcome.documents) == 1 and not document_jobs.documents_pending(session, decided.batch)


def test_what_a_job_asks_for_is_immutable_and_a_job_is_never_deleted(app, session, decide):
    decided = decide()
    for statement in ("UPDATE document_job SET kinds = 'coa' WHERE id = :id",
                      "DELETE FROM document_job WHERE id = :id"):
        # the guard; with two PostgreSQL roles, the DELETE is refused by the grants first
        with pytest.raises(sa.exc.DatabaseError, match=app_refusal(app, statement.split()[0], "document_job")):
            session.execute(sa.text(statement), {"id": decided.job.id})
        session.rollback()


def test_nothing_is_issued_to_the_clinic_while_the_documents_are_being_prepared(app, session, decide, site):
    decided = decide()
    pending = "documents of QA's decision on batch"
    operator = decided.operator
    assert any(pending in r.text for r in custody.guard_hand_off(session, operator, decided.batch))
    assert any(pending in r.text for r in custody.guard_bedside_check(session, operator, decided.batch))
    with pytest.raises(ValidationFailed, match="being prepared"):  # the service enforces it, before anything
        custody.hand_off(session, decided.batch, scanned_din="x", from_location="a", to_location="b", condition="ok",
                         signer=operator, password=PASSWORD, username=None, require_username=False)
    session.rollback()
    document_worker.run_pending(documents_worker(app, site))
    session.expire_all()
    assert custody.guard_hand_off(session, operator, decided.batch) == []
    assert not any(pending in r.text for r in custody.guard_bedside_check(session, operator, decided.batch))


def test_the_guard_is_pure():
    assert guards.documents_ready(lot="L1", pending=False) == []
    [refusal] = guards.documents_ready(lot="L1", pending=True)
    assert refusal.kind == "state" and "L1" in refusal.text and "being prepared" in refusal.text


def test_the_cli_makes_what_is_pending(app, session, decide, site_certificate):
    decided = decide()
    result = app.test_cli_runner().invoke(args=["documents", "work", "--once"])
    assert result.exit_code == 0, result.output
    assert f"{decided.batch.lot}-batch_record-r1.pdf" in result.output
    assert not document_jobs.documents_pending(session, decided.batch)


def test_the_batch_page_version_follows_the_documents_job_it_announces(app, session, decide, site, tmp_path):
    """The batch page says "documents being prepared" or "documents not made" (with the attempts) from the
    oldest job not done: a failed attempt, the job given up, retried and done each change the page's version
    (``batch_pages.page_version``), so an open page updates itself; nothing else of the batch moves."""
    decided = decide()
    broken = dataclasses.replace(documents_worker(app, site), retry_seconds=0,
                                 site=lambda: pdfs.load_site_signer(app.config, tmp_path / "empty"))

    def version() -> str:
        session.expire_all()
        return batch_pages.page_version(session, decided.batch).token

    seen = [version()]
    batch_row = (decided.batch.status, decided.batch.row_version)
    for _attempt in range(document_jobs.MAX_ATTEMPTS):
        [outcome] = document_worker.run_pending(broken, limit=1)
        assert outcome.error
        seen.append(version())
        assert seen[-1] != seen[-2]
    assert session.get(DocumentJob, decided.job.id).status == "failed"
    document_jobs.retry(session, decided.batch)
    session.commit()
    seen.append(version())
    assert seen[-1] != seen[-2]
    [outcome] = document_worker.run_pending(documents_worker(app, site))
    assert outcome.documents and not document_jobs.documents_pending(session, decided.batch)
    seen.append(version())
    assert seen[-1] != seen[-2]
    assert (decided.batch.status, decided.batch.row_version) == batch_row  # the batch itself never moved
