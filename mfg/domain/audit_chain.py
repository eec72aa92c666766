"""The audit trail's hash chain (21 CFR 11.10(e)) and the keyed seal over its head, as pure functions.

Each entry's hash covers its own canonical content and the hash of the entry before it, so an entry
altered, deleted or inserted outside the application breaks the chain from that point on.

The chain alone is unkeyed: someone who can write the database can rewrite an entry, recompute every later
hash with :meth:`ChainEntry.compute_hash` and move the head. The head therefore also carries a seal, an
HMAC-SHA256 under a secret key kept outside the database (the instance folder's key ring,
``mfg/audit_key.py``), over the head's whole content (:func:`seal_head`). Without the key no one can seal a
head that differs from one the application sealed: editing, inserting or deleting entries, cutting the tail
or moving the head all leave a head whose seal does not match. Only the head is sealed: a seal on every
entry would let an attacker cut the trail at any sealed entry. What a seal cannot tell apart is a genuine
older head put back with the trail as it was then (a restored backup): see the README's threat model.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from json.encoder import encode_basestring  # the C string encoder json.dumps(ensure_ascii=False) uses
from typing import Any, NamedTuple, cast

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
        return entry_text(self.seq, iso_utc(self.occurred_at), self.user_id, self.username, self.action,
                          self.entity_type, self.entity_id, self.before, self.after, self.reason, self.prev_hash)

    def compute_hash(self) -> str:
        return hashlib.sha256(self.canonical_text().encode("utf-8")).hexdigest()


def entry_text(seq: Any, at: str, user_id: Any, username: Any, action: Any, entity_type: Any, entity_id: Any,
               before: Any, after: Any, reason: Any, prev_hash: Any) -> str:
    """The text an entry's hash covers, from its stored fields (``at``: its time as ``iso_utc`` writes it):
    the canonical JSON of :meth:`ChainEntry.content`, by a template (a property test holds the two equal over
    arbitrary text). The one place the form is written; the verify calls it a million times."""
    if type(seq) is not int or (user_id is not None and type(user_id) is not int):
        # not what the trail stores (e.g. text put into a number column outside the application): the general rule
        return canonical_json({"seq": seq, "occurred_at": at, "user_id": user_id, "username": username,
                               "action": action, "entity_type": entity_type, "entity_id": entity_id,
                               "before": before, "after": after, "reason": reason, "prev_hash": prev_hash})
    enc = encode_basestring
    return _TEMPLATE % (
        "null" if action is None else enc(action), "null" if after is None else enc(after),
        "null" if before is None else enc(before), "null" if entity_id is None else enc(entity_id),
        "null" if entity_type is None else enc(entity_type), at,
        "null" if prev_hash is None else enc(prev_hash), "null" if reason is None else enc(reason), seq,
        "null" if user_id is None else user_id, "null" if username is None else enc(username))


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


# Domain separation: the text a head seal covers starts with this line, so a seal made for anything else
# under the same key (a future exported checkpoint must use its own prefix) can never pass as a head seal.
HEAD_SEAL_PREFIX = "mfg audit head seal v1"
KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,40}")


class HeadSeal(NamedTuple):
    """The seal stored with the head: which key of the ring made it, and the HMAC (hex)."""

    key_id: str | None
    seal: str | None


@dataclass(frozen=True)
class KeyRing:
    """The audit keys, oldest first; the last one seals, every one verifies what it sealed."""

    keys: tuple[tuple[str, bytes], ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("an audit key ring holds at least one key")
        ids = [key_id for key_id, _ in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError("an audit key ring names each key once")
        for key_id, key in self.keys:
            if not KEY_ID.fullmatch(key_id) or len(key) < 32:
                raise ValueError(f"audit key {key_id!r}: an id of letters, digits, '.', '_' or '-' and 32 bytes "
                                 "or more of key are needed")

    @property
    def current(self) -> tuple[str, bytes]:
        return self.keys[-1]

    def get(self, key_id: str) -> bytes | None:
        return next((key for known, key in self.keys if known == key_id), None)

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """One key a line, ``<key id> <key as hex>``, oldest first; blank lines and ``#`` comments skipped."""
        keys = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            try:
                if len(parts) != 2:
                    raise ValueError
                keys.append((parts[0], bytes.fromhex(parts[1])))
            except ValueError:
                raise ValueError(f"audit key ring line {number}: expected '<key id> <key as hex>'") from None
        return cls(tuple(keys))

    @staticmethod
    def line(key_id: str, key: bytes) -> str:
        return f"{key_id} {key.hex()}\n"


