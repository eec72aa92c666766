"""Anchors of the audit trail: positions of it (a head as it was) sealed with the instance's audit key
(``domain.audit_chain.seal_anchor``), kept in the database as checkpoints and outside the system as files
(issue [3.5] items 4 and 7).

- :func:`current_anchor`: the head as it is now, its own seal checked, sealed as an anchor. A signed document
  can carry it (its audit position at issue); ``audit seal --out`` writes it to a file (:func:`export_checkpoint`).
- :func:`check_anchor`: whether the trail still holds an anchor's position: its seal is the instance's, the
  trail reaches its entry and that entry still has the anchor's hash. With a full verify that passes, an
  anchor that checks proves the trail up to its entry is the one it was when the anchor was taken, even
  against someone who holds both the database and the key, as long as the anchor itself was out of their reach.
- :func:`verify_full` / :func:`verify_since_last`: a verify that passes is recorded as a ``verified``
  checkpoint (:func:`record_verified`); the next incremental verify checks that checkpoint's seal and entry,
  then walks only the entries written after it (``WHERE seq > :n``, through the primary key).

The readers of anchor files are a table of suffix to reader (:data:`READERS`): checkpoint files (``.json``) and
signed documents (``.pdf``, the audit position they carry in their keywords).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain.audit_chain import (
    Anchor,
    ChainHead,
    VerifyResult,
    anchor_document,
    anchor_from_document,
    anchor_seal_problem,
    parse_anchor_keyword,
    seal_anchor,
    seal_problem,
)
from ..domain.audit_state import StateReport
from ..domain.canonical import iso_utc
from ..domain.errors import DomainError
from ..models import AuditCheckpoint, AuditEntry, utcnow
from . import audit, audit_state

VERIFIED = "verified"  # taken after a verify that passed: where the next `verify --since-last` starts
EXPORTED = "exported"  # written to a file to keep off-site (`audit seal --out`)


def current_anchor(session: Session) -> Anchor:
    """The audit head as it is now, sealed as an anchor with the current key. Refused (``HeadNotSealed``) when
    the head's own seal does not vouch for it: an anchor is never taken of a head the application did not seal."""
    keys = audit.key_ring(session)
    found = audit.head_and_seal(session)
    if found is None:
        raise DomainError("the audit chain head is missing")
    head, seal = found
    problem = seal_problem(keys, head, seal)
    if problem is not None:
        raise audit.HeadNotSealed(f"no anchor taken: {problem}. Run `flask --app mfg audit verify`.")
    key_id, key = keys.current
    return seal_anchor(key, key_id, head)


def check_anchor(session: Session, anchor: Anchor) -> str | None:
    """Why the trail does not hold ``anchor``'s position, or None when it does: the anchor's seal is the
    instance's, the trail reaches its entry, and that entry has the anchor's hash (so, the chain being intact,
    every entry up to it is as it was when the anchor was taken). Position 0 (the empty trail) is held by any
    trail. Only the anchor's entry is read: run a full verify for the chain itself."""
    problem = anchor_seal_problem(audit.key_ring(session), anchor)
    if problem is not None:
        return problem
    if anchor.seq == 0:
        return None
    stored = session.scalar(sa.select(AuditEntry.entry_hash).where(AuditEntry.seq == anchor.seq))
    if stored is None:
        last = session.scalar(sa.select(sa.func.max(AuditEntry.seq))) or 0
        if last < anchor.seq:
            return (f"the trail ends at entry {last}, short of the anchor's entry {anchor.seq}: entries were removed "
                    "after the anchor was taken")
        return f"entry {anchor.seq}, the anchor's, is missing from the trail: it was deleted after the anchor was taken"
    if stored != anchor.entry_hash:
        return (f"entry {anchor.seq}'s hash differs from the anchor's: entry {anchor.seq} or an entry before it was "
                "rewritten after the anchor was taken")
    return None


