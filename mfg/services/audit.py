"""The audit trail: written by one mechanism, read and verified here.

Model changes are recorded by a SQLAlchemy ``after_flush`` listener for every ``Audited`` model, so
no view or service can forget one; events that change no model (login, logout, timeout, a refused
signature) go through ``record_event``. Both append through ``_append``, which locks the chain head,
so concurrent transactions on SQLite and PostgreSQL never fork the chain.

The lock on the head is held until the transaction ends, and every GMP change of the site takes it: on
PostgreSQL, whatever a transaction runs after locking the head, every other writer waits for. So the entries
of a transaction are not appended flush by flush: each flush (and ``record_event``) records them in the
session (``write_pending``'s buffer, with the actor and reason of the moment), and they are all appended once,
by a ``before_commit`` listener, in the same transaction as the changes: the head is locked for one INSERT of
the entries and the UPDATE that seals it, right before COMMIT (issue 18 item 8: a signed step used to run about
twenty statements under the lock, in four appends). A rollback discards the buffer; a savepoint's rollback
discards what the savepoint added to it. Readers of the trail or the head inside a transaction that changed
something see its entries: an ORM SELECT of ``audit_entry`` or ``audit_head`` appends them first (a
``do_orm_execute`` listener), and the readers here that use the connection directly call ``write_pending``.
The entries of a transaction carry the time they are appended (its commit), so their times follow their
sequence numbers as before, however transactions interleave (``next_times``: the date-range search relies on it).

Who is acting comes from ``set_actor`` (the web layer sets it per request, the CLI per command); the
reason for a change comes from ``flush(session, reason=...)``.

Every append also seals the new head with the instance's audit key (``domain.audit_chain.seal_head``) in the
same UPDATE that moves it, after checking that the head it extends carries a seal that matches: a head moved
or rewritten outside the application is never sealed over. The key ring comes with the session
(``session.info[audit_key.KEYS_INFO]``, put there by ``Database.init_app``); without one, GMP changes are refused
at the flush that makes them (before the transaction goes on), and a head that does not carry a matching seal
refuses the commit (``HeadNotSealed``): nothing of the transaction is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.sql import visitors

from ..audit_key import KEYS_INFO, AuditKeyError
from ..domain import inputs
from ..domain.audit_chain import (
    GENESIS_HASH,
    ChainEntry,
    ChainHead,
    HeadSeal,
    KeyRing,
    VerifyResult,
    check_end,
    next_times,
    seal_head,
    seal_problem,
)
from ..domain.audit_state import redact as redacted
from ..domain.canonical import canonical_json, iso_utc
from ..domain.errors import DomainError
from ..models import Audited, AuditEntry, AuditHead, User, utcnow
from . import audit_walk

T = TypeVar("T")
ACTOR_KEY = "audit_actor"
REASON_KEY = "audit_reason"
PENDING_KEY = "audit_pending"

# One entry to append: action, entity type, entity id, before, after (canonical JSON), reason.
_Row = tuple[str, str | None, str | None, str | None, str | None, str | None]


@dataclass(frozen=True)
class Actor:
    user_id: int | None
    name: str  # user name, or a description of a non-user actor such as "cli:root"


def set_actor(session: Session, user: User | None = None, *, name: str | None = None) -> None:
    session.info[ACTOR_KEY] = Actor(user.id, user.username) if user is not None else Actor(None, name or "system")


def actor_of(session: Session) -> Actor:
    actor = session.info.get(ACTOR_KEY)
    if actor is None:
        raise RuntimeError("GMP change without an actor: call services.audit.set_actor first")
    return actor


def flush(session: Session, *, reason: str | None = None) -> None:
    """Flush pending changes, recording ``reason`` with the audit entries they produce."""
    with reason_for(session, reason):
        session.flush()


@contextmanager
def reason_for(session: Session, reason: str | None) -> Iterator[None]:
    """Record ``reason`` with every audit entry written inside the block, autoflushes included.

    An inner reason wins over an outer one; ``None`` keeps the outer reason.
    """
    previous = session.info.get(REASON_KEY)
    # the trail's own bound: whatever path a reason took, no control character, override or megabyte gets in
    session.info[REASON_KEY] = inputs.text("audit_reason", reason) if reason is not None else previous
    try:
        yield
    finally:
        session.info[REASON_KEY] = previous


def record_event(session: Session, action: str, *, user: User | None = None, entity_type: str | None = None,
                 entity_id: object = None, details: dict[str, Any] | None = None,
                 reason: str | None = None) -> None:
    """Record an entry for an event that is not a model change (login, logout, refusal...), after the entries
    of the changes made before it; appended with them at commit."""
    flush(session)
    actor = Actor(user.id, user.username) if user is not None else actor_of(session)
    _record(session, actor, [(action, entity_type, None if entity_id is None else str(entity_id),
                              None, canonical_json(details) if details is not None else None, reason)])


def key_ring(session: Session) -> KeyRing:
    """The audit key ring the session carries (a ``KeyRing``, or a callable returning one)."""
    source = session.info.get(KEYS_INFO)
    if source is None:
        raise AuditKeyError("GMP change refused: this session has no audit key ring to seal the audit trail with "
                            "(the application puts it in session.info; see mfg/audit_key.py)")
    return source if isinstance(source, KeyRing) else source()


class HeadNotSealed(DomainError):
    """The audit head carries no seal, or one that does not match: appends are refused until it is resolved."""


_HEAD_COLUMNS = ("seq", "entry_hash", "max_at", "unordered_at", "seal_key_id", "seal")


@dataclass
class _Pending:
    """The entries of the session's transaction, in order; the first ``written`` of them are appended.
    ``savepoints``: for each savepoint begun, what ``entries`` and ``written`` were when it began."""

    entries: list[tuple[Actor, _Row]] = field(default_factory=list)
    written: int = 0
    savepoints: dict[SessionTransaction, tuple[int, int]] = field(default_factory=dict)


def _pending(session: Session) -> _Pending:
    pending = session.info.get(PENDING_KEY)
    if pending is None:
        pending = session.info[PENDING_KEY] = _Pending()
    return pending


def _record(session: Session, actor: Actor, rows: list[_Row]) -> None:
    """Keep ``rows`` to append at commit (``write_pending``)."""
    key_ring(session)  # no key, no GMP change: refused here, before the transaction goes on
    _pending(session).entries.extend((actor, row) for row in rows)


def write_pending(session: Session) -> None:
    """Append the entries this transaction has recorded and not yet appended (none: nothing is run).

    Called at commit (``_append_at_commit``), and before reading the trail or the head in a transaction that
    may have changed something, so the reader sees its entries (ORM SELECTs of them do so by themselves). It
    locks the head until the transaction ends: call it only where the entries must be in the table now.
    If the append fails, the entries stay recorded: a transaction whose entries are not appended never commits.
    """
    pending: _Pending | None = session.info.get(PENDING_KEY)
    if pending is None or pending.written == len(pending.entries):
        return
    _append(session, pending.entries[pending.written:])
    pending.written = len(pending.entries)


def _append(session: Session, entries: list[tuple[Actor, _Row]], *, unsealed_ok: bool = False) -> None:
    keys = key_ring(session)
    connection = session.connection()
    head_table = cast(sa.Table, AuditHead.__table__)  # a mapped class's __table__ is typed as a FromClause
    # Lock the head row first: an UPDATE takes PostgreSQL's row lock and SQLite's write lock.
    head = connection.execute(
        sa.update(head_table).where(head_table.c.id == 1).values(seq=head_table.c.seq)
        .returning(*(head_table.c[name] for name in _HEAD_COLUMNS))).one()
    # Never seal over a head the application did not seal: that would make a forgery verify.
    problem = seal_problem(keys, ChainHead(*head[:4]), HeadSeal(*head[4:]))
    if problem is not None and not (unsealed_ok and head.seal is None):
        raise HeadNotSealed(f"GMP change refused: {problem}. Run `flask --app mfg audit verify`.")
    seq, prev_hash = head.seq, head.entry_hash
    now = utcnow()
    max_at, unordered_at = next_times(head.max_at, head.unordered_at, now)
    values = []
    for actor, (action, entity_type, entity_id, before, after, reason) in entries:
        seq += 1
        chain = ChainEntry(seq, now, actor.user_id, actor.name, action, entity_type, entity_id,
                           before, after, reason, prev_hash)
        prev_hash = chain.compute_hash()
        values.append({**chain.content(), "occurred_at": now, "entry_hash": prev_hash})
    connection.execute(sa.insert(cast(sa.Table, AuditEntry.__table__)), values)
    key_id, key = keys.current
    seal = seal_head(key, key_id, ChainHead(seq, prev_hash, max_at, unordered_at))
    connection.execute(sa.update(head_table).where(head_table.c.id == 1)
                       .values(seq=seq, entry_hash=prev_hash, max_at=max_at, unordered_at=unordered_at,
                               seal_key_id=key_id, seal=seal))


def _entity_id(obj: object) -> str:
    state = sa.inspect(obj)
    return ",".join(str(part) for part in state.mapper.primary_key_from_instance(obj))


def _changes(obj: Audited) -> tuple[dict[str, Any], dict[str, Any]]:
    state = sa.inspect(obj)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    redact = obj.__audit_redact__
    for column in state.mapper.columns:
        history = state.attrs[column.key].history
        if not history.has_changes():
            continue
        old = history.deleted[0] if history.deleted else None
        new = history.added[0] if history.added else None
        if old == new:
            continue
        before[column.key] = redacted(old) if column.key in redact else old
        after[column.key] = redacted(new) if column.key in redact else new
    return before, after


@event.listens_for(Session, "before_flush")
def _refuse_deletes(session: Session, _context: object, _instances: object) -> None:
    for obj in session.deleted:
        if isinstance(obj, Audited):
            raise DomainError(f"{type(obj).__name__} records are never deleted")


@event.listens_for(Session, "after_flush")
def _audit_flush(session: Session, _context: object) -> None:
    rows: list[_Row] = []
    reason = session.info.get(REASON_KEY)
    for obj in session.new:
        if isinstance(obj, Audited):
            table = obj.__tablename__  # type: ignore[attr-defined]
            rows.append((f"{table}.create", table, _entity_id(obj), None,
                         canonical_json(obj.audit_values()), reason))
    for obj in session.dirty:
        if isinstance(obj, Audited) and session.is_modified(obj, include_collections=False):
            before, after = _changes(obj)
            if after:
                table = obj.__tablename__  # type: ignore[attr-defined]
                rows.append((f"{table}.update", table, _entity_id(obj), canonical_json(before),
                             canonical_json(after), reason))
    if rows:
        _record(session, actor_of(session), rows)


@event.listens_for(Session, "before_commit")
def _append_at_commit(session: Session) -> None:
    """Append the transaction's entries, the last thing before COMMIT. The changes not flushed yet are flushed
    first (the commit would flush them after this listener, and their entries would be left out).

    SQLAlchemy calls this for the release of a savepoint too, and cannot say which it is: a savepoint's release
    appends what is pending then (correct either way; the head stays locked from there, so code that wants the
    lock short uses no savepoint, and the application uses none)."""
    while True:
        session.flush()
        pending: _Pending | None = session.info.get(PENDING_KEY)
        if pending is None or pending.written == len(pending.entries):
            return
        write_pending(session)


@event.listens_for(Session, "after_transaction_create")
def _savepoint_begun(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        pending = _pending(session)
        pending.savepoints[transaction] = (len(pending.entries), pending.written)


@event.listens_for(Session, "after_soft_rollback")
def _savepoint_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    """A savepoint rolled back: its entries are forgotten, and entries appended inside it (the database took
    them back with it) are appended again later."""
    pending: _Pending | None = session.info.get(PENDING_KEY)
    if pending is not None and previous_transaction.nested and previous_transaction in pending.savepoints:
        recorded, written = pending.savepoints.pop(previous_transaction)
        del pending.entries[recorded:]
        pending.written = written


@event.listens_for(Session, "after_transaction_end")
def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    """The transaction committed (its entries with it) or rolled back (and they with it): none is pending."""
    if transaction.parent is None:
        session.info.pop(PENDING_KEY, None)


_TRAIL_TABLES = frozenset({cast(sa.Table, AuditEntry.__table__), cast(sa.Table, AuditHead.__table__)})


@event.listens_for(Session, "do_orm_execute")
def _readers_see_the_transaction(state: ORMExecuteState) -> None:
    """An ORM SELECT of the trail or the head in a transaction with entries not appended yet appends them first."""
    pending: _Pending | None = state.session.info.get(PENDING_KEY)
    if pending is None or pending.written == len(pending.entries) or not state.is_select:
        return
    statement = cast(visitors.ExternallyTraversible, state.statement)  # a SELECT is a traversible clause
    # the tables a statement names are annotated copies, equal to (and hashed as) the tables themselves
    if any(isinstance(element, sa.Table) and element in _TRAIL_TABLES for element in visitors.iterate(statement)):
        write_pending(state.session)


# --- reading and verifying -------------------------------------------------------------------


def head_and_seal(session: Session) -> tuple[ChainHead, HeadSeal] | None:
    """The audit head as the application recorded it and its stored seal (None when the row is missing)."""
    head = session.execute(sa.select(*(getattr(AuditHead, name) for name in _HEAD_COLUMNS))
                           .where(AuditHead.id == 1)).one_or_none()
    return None if head is None else (ChainHead(*head[:4]), HeadSeal(*head[4:]))


def verify(session: Session) -> VerifyResult:
    """Walk the whole trail; report the number checked and the first break, if any: a broken link, a head
    that is not the trail's end, or a head whose seal the instance's key ring does not vouch for."""
    return verify_from(session, None)[0]


def verify_from(session: Session, start: ChainHead | None, *, alongside: Callable[[], T] | None = None,
                alongside_share: float = 0.0) -> tuple[VerifyResult, ChainHead | None, T | None]:
    """Walk the trail after ``start`` (a position already verified, e.g. a sealed checkpoint's; None: the
    whole trail), then check the head and its seal as :func:`verify` does. Also returns the head checked (a
    checkpoint of it may be taken when the result is ok), None when there is none, and what ``alongside``
    returned: work of the caller's done in this process while other processes walk the trail
    (``audit_walk.walk_trail``; ``alongside_share``: about what it costs, as a share of the walk). Entries this
    transaction appended and has not committed are walked too: the workers cannot see them, so the parts they
    end early are walked again here (``audit_walk.join``)."""
    keys = key_ring(session)
    write_pending(session)  # the walk reads the trail through the connection
    found = head_and_seal(session)
    if found is None:
        return VerifyResult(0, "the audit chain head is missing", None), None, None
    head, seal = found
    if start is None:
        start = ChainHead(0, GENESIS_HASH, None, None)
    walked, beside = audit_walk.walk_trail(
        session, start.seq, start.entry_hash if start.seq else GENESIS_HASH,
        None if start.max_at is None else iso_utc(start.max_at),
        None if start.unordered_at is None else iso_utc(start.unordered_at), head.seq,
        alongside=alongside, alongside_share=alongside_share)
    return check_end(walked, head, (keys, seal)), head, beside


def head_seal_key(session: Session) -> tuple[str | None, str]:
    """The id of the key that sealed the head, and the id of the key ring's current key."""
    return session.scalar(sa.select(AuditHead.seal_key_id).where(AuditHead.id == 1)), key_ring(session).current[0]


