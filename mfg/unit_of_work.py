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

Each of these stops names the deviation it opened (``error.deviation``). The error is raised again after
each, so the edge still tells the person what happened.

``spend``: the edge's one-time claim of the action (a web form's submission token), made again in the commit
that records an identity or product hard stop or a refused item, so that the stop is recorded once: a twin of the same
submission that reached the stop too (two taps at the same moment) finds the claim taken, its commit fails
on it, and ``spend`` raises what tells the edge to answer the twin as a repeat. Nothing of that twin is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy.orm import Session

from .domain.errors import AuthenticationFailed, IdentityMismatch, ItemRefused, ProductBlocked
from .models import Deviation, User
from .services import accounts, deviations, lifecycle

E = TypeVar("E", IdentityMismatch, ProductBlocked, ItemRefused)


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
