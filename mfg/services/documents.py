"""Signed documents of a batch: the batch record, the certificate of analysis and the bag labels.

Each is rendered from the frozen plain snapshot (``services.snapshot``) to PDF/A-3b with its own data
attached (the batch record the whole snapshot, audit trail included; the certificate and the labels only
what they print, ``reports.contents``), signed (PAdES) with the site key, and stored once as a
``DocumentRevision`` with the file's sha256 (audited). A later change (the final sterility result after a
conditional release, a label reprint) makes a new revision; every revision stays available. ``verify``
checks a file against the site certificate and the stored record.
"""

from __future__ import annotations

import base64
import functools
import io
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..config import TEMPLATES_DIR
from ..domain import display, guards, inputs, snapshot_diff
from ..domain.audit_chain import Anchor, anchor_keyword, parse_anchor_keyword
from ..domain.canonical import canonical_json, iso_utc
from ..domain.errors import NotFound, ValidationFailed
from ..models import (
    Batch,
    BatchDecision,
    DocumentJob,
    DocumentRevision,
    LedgerDocument,
    QualificationRecord,
    User,
    utcnow,
)
from ..reports import contents
from ..reports import pdf as pdfs
from . import audit, audit_anchors, document_jobs, snapshot

KINDS = {"batch_record": "Batch record", "coa": "Certificate of analysis", "labels": "Labels"}


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True,
                              undefined=jinja2.StrictUndefined)


def document_html(template: str, **context: Any) -> str:
    """A document template (``templates/reports/``) rendered from plain values, for :func:`pdfs.render_pdf`."""
    return _environment().get_template(template).render(**context)


