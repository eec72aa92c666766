"""The audit position a signed document carries (issue [3.5] item 4): the trail's head at the moment the
document's data was read, sealed as an anchor (``domain.audit_chain.Anchor``), and its check against the trail.

A document issued at entry N vouches that everything it shows was recorded at or before N; if the trail up to N
is later rewritten (even by someone holding the key, who can reseal the head), the entry at N no longer has the
hash the document carries, and ``verify-pdf`` and ``audit verify --anchors`` say so.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain.audit_chain import Anchor, anchor_seal_problem, seal_anchor, seal_problem
from ..domain.canonical import iso_utc
from ..models import AuditEntry
from . import audit


def current_anchor(session: Session) -> Anchor:
    """The head as it is now (its own seal checked first), sealed as an anchor with the current key. Read it after
    the data it vouches for (under READ COMMITTED a later statement sees later commits, never earlier ones)."""
    keys = audit.key_ring(session)
    found = audit._head(session)
    if found is None:
        raise audit.HeadNotSealed("the audit chain head is missing")
    head, seal = found
    problem = seal_problem(keys, head, seal)
    if problem is not None:
        raise audit.HeadNotSealed(f"no document can vouch for this trail: {problem}")
    key_id, key = keys.current
    return seal_anchor(key, key_id, head)


def plain(anchor: Anchor) -> dict[str, Any]:
    """The anchor as plain data (in a snapshot)."""
    return {"seq": anchor.seq, "entry_hash": anchor.entry_hash,
            "max_at": iso_utc(anchor.max_at) if anchor.max_at else None,
            "unordered_at": iso_utc(anchor.unordered_at) if anchor.unordered_at else None,
            "key_id": anchor.key_id, "seal": anchor.seal}


def check_anchor(session: Session, anchor: Anchor) -> str | None:
    """Why the trail does not extend ``anchor``, or None when it does: the anchor's seal must be this instance's,
    the trail must have reached its entry, and that entry must still have the hash the anchor carries."""
    problem = anchor_seal_problem(audit.key_ring(session), anchor)
    if problem is not None:
        return problem
    if anchor.seq == 0:
        return None
    stored = session.scalar(sa.select(AuditEntry.entry_hash).where(AuditEntry.seq == anchor.seq))
    if stored is None:
        return (f"the trail has no entry {anchor.seq}, which the anchor was taken at: entries were removed after "
                "it (the trail cut back)")
    if stored != anchor.entry_hash:
        return (f"entry {anchor.seq} no longer has the hash it had when the anchor was taken: the trail up to "
                f"entry {anchor.seq} was rewritten after it")
    return None