def head_sealed(session: Session) -> bool:
    """Whether the audit head carries a seal at all (``verify`` checks that it matches)."""
    return session.scalar(sa.select(AuditHead.seal).where(AuditHead.id == 1)) is not None


@dataclass(frozen=True)
class Sealed:
    """What :func:`seal_existing` did: ``vouches_from`` is the first entry the new seal can vouch was
    written by the application (None when the trail was already sealed)."""

    head_seq: int
    vouches_from: int | None


def seal_existing(session: Session) -> Sealed:
    """Seal a head that has never been sealed (a trail written before sealing, or a new empty trail).

    An empty trail is sealed as it is. A trail of N entries gets an ``audit.sealed`` event, appended and
    sealed like any other: the seal vouches that nothing in entries 1..N changes from now on, not that they
    are what the application wrote (whoever could write the database before could have rewritten them); the
    event records that, with the first entry written under the seal. A head that is already sealed is left
    alone; one with a seal that does not match, or a trail sealed before whose seal is gone, is refused (it is
    evidence, not something to seal over).
    """
    keys = key_ring(session)
    found = head_and_seal(session)
    if found is None:
        raise DomainError("the audit chain head is missing")
    head, seal = found
    if seal.seal is not None:
        problem = seal_problem(keys, head, seal)
        if problem is not None:
            raise HeadNotSealed(f"not sealed again: {problem}")
        return Sealed(head.seq, None)
    sealed_before = session.scalar(sa.select(sa.func.max(AuditEntry.seq)).where(AuditEntry.action == "audit.sealed"))
    if sealed_before is not None:
        raise HeadNotSealed(f"not sealed again: this trail was sealed before (entry {sealed_before}, audit.sealed) "
                            "and its seal has been removed outside the application")
    if head.seq == 0:
        key_id, key = keys.current
        table = cast(sa.Table, AuditHead.__table__)
        updated = session.connection().execute(
            sa.update(table).where(table.c.id == 1, table.c.seq == 0, table.c.seal.is_(None))
            .values(seal_key_id=key_id, seal=seal_head(key, key_id, head)))
        if updated.rowcount != 1:
            raise DomainError("the audit trail changed while it was being sealed: try again")
        return Sealed(0, 1)
    flush(session)
    write_pending(session)
    _append(session, [(actor_of(session), (
        "audit.sealed", None, None, None,
        canonical_json({"vouches_from_seq": head.seq + 1, "unsealed_entries": head.seq,
                        "note": f"entries 1 to {head.seq} were written before the trail was sealed: the seal "
                                "vouches that they do not change from now on, not that they are what the "
                                "application wrote"}),
        None))], unsealed_ok=True)
    return Sealed(head.seq + 1, head.seq + 1)