def head_seal_text(key_id: str, head: ChainHead) -> str:
    """The exact text a head seal covers: the domain-separation prefix, the key id and every head field."""
    return "\n".join((HEAD_SEAL_PREFIX, key_id, str(head.seq), head.entry_hash,
                      _when(head.max_at), _when(head.unordered_at)))


def seal_head(key: bytes, key_id: str, head: ChainHead) -> str:
    """HMAC-SHA256 of :func:`head_seal_text` under ``key`` (hex): the one implementation of the seal."""
    return hmac.new(key, head_seal_text(key_id, head).encode("utf-8"), hashlib.sha256).hexdigest()


def seal_problem(keys: KeyRing, head: ChainHead, seal: HeadSeal) -> str | None:
    """Why ``seal`` does not vouch for ``head`` under ``keys``, or None when it does."""
    if seal.seal is None or seal.key_id is None:
        return ("the audit head is not sealed: the trail was written before sealing (run `flask --app mfg audit "
                "seal-existing`) or its seal was removed outside the application")
    key = keys.get(seal.key_id)
    if key is None:
        return (f"the audit head is sealed with key {seal.key_id!r}, which is not in this instance's audit key "
                "ring: the seal was forged, or the key ring is not this trail's")
    if not hmac.compare_digest(seal_head(key, seal.key_id, head), seal.seal):
        return ("the audit head's seal does not match the head: the trail or its head was changed outside the "
                "application (entries edited, inserted or removed and the head moved, or the seal rewritten)")
    return None


# A signature's seal covers its manifest, under its own prefix (never valid as a head seal, nor the reverse).
SIGNATURE_SEAL_PREFIX = "mfg signature seal v1"


class SignatureManifest(NamedTuple):
    """What a signature attests (21 CFR 11.50, 11.70): who, under which printed name, with which meaning, when,
    on which record, and the sha256 of exactly what was signed (the content's canonical JSON)."""

    user_id: int
    username: str
    printed_name: str
    meaning: str
    signed_at: datetime
    record_type: str
    record_id: str
    content_sha256: str
    comment: str | None


def signature_seal_text(key_id: str, manifest: SignatureManifest) -> str:
    """The exact text a signature seal covers: the prefix, the key id and the manifest as canonical JSON."""
    fields = manifest._asdict()
    fields["signed_at"] = iso_utc(manifest.signed_at)
    return "\n".join((SIGNATURE_SEAL_PREFIX, key_id, canonical_json(fields)))


def seal_signature(key: bytes, key_id: str, manifest: SignatureManifest) -> str:
    """HMAC-SHA256 of :func:`signature_seal_text` under ``key`` (hex): the one implementation of a signature seal."""
    return hmac.new(key, signature_seal_text(key_id, manifest).encode("utf-8"), hashlib.sha256).hexdigest()


def signature_seal_problem(keys: KeyRing, manifest: SignatureManifest, key_id: str | None,
                           seal: str | None) -> str | None:
    """Why ``seal`` does not vouch for ``manifest`` under ``keys``, or None when it does."""
    if seal is None or key_id is None:
        return "the signature is not sealed: it was made outside the application, or its seal was removed"
    key = keys.get(key_id)
    if key is None:
        return f"the signature is sealed with key {key_id!r}, which is not in this instance's audit key ring"
    if not hmac.compare_digest(seal_signature(key, key_id, manifest), seal):
        return ("the signature's seal does not match it: who signed, the meaning, the time, the record or what "
                "was signed was changed outside the application")
    return None