def _charts(snap: dict[str, Any]) -> list[dict[str, str]]:
    from ..reports.growth_chart import Point, growth_chart_svg

    found = []
    for chart in snap["growth_charts"]:
        points = [Point(day=Decimal(p["day"]), value=Decimal(p["value"]), label=p["label"]) for p in chart["points"]]
        svg = growth_chart_svg(points, title=chart["title"], y_label=chart["unit"])
        found.append({"title": chart["title"],
                      "image": "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()})
    return found


def _labels(snap: dict[str, Any], *, revision: int) -> list[Any]:
    from ..reports import labels

    plain = contents.labels(snap)
    if not plain:
        raise ValidationFailed(f"batch {snap['batch']['lot']} has no bags to label yet")
    return [labels.LabelData.from_plain(label, reprint=revision - 1) for label in plain]


def _label_html(snap: dict[str, Any], *, revision: int, demo: bool, size: tuple[float, float]) -> str:
    """One label per bag; a revision after the first is a reprint and says so on every label."""
    from ..reports import labels

    return labels.label_html(_labels(snap, revision=revision), demo=demo, width_in=size[0], height_in=size[1])


def labels_zpl(data: bytes, *, demo: bool, label_size: tuple[float, float] = (4, 4)) -> str:
    """The labels of a stored labels revision as ZPL for Zebra printers, built from the label data the
    PDF embeds (so the ZPL and the signed PDF print the same fields)."""
    from ..reports import labels, zpl

    embedded = pdfs.embedded_file(data)
    if embedded is None:
        raise ValidationFailed("the labels file embeds no label data")
    plain = json.loads(embedded)
    if plain.get("format") != contents.LABELS_FORMAT:
        raise ValidationFailed("this labels revision predates ZPL labels: print a new revision")
    made = [labels.LabelData.from_plain(label, reprint=plain["reprint"]) for label in plain["labels"]]
    return zpl.labels_zpl(made, demo=demo, width_in=label_size[0], height_in=label_size[1])


def embedded(kind: str, snap: dict[str, Any], *, revision: int) -> bytes:
    """What a document embeds, its own data only: the batch record the whole snapshot (the audit trail
    included); the certificate of analysis what it prints; the labels their label data."""
    if kind == "batch_record":
        return canonical_json(snap).encode()
    if kind == "coa":
        return canonical_json(contents.certificate(snap)).encode()
    return canonical_json({"format": contents.LABELS_FORMAT, "lot": snap["batch"]["lot"], "reprint": revision - 1,
                           "labels": contents.labels(snap)}).encode()


def render(kind: str, snap: dict[str, Any], *, revision: int, reason: str, demo: bool, generated_at: str,
           label_size: tuple[float, float] = (4, 4)) -> bytes:
    """The unsigned PDF/A-3b of ``kind`` from ``snap``, its own data attached (:func:`embedded`)."""
    attachment = embedded(kind, snap, revision=revision)
    anchor = snapshot_anchor(snap)
    # The audit position at issue: in every document's metadata, and in the footer of every page of the batch
    # record and the certificate (a bag label's layout is the label standard's: metadata only).
    keywords = [anchor_keyword(anchor)] if anchor else []
    if kind == "labels":
        return pdfs.render_pdf(_label_html(snap, revision=revision, demo=demo, size=label_size),
                               attachment=attachment, attachment_name="labels.json",
                               title=f"Labels {snap['batch']['lot']} revision {revision}", strict_resources=True,
                               keywords=keywords)
    position = position_line(anchor)
    subject = snap["subject"] or {}
    header = f"{KINDS[kind]} · lot {snap['batch']['lot']} · COI ID {subject.get('coi_eye_readable', '-')}"
    tz = contents.zone(snap)
    generated = contents.when(generated_at, tz)
    if kind == "coa":
        html = document_html("reports/coa.html", c=contents.certificate(snap), revision=revision, reason=reason,
                             generated_at=generated, header=header, watermark=demo, audit_position=position,
                             title=f"{KINDS[kind]} {snap['batch']['lot']}")
        name = "certificate-of-analysis.json"
    else:
        html = document_html(f"reports/{kind}.html", s=snap, revision=revision, reason=reason,
                             generated_at=generated, charts=_charts(snap), audit=contents.audit_lines(snap),
                             when=lambda iso: contents.when(iso, tz), cells=display.cells, grouped=display.grouped,
                             header=header, watermark=demo, audit_position=position,
                             dose_decision=contents.dose_decision_line(snap["subject"]),
                             title=f"{KINDS[kind]} {snap['batch']['lot']}")
        name = f"{kind}-snapshot.json"
    return pdfs.render_pdf(html, attachment=attachment, attachment_name=name,
                           title=f"{KINDS[kind]} {snap['batch']['lot']} revision {revision}", keywords=keywords)


def position_line(anchor: Anchor | None) -> str:
    """The audit position at issue as a document's footer prints it."""
    if anchor is None:
        return ""
    return (f"Audit position at issue: entry {anchor.seq} · {anchor.entry_hash[:16]} · seal {anchor.key_id} "
            f"{anchor.seal}")


def snapshot_anchor(snap: dict[str, Any]) -> Anchor | None:
    """The sealed audit position a snapshot was read at (None for a snapshot made before positions were sealed)."""
    head = snap.get("audit_head") or {}
    if not head.get("seal"):
        return None
    return Anchor(head["seq"], head["entry_hash"], contents.moment(head["max_at"]),
                  contents.moment(head["unordered_at"]), head["key_id"], head["seal"])


def page_count(data: bytes) -> int:
    from pypdf import PdfReader

    return len(PdfReader(io.BytesIO(data)).pages)


def revisions(session: Session, batch: Batch, kind: str | None = None) -> list[DocumentRevision]:
    query = sa.select(DocumentRevision).where(DocumentRevision.batch_id == batch.id)
    if kind:
        query = query.where(DocumentRevision.kind == kind)
    return list(session.scalars(query.order_by(DocumentRevision.kind, DocumentRevision.revision)))


@dataclass(frozen=True)
class Rendered:
    """A signed document made and not yet stored (rendering needs no transaction)."""

    kind: str
    revision: int
    content: bytes
    snapshot_sha256: str
    pages: int
    reason: str
    generated_at: datetime


def next_revision(session: Session, batch: Batch, kind: str) -> int:
    return len(revisions(session, batch, kind)) + 1


def render_signed(snap: dict[str, Any], *, kind: str, revision: int, reason: str, site: pdfs.SiteSigner, demo: bool,
                  label_size: tuple[float, float] = (4, 4)) -> Rendered:
    """Render and sign revision ``revision`` of ``kind`` from the snapshot: no database, no lock."""
    if kind not in KINDS:
        raise ValidationFailed(f"unknown document kind {kind!r}")
    now = utcnow()
    lot = snap["batch"]["lot"]
    unsigned = render(kind, snap, revision=revision, reason=reason, demo=demo, generated_at=iso_utc(now),
                      label_size=label_size)
    signed = pdfs.sign_pdf(unsigned, site, reason=f"{KINDS[kind]} {lot} revision {revision}: {reason}",
                           location="DEMO site" if demo else "Manufacturing site")
    return Rendered(kind=kind, revision=revision, content=signed,
                    snapshot_sha256=pdfs.sha256_hex(embedded(kind, snap, revision=revision)), pages=page_count(signed),
                    reason=reason, generated_at=now)


def store(session: Session, batch: Batch, rendered: Rendered, *, user_id: int) -> DocumentRevision:
    """Store a rendered document as the next revision of its kind (flushes; audited)."""
    if rendered.revision != next_revision(session, batch, rendered.kind):
        raise ValidationFailed(f"{KINDS[rendered.kind]} revision {rendered.revision} of {batch.lot} was rendered, "
                               f"but the next revision is {next_revision(session, batch, rendered.kind)}")
    number, kind = rendered.revision, rendered.kind
    document = DocumentRevision(batch_id=batch.id, kind=kind, revision=number,
                                filename=f"{batch.lot}-{kind}-r{number}.pdf", sha256=pdfs.sha256_hex(rendered.content),
                                snapshot_sha256=rendered.snapshot_sha256, pages=rendered.pages, reason=rendered.reason,
                                content=rendered.content, created_at=rendered.generated_at, created_by_id=user_id)
    session.add(document)
    audit.flush(session, reason=f"{KINDS[kind]} revision {number} issued: {rendered.reason}")
    return document


def issue(session: Session, batch: Batch, *, kind: str, reason: str, site: pdfs.SiteSigner, demo: bool,
          user: User, label_size: tuple[float, float] = (4, 4)) -> DocumentRevision:
    """Render, sign and store the next revision of ``kind`` for ``batch`` (in the caller's transaction)."""
    rendered = render_signed(snapshot.batch_snapshot(session, batch), kind=kind,
                             revision=next_revision(session, batch, kind), reason=reason, site=site, demo=demo,
                             label_size=label_size)
    return store(session, batch, rendered, user_id=user.id)


def guard_print_labels(session: Session, user: User, batch: Batch) -> list[guards.Refusal]:
    from . import bags

    return guards.print_labels(guards.person(user), lot=batch.lot, bag_count=len(bags.of_batch(session, batch)))


def print_labels(session: Session, batch: Batch, *, reason: str, site: pdfs.SiteSigner, demo: bool,
                 signer: User, password: str, username: str | None, require_username: bool,
                 label_size: tuple[float, float] = (4, 4)) -> DocumentRevision:
    """Print the bag labels: the first print, or a reprint, which is counted on the labels, needs a
    reason and is signed (and shows in QA's review)."""
    from ..domain.signing import Meaning
    from . import signatures

    guards.enforce(guard_print_labels(session, signer, batch))
    reprint = bool(revisions(session, batch, "labels"))
    reason = inputs.text("reason", reason)
    if reprint and not reason:
        raise ValidationFailed("A label reprint needs a reason.")
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)  # before the first write
    document = issue(session, batch, kind="labels", reason=reason or "first print", site=site, demo=demo,
                     user=signer, label_size=label_size)
    signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.PERFORMED, record=document,
                    comment=f"labels {'reprinted' if reprint else 'printed'}: {document.reason}")
    return document


