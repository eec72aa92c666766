"""The documents outbox: QA's decision asks for its documents in its own transaction; a worker makes them after.

Rendering and signing a batch record takes seconds (more under load), and every audited flush holds the
audit chain's lock until its transaction ends. So QA's decision no longer renders: ``enqueue`` writes a
``DocumentJob`` (pending) in the decision's transaction, which commits at once, and a documents worker
(``mfg.document_worker``) makes the documents right after, outside it:

1. ``claim``: a short transaction takes the oldest claimable job (pending, or claimed by a worker whose
   lease ran out: a process killed while rendering) and marks it claimed, with a random claim token;
2. the worker renders and signs with no transaction open (``documents.job_plan``, ``documents.render_plan``);
3. ``documents.complete_job``: a short transaction that ``hold``s the job (still ours: same token, still
   claimed), stores the ``DocumentRevision`` rows and marks the job done. A claim lost meanwhile (lease ran
   out, another worker took the job) stores nothing; the other worker's result counts.

Why a table and our own claim rather than a job runner: the job must commit atomically with the decision,
in the same database, on both deployments (embedded SQLite on one laptop, PostgreSQL behind several app
servers). Procrastinate, the maintained PostgreSQL-native runner, has no SQLite backend; Celery and RQ
need a broker outside the transaction (a decision could commit without its job, or the reverse). The
claim is portable: on PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED`` lets several workers take
different jobs without waiting on each other; on SQLite (where ``FOR UPDATE`` is not emitted) the
single-writer lock serialises claims and a conditional UPDATE decides the race. On both the claim then
re-checks the condition under the lock with a no-op UPDATE (the same trick as the audit head's lock), and
the job's state changes go through the ORM so that the audit trail records every one of them.

Jobs of one batch are made in order (a job waits while an earlier one of its batch is not done), so
revision numbers follow the decisions. A job that fails ``MAX_ATTEMPTS`` times is ``failed``: the batch
keeps showing that its documents are missing, and nothing is issued to the clinic
(``domain.guards.documents_ready``) until ``flask --app mfg documents retry`` and a worker make them.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain.errors import NotFound
from ..models import Batch, BatchDecision, DocumentJob, User, utcnow
from . import audit

# Which documents each of QA's decisions issues, in order: the one place that says so. A decision not named
# here issues nothing (and its enqueue refuses, so a new decision cannot silently issue nothing).
DECISION_DOCUMENTS: dict[str, tuple[str, ...]] = {
    "released": ("batch_record", "coa"),
    "conditionally_released": ("batch_record", "coa"),
    "rejected": ("batch_record",),
    "under_investigation": ("batch_record",),  # QA, after a complaint: the record as it stood
    "recalled": ("batch_record",),
}

PENDING, CLAIMED, DONE, FAILED = "pending", "claimed", "done", "failed"
NOT_DONE = (PENDING, CLAIMED, FAILED)  # the documents of the decision do not exist yet
MAX_ATTEMPTS = 5
DEFAULT_LEASE_SECONDS = 120
DEFAULT_RETRY_SECONDS = 30  # a job given back after a failed attempt waits this long before the next


def enqueue(session: Session, batch: Batch, decision: BatchDecision, *, user: User) -> DocumentJob:
    """Ask for the documents of ``decision`` (in the decision's transaction; flushes)."""
    if decision.decision not in DECISION_DOCUMENTS:
        raise ValueError(f"no documents are defined for the decision {decision.decision!r} (DECISION_DOCUMENTS)")
    reason = decision.decision.replace("_", " ")
    job = DocumentJob(batch_id=batch.id, decision_id=decision.id, kinds=",".join(DECISION_DOCUMENTS[decision.decision]),
                      reason=reason, status=PENDING, attempts=0, created_at=utcnow(), created_by_id=user.id)
    session.add(job)
    audit.flush(session, reason=f"documents of the decision ({reason}) requested")
    return job


def open_job(session: Session, batch: Batch) -> DocumentJob | None:
    """The oldest job of ``batch`` whose documents do not exist yet, if any."""
    return session.scalar(sa.select(DocumentJob).where(DocumentJob.batch_id == batch.id,
                                                       DocumentJob.status.in_(NOT_DONE))
                          .order_by(DocumentJob.id).limit(1))


def documents_pending(session: Session, batch: Batch) -> bool:
    return open_job(session, batch) is not None


def _table() -> sa.Table:
    return cast(sa.Table, DocumentJob.__table__)


def _claimable(lease_seconds: float, retry_seconds: float) -> sa.ColumnElement[bool]:
    """Pending (after a failed attempt: once ``retry_seconds`` passed), or claimed and its lease ran out;
    and no earlier job of its batch still waiting for its documents."""
    t = _table()
    earlier = t.alias("earlier")
    now = utcnow()
    lease_end, retry_from = now - timedelta(seconds=lease_seconds), now - timedelta(seconds=retry_seconds)
    return sa.and_(
        sa.or_(sa.and_(t.c.status == PENDING, sa.or_(t.c.claimed_at.is_(None), t.c.claimed_at < retry_from)),
               sa.and_(t.c.status == CLAIMED, t.c.claimed_at < lease_end)),
        ~sa.exists().where(earlier.c.batch_id == t.c.batch_id, earlier.c.id < t.c.id, earlier.c.status != DONE))


def _lock(session: Session, job_id: int, condition: sa.ColumnElement[bool]) -> DocumentJob | None:
    """Lock job ``job_id`` if ``condition`` still holds (a no-op UPDATE: PostgreSQL's row lock, SQLite's write
    lock; the condition is evaluated on the newest committed row) and return it, fresh; else None."""
    t = _table()
    result = session.execute(sa.update(t).where(t.c.id == job_id, condition).values(status=t.c.status))
    if cast(sa.CursorResult, result).rowcount != 1:
        return None
    return session.get(DocumentJob, job_id, populate_existing=True)


def claim(session: Session, *, worker: str, lease_seconds: float = DEFAULT_LEASE_SECONDS,
          retry_seconds: float = DEFAULT_RETRY_SECONDS) -> DocumentJob | None:
    """Claim the oldest claimable job for ``worker`` (flushes; the caller commits at once). None when there
    is none (or every one is being claimed by another worker right now)."""
    t = _table()
    for _ in range(10):
        condition = _claimable(lease_seconds, retry_seconds)
        job_id = session.scalar(sa.select(t.c.id).where(condition).order_by(t.c.id).limit(1)
                                .with_for_update(skip_locked=True, of=t))
        if job_id is None:
            return None
        job = _lock(session, job_id, condition)
        if job is None:  # SQLite: another worker claimed it between our read and our write
            continue
        if job.attempts >= MAX_ATTEMPTS:
            job.status, job.claim_token = FAILED, None
            audit.flush(session, reason=f"documents job given up after {job.attempts} attempts")
            continue
        taken_over = job.status == CLAIMED
        job.status, job.claim_token, job.claimed_by = CLAIMED, str(uuid.uuid4()), worker
        job.claimed_at, job.attempts = utcnow(), job.attempts + 1
        audit.flush(session, reason="documents job claimed" + (
            " again: the previous claim's lease ran out" if taken_over else ""))
        return job
    return None


def hold(session: Session, job_id: int, token: str) -> DocumentJob | None:
    """Lock the job if this claim (``token``) still holds it; None when the claim was lost."""
    t = _table()
    return _lock(session, job_id, sa.and_(t.c.claim_token == token, t.c.status == CLAIMED))


def mark_done(session: Session, job: DocumentJob) -> None:
    job.status, job.claim_token, job.done_at, job.last_error = DONE, None, utcnow(), None
    audit.flush(session, reason="documents job done")


def release(session: Session, job_id: int, token: str, *, error: str) -> DocumentJob | None:
    """Give the job back after a failed attempt (pending again, tried again after the retry delay counted from
    ``claimed_at``, now; or failed after ``MAX_ATTEMPTS``); flushes. None when the claim was already lost."""
    job = hold(session, job_id, token)
    if job is None:
        return None
    job.status = FAILED if job.attempts >= MAX_ATTEMPTS else PENDING
    job.claim_token, job.claimed_at, job.last_error = None, utcnow(), error[:2000]
    audit.flush(session, reason=f"documents job attempt {job.attempts} failed")
    return job


def retry(session: Session, batch: Batch) -> DocumentJob:
    """Give a failed job of ``batch`` its attempts back (operations, after fixing the cause); flushes."""
    job = session.scalar(sa.select(DocumentJob).where(DocumentJob.batch_id == batch.id, DocumentJob.status == FAILED)
                         .order_by(DocumentJob.id).limit(1))
    if job is None:
        raise NotFound(f"batch {batch.lot} has no failed documents job")
    job.status, job.attempts, job.claimed_at = PENDING, 0, None
    audit.flush(session, reason="documents job retried")
    return job