@dataclass(frozen=True)
class AuditFilter:
    username: str | None = None
    action: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _actions(session: Session) -> list[str]:
    """Every distinct action in the trail, walking the action index from one value to the next (a few
    dozen index look-ups, however long the trail)."""
    table, following = AuditEntry.__table__, AuditEntry.__table__.alias("following")
    walk = sa.select(sa.func.min(table.c.action).label("action")).cte("walk", recursive=True)
    walk = walk.union_all(sa.select(sa.select(sa.func.min(following.c.action)).where(
        following.c.action > walk.c.action).scalar_subquery()).where(walk.c.action.is_not(None)))
    return list(session.scalars(sa.select(walk.c.action).where(walk.c.action.is_not(None))))


def actions(session: Session) -> list[str]:
    """Every distinct action in the trail (the audit screen's filter offers them)."""
    return _actions(session)


def _seq_range(session: Session, in_range: list[sa.ColumnElement[bool]],
               since: datetime | None) -> tuple[int, int] | None:
    """The first and last sequence numbers of the entries matching ``in_range`` (the conditions of a date
    range starting at ``since``), or None if there are none.

    Where the entries' times follow their sequence numbers (always, unless the server clock was set back:
    the audit head's ``unordered_at``), the first and last entry by time are found through the
    (occurred_at, seq) index in two look-ups. A range reaching back to or before a time the clock went back
    to has no such shortcut: its entries are counted through the index, which costs as many index entries
    as the range holds, and is still exact.
    """
    unordered_at = session.scalar(sa.select(AuditHead.unordered_at).where(AuditHead.id == 1))
    if unordered_at is None or (since is not None and since > unordered_at):
        entries = sa.select(AuditEntry.seq).where(*in_range).limit(1)
        query = sa.select(entries.order_by(AuditEntry.occurred_at, AuditEntry.seq).scalar_subquery(),
                          entries.order_by(AuditEntry.occurred_at.desc(), AuditEntry.seq.desc()).scalar_subquery())
    else:
        query = sa.select(sa.func.min(AuditEntry.seq), sa.func.max(AuditEntry.seq)).where(*in_range)
    first, last = session.execute(query).one()
    return None if first is None else (first, last)


