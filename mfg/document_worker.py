"""The documents worker: makes the documents QA's decisions asked for (``services.document_jobs``), outside
the decisions' transactions.

One job, three short steps, none holding a lock while rendering:

1. claim it, in its own unit of work (commits: the job is ours for ``DOCUMENT_JOB_LEASE_SECONDS``);
2. read the snapshot and revision numbers, end that read transaction, then render and sign (seconds);
3. in a second unit of work, store the revisions and mark the job done, if the claim still holds.

Where it runs:

* in every app server process (gunicorn worker, `make run`, or several app servers on PostgreSQL): a
  daemon thread started at the process's first request (``init_app``; ``create_app`` itself stays free of
  side effects, and CLI commands never start one). It makes every pending job at start (a job left by a
  killed process is taken again once its lease ran out), is woken by ``wake()`` right after a decision
  commits in its process, and otherwise polls every ``DOCUMENT_WORKER_POLL_SECONDS``. Several threads and
  processes may run at once: the claim gives each job to one of them. ``DOCUMENT_WORKER = false``
  (``MFG_DOCUMENT_WORKER=false``) starts none: the tests make documents explicitly, and a site may run
  ``flask --app mfg documents work`` as a service of its own instead;
* ``flask --app mfg documents work [--once]``: operations, and the CLI's own decision (``demo-batch``)
  runs its job inline right after the decision committed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from sqlalchemy.orm import Session

from .models import DocumentJob, DocumentRevision
from .reports import pdf as pdfs
from .services import accounts, audit, document_jobs, documents
from .unit_of_work import unit_of_work

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    new_session: Callable[[], Session]
    policy: accounts.Policy
    site: Callable[[], pdfs.SiteSigner]
    demo: bool
    lease_seconds: float = document_jobs.DEFAULT_LEASE_SECONDS
    retry_seconds: float = document_jobs.DEFAULT_RETRY_SECONDS

    @classmethod
    def of(cls, app: Flask) -> Settings:
        from .extensions import db

        config, instance = app.config, Path(app.instance_path)
        return cls(new_session=lambda: db.new_session(app), policy=accounts.Policy.from_config(config),
                   site=lambda: pdfs.load_site_signer(config, instance), demo=bool(config["DEMO"]),
                   lease_seconds=float(config["DOCUMENT_JOB_LEASE_SECONDS"]))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"[:200]


@dataclass(frozen=True)
class Outcome:
    job_id: int
    documents: list[DocumentRevision]  # empty when the attempt failed or the claim was lost
    error: str | None = None


def run_one(settings: Settings) -> Outcome | None:
    """Claim one job and make its documents; None when no job was claimable."""
    name = worker_name()
    session = settings.new_session()
    try:
        audit.set_actor(session, name=f"documents worker {name}")
        with unit_of_work(session, actor=None, policy=settings.policy):
            job = document_jobs.claim(session, worker=name, lease_seconds=settings.lease_seconds,
                                      retry_seconds=settings.retry_seconds)
            claimed = None if job is None else (job.id, job.claim_token)
        if claimed is None:
            return None
        job_id, token = claimed
        assert token is not None  # a claimed job has its token
        try:
            job = session.get(DocumentJob, job_id)
            assert job is not None
            plan = documents.job_plan(session, job)
            session.rollback()  # end the read: nothing is held while rendering
            rendered = documents.render_plan(plan, site=settings.site(), demo=settings.demo)
        except Exception as exc:  # noqa: BLE001 - any failure: the job is given back, counted, and logged
            session.rollback()
            log.exception("documents job %s failed", job_id)
            error = f"{type(exc).__name__}: {exc}"
            with unit_of_work(session, actor=None, policy=settings.policy):
                document_jobs.release(session, job_id, token, error=error)
            return Outcome(job_id, [], error)
        with unit_of_work(session, actor=None, policy=settings.policy):
            stored = documents.complete_job(session, job_id, token, rendered)
        return Outcome(job_id, stored or [])
    finally:
        session.close()


def run_pending(settings: Settings, *, limit: int | None = None) -> list[Outcome]:
    """Make every claimable job's documents (at most ``limit`` jobs)."""
    outcomes: list[Outcome] = []
    while limit is None or len(outcomes) < limit:
        outcome = run_one(settings)
        if outcome is None:
            break
        outcomes.append(outcome)
    return outcomes


# --- the thread of an app server process --------------------------------------------------------------------

_wake = threading.Event()
# (process id, application) -> its worker thread: a forked child starts its own
_started: dict[tuple[int, int], threading.Thread] = {}
_start_lock = threading.Lock()


def wake() -> None:
    """Tell this process's worker that a job is waiting (called after a decision committed)."""
    _wake.set()


def wait(seconds: float) -> None:
    """Sleep until woken or ``seconds`` passed."""
    _wake.wait(seconds)
    _wake.clear()


def _loop(settings: Settings, poll_seconds: float) -> None:
    while True:
        try:
            run_pending(settings)
        except Exception:  # noqa: BLE001 - the database may be away for a while: log, wait, try again
            log.exception("documents worker: a pass failed; trying again in %s s", poll_seconds)
        wait(poll_seconds)


def start(app: Flask) -> threading.Thread:
    """Start this process's worker thread, once."""
    with _start_lock:
        key = (os.getpid(), id(app))
        thread = _started.get(key)
        if thread is None or not thread.is_alive():
            thread = threading.Thread(target=_loop, name="documents-worker", daemon=True,
                                      args=(Settings.of(app), float(app.config["DOCUMENT_WORKER_POLL_SECONDS"])))
            thread.start()
            _started[key] = thread
        return thread


def init_app(app: Flask) -> None:
    """Start the worker thread at the first request of each app server process (when DOCUMENT_WORKER)."""
    if not app.config["DOCUMENT_WORKER"]:
        return

    @app.before_request
    def _ensure_worker() -> None:
        if (os.getpid(), id(app)) not in _started:
            start(app)