def decide_and_request_documents(session: Session, batch: Batch, *, decision: str, comment: str, signer: User,
                                 password: str, username: str | None, require_username: bool,
                                 tz: ZoneInfo | None = None) -> tuple[BatchDecision, DocumentJob]:
    """QA's signed decision (``review.decide``) and, in the same transaction, the request for the documents
    it issues (``document_jobs.enqueue``): the decision is never recorded without its documents on the way,
    and it commits without waiting for them. A documents worker (``mfg.document_worker``) makes them after."""
    from . import review

    record = review.decide(session, batch, decision=decision, comment=comment, signer=signer, password=password,
                           username=username, require_username=require_username, tz=tz)
    return record, document_jobs.enqueue(session, batch, record, user=signer)


@dataclass(frozen=True)
class JobPlan:
    """What a documents job will render: read in a short transaction, rendered after it ended."""

    job_id: int
    batch_id: int
    snapshot: dict[str, Any]
    documents: tuple[tuple[str, int], ...]  # (kind, revision number)
    reason: str


def job_plan(session: Session, job: DocumentJob) -> JobPlan:
    """The snapshot and revision numbers of a claimed job's documents (reads only)."""
    batch = session.get(Batch, job.batch_id)
    assert batch is not None  # batch_id is a foreign key
    return JobPlan(job.id, batch.id, snapshot.batch_snapshot(session, batch),
                   tuple((kind, next_revision(session, batch, kind)) for kind in job.kind_list), job.reason)


