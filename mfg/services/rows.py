"""Row locks: a one-shot action re-reads its record holding the row until the commit, so that two submissions of
it (two tabs, two people, a script's twins) run one after the other and the second sees what the first did."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain import display
from ..domain.errors import AlreadyDone
from ..models import User


def lock(session: Session, record: Any) -> None:
    """Reload ``record`` (a mapped object with an ``id``) holding its row until the commit. PostgreSQL: the row
    lock (SELECT ... FOR UPDATE). SQLite locks only for a write and its driver reads outside a transaction until
    the first one: a write that changes nothing (``id = id``) takes the database's one write lock first. That
    no-op UPDATE changes nothing, so it needs no audit entry (``services.audit_state``)."""
    if session.connection().dialect.name == "sqlite":
        model = type(record)
        session.execute(sa.update(model).where(model.id == record.id).values(id=model.id),
                        execution_options={"synchronize_session": False})
    session.refresh(record, with_for_update=True)


def already_done(session: Session, done: str, *, user_id: int | None, at: datetime | None) -> AlreadyDone:
    """The answer to the loser of a one-shot action: ``done`` ("DEMO-PROC v1 was already approved") by the
    printed name of ``user_id`` at ``at`` in UTC."""
    user = session.get(User, user_id) if user_id is not None else None
    return AlreadyDone(done, by=user.full_name if user is not None else "someone else",
                       at=display.utc(at) or "an earlier moment")
