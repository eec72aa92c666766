"""The one unit of work of every edge: a web request, a CLI command, a test acting as one.

``with unit_of_work(session, actor=user, policy=policy):`` commits the action when it returns and rolls it
back on any error. The failure side of the GMP policy lives here, not in any edge, so that no new edge (a
command, an API, a job) can drop it:

* an identity mismatch (``IdentityMismatch``): the refused action is rolled back, then the event is
  audited and its deviation opened (``deviations.record_identity_mismatch``), in their own commit;
* a blocked, expired or unreleased product at a hand-off or the bedside (``ProductBlocked``): the same, through
  ``lifecycle.record_blocked_scan``;
* equipment or a material lot that exists but may not be used (``ItemRefused``): the same, through
  ``deviations.record_refused_item`` (a code that does not exist is a misread: nothing is recorded);
* a wrong password at sign-in or signing (``AuthenticationFailed``): the action is rolled back, then the
  failure is counted toward lockout and audited (``accounts.record_authentication_failure``) in its own
  commit, and ``failure.locked_user_id`` names the account it locked, if it did (the web edge then signs
  that user out).

A race lost at the database (``race_lost``): a unique key another transaction took first (two submissions
creating the same record) or a row version another transaction moved (optimistic locking), found at a flush or
at the commit, is rolled back and raised again as a ``ConflictError`` ("changed or recorded by someone else at
the same moment; nothing was stored"), the same answer on every edge, never a 500. Any other integrity error
(a foreign key, a check) is a bug and keeps its traceback. The one-shot actions re-check their state under a row
lock first (``services.rows``) and name who did it first; this is the net under them.

Each of these stops names the deviation it opened (``error.deviation``). The error is raised again after
each, so the edge still tells the person what happened.

``spend``: the edge's one-time claim of the action (a web form's submission token), made again in the commit
that records an identity or product hard stop or a refused item, so that the stop is recorded once: a twin of the same
submission that reached the stop too (two taps at the same moment) finds the claim taken, its commit fails
on it, and ``spend`` raises what tells the edge to answer the twin as a repeat. Nothing of that twin is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from .domain.errors import AuthenticationFailed, ConflictError, IdentityMismatch, ItemRefused, ProductBlocked
from .models import Deviation, User
from .services import accounts, deviations, lifecycle

E = TypeVar("E", IdentityMismatch, ProductBlocked, ItemRefused)
log = logging.getLogger(__name__)
RACE_LOST = ("This record was changed or recorded by someone else at the same moment; nothing of this attempt "
             "was stored. Open the record again to see what it holds now.")
_UNIQUE_SQLSTATE = "23505"  # PostgreSQL unique_violation
_SQLITE_UNIQUE = {1555, 2067}  # SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE


def race_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is the symptom of a race another transaction won (see the module's docstring)."""
    if isinstance(exc, StaleDataError):
        return True
    if isinstance(exc, IntegrityError):
        return (getattr(exc.orig, "sqlstate", None) == _UNIQUE_SQLSTATE
                or getattr(exc.orig, "sqlite_errorcode", None) in _SQLITE_UNIQUE)
    return False


@contextmanager
def unit_of_work(session: Session, *, actor: User | None, policy: accounts.Policy,
                 spend: Callable[[Session], None] | None = None) -> Iterator[Session]:
    """``actor``: the person acting (the deviation of an identity stop is opened in their name); ``policy``
    decides when failed passwords lock an account; ``spend``: the action's one-time claim, made in the commit
    that records a hard stop (see above)."""
    try:
        yield session
        session.commit()
    except IdentityMismatch as mismatch:
        session.rollback()
        if actor is None:
            raise RuntimeError("an identity check failed outside a person's action: nobody to record it") from mismatch
        mismatch.deviation = _record_stop(session, spend, deviations.record_identity_mismatch, mismatch, actor)
        raise
    except ProductBlocked as stop:
        session.rollback()
        if actor is None:
            raise RuntimeError("a product stop outside a person's action: nobody to record it") from stop
        stop.deviation = _record_stop(session, spend, lifecycle.record_blocked_scan, stop, actor)
        raise
    except ItemRefused as refused:
        session.rollback()
        if actor is None:
            raise RuntimeError("an item refused outside a person's action: nobody to record it") from refused
        refused.deviation = _record_stop(session, spend, deviations.record_refused_item, refused, actor)
        raise
    except AuthenticationFailed as failure:
        session.rollback()
        user = accounts.record_authentication_failure(session, failure, policy)
        session.commit()
        failure.locked_user_id = user.id if user is not None and user.locked else None
        raise
    except (IntegrityError, StaleDataError) as exc:
        session.rollback()
        if not race_lost(exc):
            raise
        log.warning("a race lost at the database, answered as a conflict: %s", exc)
        raise ConflictError(RACE_LOST) from exc
    except BaseException:
        session.rollback()
        raise


def _record_stop(session: Session, spend: Callable[[Session], None] | None,
                 record: Callable[[Session, E, User], Deviation], stop: E, actor: User) -> str:
    """A hard stop's audit entry and deviation (``record``), in one commit with the action's claim (``spend``),
    claimed first: a twin still deciding on its own claim is waited for here. Returns the deviation's number."""
    try:
        if spend is not None:
            spend(session)
        number = record(session, stop, actor).number
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return number