# An anchor is a position of the trail (a head as it was) sealed to be kept outside the system: an exported
# checkpoint file, the audit position a signed PDF carries, the checkpoint a full verify leaves for the next
# incremental one. Its own prefix: an anchor's seal never passes as a head seal, nor the reverse.
ANCHOR_SEAL_PREFIX = "mfg audit anchor v1"


class Anchor(NamedTuple):
    """A sealed position of the trail: the head's fields at that moment, the key id and the seal."""

    seq: int
    entry_hash: str
    max_at: datetime | None
    unordered_at: datetime | None
    key_id: str
    seal: str

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.seq, self.entry_hash, self.max_at, self.unordered_at)


def anchor_seal_text(key_id: str, head: ChainHead) -> str:
    return "\n".join((ANCHOR_SEAL_PREFIX, key_id, str(head.seq), head.entry_hash,
                      _when(head.max_at), _when(head.unordered_at)))


def seal_anchor(key: bytes, key_id: str, head: ChainHead) -> Anchor:
    """``head`` sealed as an anchor under ``key``: the one implementation of an anchor's seal."""
    seal = hmac.new(key, anchor_seal_text(key_id, head).encode("utf-8"), hashlib.sha256).hexdigest()
    return Anchor(*head, key_id, seal)


def anchor_seal_problem(keys: KeyRing, anchor: Anchor) -> str | None:
    """Why ``anchor``'s seal does not vouch for its position under ``keys``, or None when it does."""
    key = keys.get(anchor.key_id)
    if key is None:
        return (f"the anchor at entry {anchor.seq} is sealed with key {anchor.key_id!r}, which is not in this "
                "instance's audit key ring")
    if not hmac.compare_digest(seal_anchor(key, anchor.key_id, anchor.head).seal, anchor.seal):
        return f"the anchor at entry {anchor.seq} does not match its seal: it was altered or forged"
    return None


# An anchor kept outside the system (``flask --app mfg audit seal --out``): a small JSON document. Holds no
# secret: its seal can only be checked, and only be made, with the instance's audit key.
ANCHOR_FORMAT = "mfg-audit-anchor"
ANCHOR_FORMAT_VERSION = 1


def anchor_document(anchor: Anchor, *, created_at: datetime, site: str | None = None) -> dict[str, Any]:
    """``anchor`` as the JSON document of an anchor file (``site``: the instance's name, when it has one)."""
    return {"format": ANCHOR_FORMAT, "version": ANCHOR_FORMAT_VERSION, "site": site,
            "seq": anchor.seq, "entry_hash": anchor.entry_hash,
            "max_at": None if anchor.max_at is None else iso_utc(anchor.max_at),
            "unordered_at": None if anchor.unordered_at is None else iso_utc(anchor.unordered_at),
            "key_id": anchor.key_id, "seal": anchor.seal, "created_at": iso_utc(created_at)}


def anchor_from_document(document: object) -> Anchor:
    """The anchor of an anchor file's JSON document; ``ValueError`` saying why when it is not one. Its seal is
    not checked here (``anchor_seal_problem``)."""
    if not isinstance(document, dict) or document.get("format") != ANCHOR_FORMAT:
        raise ValueError(f"not an audit anchor (no \"format\": \"{ANCHOR_FORMAT}\")")
    if document.get("version") != ANCHOR_FORMAT_VERSION:
        raise ValueError(f"audit anchor version {document.get('version')!r} is not one this version reads "
                         f"({ANCHOR_FORMAT_VERSION})")
    seq, entry_hash, key_id, seal = (document.get(name) for name in ("seq", "entry_hash", "key_id", "seal"))
    if type(seq) is not int or seq < 0:
        raise ValueError("the anchor's seq is not a whole number")
    for name, value in (("entry_hash", entry_hash), ("key_id", key_id), ("seal", seal)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"the anchor's {name} is missing")
    return Anchor(seq, cast(str, entry_hash), _parse_when(document.get("max_at"), "max_at"),
                  _parse_when(document.get("unordered_at"), "unordered_at"), cast(str, key_id), cast(str, seal))


