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
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from .domain.errors import AuthenticationFailed, IdentityMismatch, ItemRefused, ProductBlocked
from .models import User
from .services import accounts, deviations, lifecycle


@contextmanager
def unit_of_work(session: Session, *, actor: User | None, policy: accounts.Policy) -> Iterator[Session]:
    """``actor``: the person acting (the deviation of an identity stop is opened in their name); ``policy``
    decides when failed passwords lock an account."""
    try:
        yield session
        session.commit()
    except IdentityMismatch as mismatch:
        session.rollback()
        if actor is None:
            raise RuntimeError("an identity check failed outside a person's action: nobody to record it") from mismatch
        mismatch.deviation = deviations.record_identity_mismatch(session, mismatch, actor).number
        session.commit()
        raise
    except ProductBlocked as stop:
        session.rollback()
        if actor is None:
            raise RuntimeError("a product stop outside a person's action: nobody to record it") from stop
        stop.deviation = lifecycle.record_blocked_scan(session, stop, actor).number
        session.commit()
        raise
    except ItemRefused as refused:
        session.rollback()
        if actor is None:
            raise RuntimeError("an item refused outside a person's action: nobody to record it") from refused
        refused.deviation = deviations.record_refused_item(session, refused, actor).number
        session.commit()
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