def render_plan(plan: JobPlan, *, site: pdfs.SiteSigner, demo: bool) -> list[Rendered]:
    """Render and sign every document of a job (seconds; no database)."""
    return [render_signed(plan.snapshot, kind=kind, revision=number, reason=plan.reason, site=site, demo=demo)
            for kind, number in plan.documents]


def complete_job(session: Session, job_id: int, token: str, rendered: list[Rendered]) -> list[DocumentRevision] | None:
    """Store a job's rendered documents and mark it done, if the claim ``token`` still holds it (flushes).
    None when the claim was lost (another worker took the job over), or the revision numbers moved since
    the plan (the job is then given back, to be rendered again)."""
    job = document_jobs.hold(session, job_id, token)
    if job is None:
        return None
    batch = session.get(Batch, job.batch_id)
    assert batch is not None  # batch_id is a foreign key
    if any(r.revision != next_revision(session, batch, r.kind) for r in rendered):
        document_jobs.release(session, job_id, token, error="revision numbers moved while rendering")
        return None
    stored = [store(session, batch, r, user_id=job.created_by_id) for r in rendered]
    document_jobs.mark_done(session, job)
    return stored


@dataclass(frozen=True)
class FileCheck:
    valid: bool
    reason: str
    summary: list[str]


def verify(session: Session, data: bytes, trusted: Any) -> FileCheck:
    """A file's signature (intact, by the site certificate) and its embedded snapshot against the stored
    record: the file must be a stored revision, and its snapshot the one stored with it."""
    check = pdfs.verify_pdf(data, trusted)
    if not check.valid:
        return FileCheck(False, check.reason, [f"signature: {check.reason}"])
    digest = pdfs.sha256_hex(data)
    stored = session.scalar(sa.select(DocumentRevision).where(DocumentRevision.sha256 == digest))
    summary = [f"signature: valid, intact, by {check.signer}, signed {check.signed_at}"]
    if stored is None:
        return _verify_qualification(session, data, digest, check, summary)
    if check.attachment is None or pdfs.sha256_hex(check.attachment) != stored.snapshot_sha256:
        return FileCheck(False, "the embedded snapshot does not match the stored record", summary)
    batch = session.get(Batch, stored.batch_id)
    assert batch is not None  # batch_id is a foreign key
    summary.append(f"document: {KINDS[stored.kind]} of lot {batch.lot}, revision {stored.revision}, "
                   f"{stored.pages} pages, sha256 {digest}")
    summary.append(f"snapshot: matches the stored record (sha256 {stored.snapshot_sha256})")
    problem = _audit_position(session, data, summary)
    if problem is not None:
        return FileCheck(False, problem, summary)
    _changes_since_issue(session, batch, stored, check.attachment, summary)
    return FileCheck(True, "", summary)


def _audit_position(session: Session, data: bytes, summary: list[str]) -> str | None:
    """The document's audit position at issue against the trail now: why it does not hold, or None."""
    try:
        anchor = parse_anchor_keyword(pdfs.keywords(data))
    except ValueError as error:
        return str(error)
    if anchor is None:
        summary.append("audit position: none (a document issued before documents carried their audit position)")
        return None
    problem = audit_anchors.check_anchor(session, anchor)
    if problem is not None:
        summary.append(f"audit position: entry {anchor.seq}: {problem}")
        return f"the audit trail no longer matches this document's audit position: {problem}"
    summary.append(f"audit position: entry {anchor.seq}, sealed with {anchor.key_id}; the audit trail still "
                   "extends it")
    return None