def _parse_when(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise ValueError(f"the anchor's {name} is not a UTC time (YYYY-MM-DDTHH:MM:SS.ffffffZ)") from None


ANCHOR_KEYWORD = "mfg-audit-anchor-v1"


def anchor_keyword(anchor: Anchor) -> str:
    """The anchor as one PDF keyword (no comma: keywords are joined by commas): how a signed document carries the
    audit position at its issue in its metadata."""
    return " ".join((ANCHOR_KEYWORD, f"seq={anchor.seq}", f"hash={anchor.entry_hash}", f"max={_when(anchor.max_at)}",
                     f"unordered={_when(anchor.unordered_at)}", f"key={anchor.key_id}", f"seal={anchor.seal}"))


def parse_anchor_keyword(keywords: str) -> Anchor | None:
    """The anchor in a document's keywords (:func:`anchor_keyword`), or None if they hold none.
    Raises ValueError for one that is malformed."""
    start = keywords.find(ANCHOR_KEYWORD)
    if start < 0:
        return None
    fields = dict(part.split("=", 1) for part in keywords[start:].split(",", 1)[0].split()[1:] if "=" in part)
    try:
        return Anchor(int(fields["seq"]), fields["hash"], _parse_when(_none(fields["max"]), "max_at"),
                      _parse_when(_none(fields["unordered"]), "unordered_at"), fields["key"], fields["seal"])
    except (KeyError, ValueError):
        raise ValueError("malformed audit anchor in the document's keywords: "
                         f"{keywords[start:start + 300]!r}") from None


def _none(text: str) -> str | None:
    return None if text == "none" else text


@dataclass(frozen=True)
class VerifyResult:
    checked: int
    problem: str | None = None  # None when the chain is intact
    bad_seq: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class Walked(NamedTuple):
    """Where a walk over part of the trail ended: ``checked`` entries after its start, the first break
    (``problem``, ``bad_seq``) if any, and the position reached: the last good entry's sequence number and
    stored hash, and the trail's times up to it (``iso_utc`` texts: of one width, they order as the times do)."""

    checked: int
    problem: str | None
    bad_seq: int | None
    seq: int
    entry_hash: str
    max_at: str | None
    unordered_at: str | None


# One stored entry as a walk reads it: seq, time (its ``iso_utc`` text, None when the stored value is not a
# time), user_id, username, action, entity_type, entity_id, before, after, reason, prev_hash, entry_hash.
Row = tuple[Any, ...]


def walk(rows: Iterable[Row], seq: int, entry_hash: str, max_at: str | None = None,
         unordered_at: str | None = None) -> Walked:
    """Walk stored entries in sequence order from the position ``seq`` (stored hash ``entry_hash``; 0 and
    ``GENESIS_HASH`` for the trail's start) and the trail's times there; stop at the first break: a missing or
    out-of-order entry, a link to anything but the entry before, or content that does not match its hash.

    The one place the chain's rules are checked: :func:`verify_chain` walks ``ChainEntry`` objects through it,
    and ``services.audit_walk`` walks the database's rows through it, in parts, one process per part. The times
    are ``next_times`` over texts (the same order); written out here, once, because this loop runs a million
    times in a full verify."""
    sha256 = hashlib.sha256
    text = entry_text
    expected_seq = seq + 1
    expected_prev = entry_hash
    checked = 0
    for row in rows:
        at = row[1]
        stored = row[11]
        if row[0] != expected_seq:
            if row[0] > expected_seq:
                problem = f"entry {expected_seq} is missing (next is {row[0]}): deleted"
                return Walked(checked, problem, expected_seq, expected_seq - 1, expected_prev, max_at, unordered_at)
            return Walked(checked, f"entry {row[0]} is out of sequence (expected {expected_seq})", row[0],
                          expected_seq - 1, expected_prev, max_at, unordered_at)
        if row[10] != expected_prev:
            return Walked(checked, f"entry {expected_seq} does not link to entry {expected_seq - 1}: an entry was "
                                   "inserted, deleted or altered", expected_seq, expected_seq - 1, expected_prev,
                          max_at, unordered_at)
        if at is None or sha256(text(*row[:11]).encode("utf-8")).hexdigest() != stored:
            return Walked(checked, f"entry {expected_seq} was altered: its content does not match its hash",
                          expected_seq, expected_seq - 1, expected_prev, max_at, unordered_at)
        if max_at is None or at > max_at:
            max_at = at
        elif at < max_at and (unordered_at is None or at > unordered_at):
            unordered_at = at
        checked += 1
        expected_prev = stored
        expected_seq += 1
    return Walked(checked, None, None, expected_seq - 1, expected_prev, max_at, unordered_at)


def check_end(walked: Walked, head: ChainHead | None, seal: tuple[KeyRing, HeadSeal] | None) -> VerifyResult:
    """The result of a walk that reached the trail's end (its parts joined): its first break, else whether the
    ``head`` the application recorded is where the walk ended, with the same times, sealed by the key ring."""
    checked = walked.checked
    if walked.problem is not None:
        return VerifyResult(checked, walked.problem, walked.bad_seq)
    if head is not None:
        if head.seq != walked.seq or (head.seq and head.entry_hash != walked.entry_hash):
            return VerifyResult(checked, f"the trail ends at entry {walked.seq} but the application "
                                         f"recorded entry {head.seq} as the last: entries were removed or added",
                                walked.seq + 1)
        head_times = (_text(head.max_at), _text(head.unordered_at))
        if head_times != (walked.max_at, walked.unordered_at):
            return VerifyResult(checked, "the audit head's record of the trail's times (latest "
                                         f"{head_times[0] or 'none'}, out of order up to {head_times[1] or 'none'}) "
                                         f"does not match the entries (latest {walked.max_at or 'none'}, out of "
                                         f"order up to {walked.unordered_at or 'none'})", None)
        if seal is not None:
            problem = seal_problem(seal[0], head, seal[1])
            if problem is not None:
                return VerifyResult(checked, problem, None)
    return VerifyResult(checked)


def _text(at: datetime | None) -> str | None:
    return None if at is None else iso_utc(at)


def verify_chain(entries: Iterable[tuple[ChainEntry, str]], head: ChainHead | None = None,
                 seal: tuple[KeyRing, HeadSeal] | None = None, *, start: ChainHead | None = None) -> VerifyResult:
    """Walk ``(entry, stored_hash)`` pairs in sequence order; report the first break (:func:`walk`).

    ``head`` is what the application recorded when it last appended: its last sequence number and hash
    catch entries removed from the end of the trail; its record of the trail's times (which the audit
    trail screen relies on to find a date range) must match the entries' times. ``seal`` (the key ring
    and the head's stored seal) must vouch for ``head``: only the key's holder can seal a head.

    ``start``: a position of the trail already verified (a sealed checkpoint's): ``entries`` are then those
    after ``start.seq``, the first linking to ``start.entry_hash``, and the trail's times carry on from
    ``start``'s. None: the whole trail, from the genesis hash.
    """
    if start is None:
        start = ChainHead(0, GENESIS_HASH, None, None)
    rows = ((entry.seq, iso_utc(entry.occurred_at), *entry[2:], stored) for entry, stored in entries)
    walked = walk(rows, start.seq, start.entry_hash if start.seq else GENESIS_HASH, _text(start.max_at),
                  _text(start.unordered_at))
    return check_end(walked, head, seal)


def _when(at: datetime | None) -> str:
    return "none" if at is None else iso_utc(at)