def search(session: Session, filters: AuditFilter, *, before_seq: int | None = None,
           limit: int = 50) -> tuple[list[AuditEntry], int | None]:
    """Newest first, keyset-paginated on ``seq``: returns the page and the cursor of the next one.

    The user name, record and action filters each have an index that serves them in ``seq`` order, so
    their pages cost the same however long the trail; a date range is first resolved to the sequence
    numbers it covers (``_seq_range``), so every filter reads only between them. "Action starts with"
    (case-sensitive) is resolved to the actions that exist, then each is read newest first through its own
    index range: a prefix matched by a few entries in a million is not a scan of the million, and one
    matched by most is not a sort of them.
    """
    conditions = []
    if filters.username:
        conditions.append(AuditEntry.username == filters.username)
    if filters.entity_type:
        conditions.append(AuditEntry.entity_type == filters.entity_type)
    if filters.entity_id:
        conditions.append(AuditEntry.entity_id == filters.entity_id)
    newest = None if before_seq is None else before_seq - 1
    in_range = []
    if filters.since:
        in_range.append(AuditEntry.occurred_at >= filters.since)
    if filters.until:
        in_range.append(AuditEntry.occurred_at < filters.until)
    if in_range:
        covered = _seq_range(session, in_range, filters.since)
        if covered is None:
            return [], None
        conditions.append(AuditEntry.seq >= covered[0])
        newest = covered[1] if newest is None else min(newest, covered[1])
        # still filtered by time: the range may hold entries of other times when the clock went back
        conditions += in_range
    if newest is not None:
        conditions.append(AuditEntry.seq <= newest)
    query = sa.select(AuditEntry).where(*conditions)
    if filters.action:
        actions = [action for action in _actions(session) if action.startswith(filters.action)]
        if not actions:
            return [], None
        newest_of = [sa.select(AuditEntry.seq).where(*conditions, AuditEntry.action == action)
                     .order_by(AuditEntry.seq.desc()).limit(limit + 1).subquery().select() for action in actions]
        query = sa.select(AuditEntry).where(AuditEntry.seq.in_(sa.union_all(*newest_of).scalar_subquery()))
    entries = list(session.scalars(query.order_by(AuditEntry.seq.desc()).limit(limit + 1)))
    next_cursor = entries[limit - 1].seq if len(entries) > limit else None
    return entries[:limit], next_cursor