def plain(anchor: Anchor) -> dict[str, Any]:
    """The anchor as plain data: the audit position a document's snapshot ends with (``documents.snapshot_anchor``
    reads it back)."""
    return {"seq": anchor.seq, "entry_hash": anchor.entry_hash,
            "max_at": iso_utc(anchor.max_at) if anchor.max_at else None,
            "unordered_at": iso_utc(anchor.unordered_at) if anchor.unordered_at else None,
            "key_id": anchor.key_id, "seal": anchor.seal}


def _record(session: Session, anchor: Anchor, kind: str) -> AuditCheckpoint:
    checkpoint = AuditCheckpoint(seq=anchor.seq, entry_hash=anchor.entry_hash, max_at=anchor.max_at,
                                 unordered_at=anchor.unordered_at, key_id=anchor.key_id, seal=anchor.seal,
                                 created_at=utcnow(), kind=kind, created_by=audit.actor_of(session).name)
    session.add(checkpoint)
    session.flush()
    return checkpoint


def latest_checkpoint(session: Session, kind: str = VERIFIED) -> AuditCheckpoint | None:
    return session.scalars(sa.select(AuditCheckpoint).where(AuditCheckpoint.kind == kind)
                           .order_by(AuditCheckpoint.id.desc()).limit(1)).one_or_none()


@dataclass(frozen=True)
class Verification:
    """A verify's outcome: ``result``; ``start``, the checkpoint the walk started from (None: the whole trail,
    from the first entry); ``head``, the head checked (None when there is none)."""

    result: VerifyResult
    start: AuditCheckpoint | None = None
    head: ChainHead | None = None
    start_seq: int | None = None  # ``start``'s entry, kept apart from the row (a rollback expires the row)
    state: StateReport | None = None  # the current state against the trail, when the verify checked it

    @property
    def ok(self) -> bool:
        return self.result.ok


# About what the state check costs beside the chain walk of the same trail (bench/audit_state.py): the process
# that runs it walks a smaller part of the chain (``audit_walk``)
STATE_SHARE = 0.8


def verify_full(session: Session, *, state: bool = False) -> Verification:
    """The whole trail from its first entry, then its head and the head's seal (``audit.verify``): what an
    inspection uses. ``state``: also check that every audited row holds what the trail says
    (``audit_state.check``), in this process while other processes walk the chain (``Verification.state``)."""
    result, head, report = audit.verify_from(session, None, alongside=(lambda: audit_state.check(session))
                                             if state else None, alongside_share=STATE_SHARE if state else 0.0)
    return Verification(result, None, head, state=report)


def verify_since_last(session: Session) -> Verification:
    """Only the entries after the latest ``verified`` checkpoint, then the head and its seal exactly as a full
    verify: the checkpoint's seal is checked and its entry must still have its hash; the walk starts from the
    checkpoint's hash and times. Without a checkpoint, a full verify (``start`` None says so). A checkpoint
    that does not check is reported as the break, never passed over for an older one."""
    checkpoint = latest_checkpoint(session, VERIFIED)
    if checkpoint is None:
        return verify_full(session)
    anchor = checkpoint.anchor()
    problem = check_anchor(session, anchor)
    if problem is not None:
        return Verification(VerifyResult(0, f"the latest verified checkpoint ({checkpoint.id}, taken "
                                            f"{checkpoint.created_at:%Y-%m-%d %H:%M:%S} UTC) does not check: "
                                            f"{problem}. Run a full `flask --app mfg audit verify` and "
                                            "investigate", anchor.seq), checkpoint, None, anchor.seq)
    result, head, _ = audit.verify_from(session, anchor.head)
    return Verification(result, checkpoint, head, anchor.seq)


