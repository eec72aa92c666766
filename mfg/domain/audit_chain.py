"""The audit trail's hash chain (21 CFR 11.10(e)), as pure functions.

Each entry's hash covers its own canonical content and the hash of the entry before it, so an entry
altered, deleted or inserted outside the application breaks the chain from that point on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring  # the C string encoder json.dumps(ensure_ascii=False) uses
from typing import Any, NamedTuple

from .canonical import canonical_json, iso_utc

GENESIS_HASH = "0" * 64

# The canonical JSON of ``ChainEntry.content()``, keys in sorted order, as one template: formatting it
# gives exactly ``canonical_json(entry.content())`` (a property test holds the two equal over arbitrary
# text) at a fraction of the cost, which matters when ``audit verify`` walks a million entries.
_TEMPLATE = ('{"action":%s,"after":%s,"before":%s,"entity_id":%s,"entity_type":%s,"occurred_at":"%s",'
             '"prev_hash":%s,"reason":%s,"seq":%d,"user_id":%s,"username":%s}')


class ChainEntry(NamedTuple):
    """The fields of an audit entry that its hash covers (a tuple: a million are built by a verify)."""

    seq: int
    occurred_at: datetime
    user_id: int | None
    username: str
    action: str
    entity_type: str | None
    entity_id: str | None
    before: str | None  # canonical JSON text, or None
    after: str | None
    reason: str | None
    prev_hash: str

    def content(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "occurred_at": iso_utc(self.occurred_at),
            "user_id": self.user_id,
            "username": self.username,
            "action": self.action,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
            "prev_hash": self.prev_hash,
        }

    def canonical_text(self) -> str:
        """The exact text the hash covers: the canonical JSON of :meth:`content`."""
        seq, occurred_at, user_id, username, action, entity_type, entity_id, before, after, reason, prev_hash = self
        if type(seq) is not int or (user_id is not None and type(user_id) is not int):
            return canonical_json(self.content())  # not what the trail stores; keep the general rule's answer
        enc = encode_basestring
        return _TEMPLATE % (
            "null" if action is None else enc(action), "null" if after is None else enc(after),
            "null" if before is None else enc(before), "null" if entity_id is None else enc(entity_id),
            "null" if entity_type is None else enc(entity_type), iso_utc(occurred_at),
            "null" if prev_hash is None else enc(prev_hash), "null" if reason is None else enc(reason), seq,
            "null" if user_id is None else user_id, "null" if username is None else enc(username))

    def compute_hash(self) -> str:
        return hashlib.sha256(self.canonical_text().encode("utf-8")).hexdigest()


class ChainHead(NamedTuple):
    """What the application recorded of the trail when it last appended (the ``audit_head`` row)."""

    seq: int
    entry_hash: str
    max_at: datetime | None  # the latest time of any entry
    unordered_at: datetime | None  # the latest time of an entry earlier than an entry before it


def next_times(max_at: datetime | None, unordered_at: datetime | None,
               at: datetime) -> tuple[datetime | None, datetime | None]:
    """A trail's ``(max_at, unordered_at)`` once an entry of time ``at`` is appended to it.

    An entry earlier than the latest before it (the server clock was set back) moves ``unordered_at``;
    entries of equal times are in order (their sequence numbers order them).
    """
    if max_at is None or at > max_at:
        return at, unordered_at
    if at < max_at and (unordered_at is None or at > unordered_at):
        return max_at, at
    return max_at, unordered_at


@dataclass(frozen=True)
class VerifyResult:
    checked: int
    problem: str | None = None  # None when the chain is intact
    bad_seq: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_chain(entries: Iterable[tuple[ChainEntry, str]], head: ChainHead | None = None) -> VerifyResult:
    """Walk ``(entry, stored_hash)`` pairs in sequence order; report the first break.

    ``head`` is what the application recorded when it last appended: its last sequence number and hash
    catch entries removed from the end of the trail; its record of the trail's times (which the audit
    trail screen relies on to find a date range) must match the entries' times.
    """
    expected_prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    max_at: datetime | None = None
    unordered_at: datetime | None = None
    for entry, stored_hash in entries:
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                return VerifyResult(checked, f"entry {expected_seq} is missing (next is {entry.seq}): deleted",
                                    expected_seq)
            return VerifyResult(checked, f"entry {entry.seq} is out of sequence (expected {expected_seq})",
                                entry.seq)
        if entry.prev_hash != expected_prev:
            return VerifyResult(checked, f"entry {entry.seq} does not link to entry {entry.seq - 1}: "
                                         "an entry was inserted, deleted or altered", entry.seq)
        if entry.compute_hash() != stored_hash:
            return VerifyResult(checked, f"entry {entry.seq} was altered: its content does not match its hash",
                                entry.seq)
        max_at, unordered_at = next_times(max_at, unordered_at, entry.occurred_at)
        checked += 1
        expected_prev = stored_hash
        expected_seq += 1
    if head is not None:
        if head.seq != expected_seq - 1 or (head.seq and head.entry_hash != expected_prev):
            return VerifyResult(checked, f"the trail ends at entry {expected_seq - 1} but the application "
                                         f"recorded entry {head.seq} as the last: entries were removed or added",
                                expected_seq)
        if (head.max_at, head.unordered_at) != (max_at, unordered_at):
            return VerifyResult(checked, "the audit head's record of the trail's times (latest "
                                         f"{_when(head.max_at)}, out of order up to {_when(head.unordered_at)}) "
                                         f"does not match the entries (latest {_when(max_at)}, out of order up to "
                                         f"{_when(unordered_at)})", None)
    return VerifyResult(checked)


def _when(at: datetime | None) -> str:
    return "none" if at is None else iso_utc(at)