MAX_CHANGES_SHOWN = 40


def _changes_since_issue(session: Session, batch: Batch, stored: DocumentRevision, attachment: bytes,
                         summary: list[str]) -> None:
    """What the document shows that the data no longer says: its data against a fresh snapshot."""
    now = json.loads(embedded(stored.kind, snapshot.batch_snapshot(session, batch), revision=stored.revision))
    changes = snapshot_diff.differences(json.loads(attachment), now)
    if not changes:
        summary.append("since issue: nothing it shows has changed")
        return
    summary.append(f"since issue: {len(changes)} difference(s) between the document and the data now "
                   "(the audit trail says who made each change, when and why):")
    summary += [f"  {line}" for line in changes[:MAX_CHANGES_SHOWN]]
    if len(changes) > MAX_CHANGES_SHOWN:
        summary.append(f"  ... and {len(changes) - MAX_CHANGES_SHOWN} more")


def _verify_qualification(session: Session, data: bytes, digest: str, check: pdfs.Verification,
                          summary: list[str]) -> FileCheck:
    """An installation qualification report (``flask --app mfg qualify``) or a cohort ledger revision
    (``ledger_documents``) against its stored record."""
    stored = session.scalar(sa.select(QualificationRecord).where(QualificationRecord.sha256 == digest))
    if stored is None:
        ledger = _verify_ledger(session, digest, check.attachment)
        if ledger is None:
            return FileCheck(False, "the file is not a document this site stored", summary)
        _, lines, problem = ledger
        summary += lines
        problem = problem or _audit_position(session, data, summary)
        return FileCheck(problem is None, problem or "", summary)
    if check.attachment is None or pdfs.sha256_hex(check.attachment) != stored.snapshot_sha256:
        return FileCheck(False, "the embedded snapshot does not match the stored record", summary)
    outcome = "passed" if stored.passed else f"FAILED ({stored.failed})"
    summary.append(f"document: installation qualification of {stored.host} at {iso_utc(stored.run_at)} by "
                   f"{stored.run_by}, {outcome}, {stored.pages} pages, sha256 {digest}")
    summary.append(f"snapshot: matches the stored record (sha256 {stored.snapshot_sha256})")
    problem = _audit_position(session, data, summary)
    if problem is not None:
        return FileCheck(False, problem, summary)
    return FileCheck(True, "", summary)


def get_revision(session: Session, batch: Batch, document_id: int) -> DocumentRevision:
    document = session.get(DocumentRevision, document_id)
    if document is None or document.batch_id != batch.id:
        raise NotFound(f"no document {document_id} for batch {batch.lot}")
    return document


LEDGER_TITLE = "Cohort ledger"
"""The title of the cohort ledger's signed PDF/A (``ledger_documents``), as verify-pdf names it."""


def _verify_ledger(session: Session, digest: str, attachment: bytes | None) -> tuple[LedgerDocument, list[str],
                                                                                     str | None] | None:
    """A verified file's stored ledger revision (None: not one): the summary lines and the problem, if any."""
    stored = session.scalar(sa.select(LedgerDocument).where(LedgerDocument.sha256 == digest))
    if stored is None:
        return None
    if attachment is None or pdfs.sha256_hex(attachment) != stored.snapshot_sha256:
        return stored, [], "the embedded snapshot does not match the stored record"
    newer = session.scalar(sa.select(sa.func.count()).select_from(LedgerDocument)
                           .where(LedgerDocument.revision > stored.revision)) or 0
    return stored, [
        f"document: {LEDGER_TITLE} revision {stored.revision} issued {display.utc(stored.created_at)}, "
        f"{stored.pages} pages, sha256 {digest}",
        f"snapshot: matches the stored record (sha256 {stored.snapshot_sha256})",
        "since issue: " + (f"{newer} later revision(s) of the ledger issued" if newer else "no later revision issued"),
    ], None