def record_verified(session: Session, verification: Verification) -> AuditCheckpoint:
    """Record a ``verified`` checkpoint of the head ``verification`` checked (a verify that passed), then the
    ``audit.verified`` event naming it. The checkpoint comes first and is of the head verified, not of the
    event: it holds only what was checked. The event is appended as any other, on a head whose seal is checked
    again (``audit._append``)."""
    if not verification.ok or verification.head is None:
        raise DomainError("only a verify that passed is recorded as a checkpoint")
    key_id, key = audit.key_ring(session).current
    checkpoint = _record(session, seal_anchor(key, key_id, verification.head), VERIFIED)
    details: dict[str, Any] = {"checkpoint_seq": checkpoint.seq, "entries_checked": verification.result.checked,
                               "mode": "full" if verification.start_seq is None else "since-last"}
    if verification.start_seq is not None:
        details["from_checkpoint_seq"] = verification.start_seq
    audit.record_event(session, "audit.verified", details=details)
    return checkpoint


def export_checkpoint(session: Session, *, note: str | None = None) -> AuditCheckpoint:
    """Record an ``exported`` checkpoint of the head as it is now (:func:`current_anchor`), then the
    ``audit.checkpoint_exported`` event naming it (and ``note``, e.g. the file it goes to)."""
    checkpoint = _record(session, current_anchor(session), EXPORTED)
    details: dict[str, Any] = {"checkpoint_seq": checkpoint.seq}
    if note:
        details["note"] = note
    audit.record_event(session, "audit.checkpoint_exported", details=details)
    return checkpoint


# --- anchor files --------------------------------------------------------------------------------------

def anchor_file_text(anchor: Anchor, *, created_at: datetime, site: str | None) -> str:
    return json.dumps(anchor_document(anchor, created_at=created_at, site=site), indent=2) + "\n"


def write_anchor_file(path: Path, text: str) -> None:
    """Write an anchor file; an existing file is never overwritten (``FileExistsError``). It holds no secret."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def read_json_anchor(path: Path) -> list[Anchor]:
    """The anchor of a checkpoint file (``audit seal --out``); ``ValueError`` when it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    return [anchor_from_document(document)]


def read_pdf_anchor(path: Path) -> list[Anchor]:
    """The audit position a signed document carries in its keywords (``documents.render``); none for a document
    issued before documents carried one. ``ValueError`` when it is not a PDF or its position is malformed.
    The document's own signature is ``verify-pdf``'s to check: the position's seal vouches for the position."""
    from pypdf.errors import PyPdfError

    from ..reports import pdf as pdfs

    try:
        keywords = pdfs.keywords(path.read_bytes())
    except PyPdfError as exc:
        raise ValueError(f"not a PDF this can read ({type(exc).__name__})") from None
    anchor = parse_anchor_keyword(keywords)
    return [] if anchor is None else [anchor]


# A reader returns every anchor a file holds (none: the file carries no anchor, reported as not checked), or
# raises ValueError saying why it cannot be read.
AnchorReader = Callable[[Path], list[Anchor]]
READERS: dict[str, AnchorReader] = {".json": read_json_anchor, ".pdf": read_pdf_anchor}


@dataclass(frozen=True)
class AnchorCheck:
    """One anchor (or one file) checked: ``problem`` None when the trail holds it; ``checked`` False for a
    file that was not read (no reader for it yet), which is neither a pass nor a failure."""

    source: str
    anchor: Anchor | None
    problem: str | None
    checked: bool = True


def check_anchor_files(session: Session, directory: Path,
                       readers: dict[str, AnchorReader] | None = None) -> Iterator[AnchorCheck]:
    """Every anchor of every file in ``directory`` (sorted by name) checked with :func:`check_anchor`."""
    readers = READERS if readers is None else readers
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        suffix = path.suffix.lower()
        reader = readers.get(suffix)
        if reader is None:
            continue
        try:
            anchors = reader(path)
        except (OSError, ValueError) as exc:
            yield AnchorCheck(path.name, None, f"not read: {exc}")
            continue
        if not anchors:
            yield AnchorCheck(path.name, None, "not checked: it carries no audit position (a document issued before "
                                               "documents carried one)", checked=False)
        for anchor in anchors:
            yield AnchorCheck(path.name, anchor, check_anchor(session, anchor))
