"""The trial's cohort ledger as a signed document (issue [3.7]): a PDF/A-3b like the batch record.

What it shows is the ledger (``services.trial.ledger``) at issue, as plain data (:func:`ledger_content`), which
is also what the file embeds: the trial and its configuration version, the escalation rule and design (cohort
size, DLT window, for BOIN the target rate with λe and λd), per cohort the subjects with their batch, infusion
time, DLT window, status, DLT events (each with who signed it) and assigned against achieved doses with their
flags; the counts per level, the rule's recommendation, and every signed escalation decision. Times in UTC.

Decision on storage: the ledger belongs to the trial, not to a batch, and ``DocumentRevision`` names a batch
(its ``batch_id`` is required and its revisions count per batch and kind), so each issued revision is stored in
a table of its own, ``LedgerDocument`` (migration 0022, append-only like ``qualification_record``): numbered
from 1, with the file's sha256 and the sha256 of the data it embeds, audited in the same transaction.
``documents.verify`` (``flask --app mfg verify-pdf``) accepts a filed copy against it.

The web layer calls :func:`issue_ledger` (render, sign with the site key, store: in the caller's transaction)
and :func:`get_ledger_document` / :func:`ledger_documents` to serve stored revisions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain import display, escalation, guards, inputs
from ..domain.audit_chain import Anchor, anchor_keyword
from ..domain.canonical import canonical_json
from ..domain.errors import NotFound, ValidationFailed
from ..domain.signing import MEANING_LABELS, Meaning
from ..models import LedgerDocument, User, utcnow
from ..reports import pdf as pdfs
from . import audit, audit_anchors, documents, signatures, trial

LEDGER_FORMAT = "mfg.cohort-ledger/1"
TITLE = documents.LEDGER_TITLE



def _number(value: Decimal | int | None) -> str | None:
    """An exact number as text (a computed dose is kept whole in the data; the page prints it rounded)."""
    if value is None:
        return None
    value = Decimal(value)
    return format(value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize(), "f")


def _signed(signature: Any) -> dict[str, str]:
    return {"meaning": MEANING_LABELS[Meaning(signature.meaning)], "printed_name": signature.printed_name,
            "signed_at": display.utc(signature.signed_at)}


def _status(row: trial.SubjectRow, now: datetime) -> str:
    """The subject's status as the ledger prints it."""
    if row.status == "in window" and row.window_closes is not None:
        closes = row.window_closes if row.window_closes.tzinfo else row.window_closes.replace(tzinfo=UTC)
        left = max(0, (closes - now).days)  # SQLite hands back naive UTC
        return f"in DLT window, {left} day{'s' if left != 1 else ''} left"
    if row.status == "assigned":
        return "assigned, not yet infused"
    return row.status


def _subject(session: Session, row: trial.SubjectRow, now: datetime) -> dict[str, Any]:
    events = []
    for event in row.events:
        events.append({"term": event.term, "grade": event.grade, "attribution": event.attribution,
                       "onset_on": event.onset_on.isoformat(), "dlt": event.is_dlt, "comment": event.comment or "",
                       "signatures": [_signed(s) for s in signatures.for_record(session, event)]})
    return {"code": row.subject.code, "cohort": row.cohort, "level": row.level, "decision_id": row.decision_id,
            "lot": row.batch.lot if row.batch is not None else None,
            "infused_at": display.utc(row.infused_at) or None,
            "window_closes": display.utc(row.window_closes) or None,
            "status": row.status, "status_text": _status(row, now), "events": events,
            "assigned_per_kg": _number(row.assigned_per_kg),
            "achieved_nk_per_kg": _number(row.achieved_nk_per_kg),
            "achieved_cd3_per_kg": _number(row.achieved_cd3_per_kg),
            "cd3_limit_per_kg": _number(row.cd3_limit_per_kg), "flags": list(row.flags)}


def ledger_content(session: Session, book: trial.Ledger, *, now: datetime) -> dict[str, Any]:
    """Everything the ledger document prints, as plain data: also what it embeds."""
    config, plan, version = book.config, book.design, book.version
    boin = None
    if plan.rule == "boin" and plan.target_dlt_rate is not None:
        bounds = escalation.boin_boundaries(plan.target_dlt_rate)
        boin = {"target": plan.target_dlt_rate, "escalate": round(bounds.escalate, 4),
                "de_escalate": round(bounds.de_escalate, 4)}
    decisions = {d.id: (d, s) for d, s in book.decisions}
    cohorts: list[dict[str, Any]] = []
    for row in book.rows:
        if not cohorts or cohorts[-1]["cohort"] != row.cohort:
            found = decisions.get(row.decision_id) if row.decision_id is not None else None
            cohorts.append({"cohort": row.cohort, "decision": trial.decision_name(*found) if found else None,
                            "subjects": []})
        cohorts[-1]["subjects"].append(_subject(session, row, now))
    for cohort in cohorts:
        cohort["levels"] = sorted({s["level"] for s in cohort["subjects"]})
    levels = []
    for dose in config.dose_levels:
        counts = book.counts.get(dose.code, escalation.LevelCounts(0, 0))
        levels.append({"code": dose.code, "cells_per_kg": dose.cells_per_kg, "label": dose.label,
                       "evaluable": counts.evaluable, "dlts": counts.dlts, "pending": counts.pending,
                       "closed": dose.code in book.closed, "open": dose.code == book.open.level})
    return {
        "format": LEDGER_FORMAT,
        "as_of": display.utc(now),
        "trial": {"trial_id": config.trial_id, "configuration": f"{config.code} v{config.version}",
                  "configuration_sha256": version.sha256},
        "design": {"rule": plan.rule, "cohort_size": plan.cohort_size, "dlt_window_days": plan.dlt_window_days,
                   "start_level": plan.start_level, "max_subjects": plan.max_subjects,
                   "dose_tolerance_pct": plan.dose_tolerance_pct, "target_dlt_rate": plan.target_dlt_rate,
                   "boin": boin},
        "enrolled": book.enrolled,
        "open": {"level": book.open.level, "decision": book.open.decision, "cohort": book.open.cohort,
                 "assigned": book.open.assigned, "cohort_size": book.open.cohort_size},
        "closed": list(book.closed),
        "recommendation": {"action": book.recommendation.action, "level": book.recommendation.level,
                           "text": book.recommendation.text},
        "levels": levels,
        "cohorts": cohorts,
        "decisions": [{"id": d.id, "action": d.action, "from_level": d.from_level, "level": d.level,
                       "recommendation": d.recommendation, "recommended_level": d.recommended_level,
                       "reason": d.reason or "", **_signed(s)} for d, s in book.decisions],
    }


def render_ledger(content: dict[str, Any], *, revision: int, reason: str, demo: bool, generated_at: str,
                  anchor: Anchor | None) -> bytes:
    """The unsigned PDF/A-3b of the ledger ``content``, which it embeds (no database)."""
    trial_id = content["trial"]["trial_id"]
    html = documents.document_html(
        "reports/cohort_ledger.html", c=content, revision=revision, reason=reason, generated_at=generated_at,
        cells=display.cells, watermark=demo, audit_position=documents.position_line(anchor),
        title=f"{TITLE} {trial_id} revision {revision}",
        header=f"{TITLE} · trial {trial_id} · {content['trial']['configuration']} · revision {revision} · "
               f"as of {content['as_of']}")
    return pdfs.render_pdf(html, attachment=canonical_json(content).encode(), attachment_name="cohort-ledger.json",
                           title=f"{TITLE} {trial_id} revision {revision}",
                           keywords=[anchor_keyword(anchor)] if anchor else [])


def ledger_documents(session: Session) -> list[LedgerDocument]:
    """Every issued revision, oldest first."""
    return list(session.scalars(sa.select(LedgerDocument).order_by(LedgerDocument.revision)))


def get_ledger_document(session: Session, document_id: int) -> LedgerDocument:
    """A stored revision by id (its ``content`` is the signed file as issued)."""
    document = session.get(LedgerDocument, document_id)
    if document is None:
        raise NotFound(f"no cohort ledger document {document_id}")
    return document


def issue_ledger(session: Session, *, site: pdfs.SiteSigner, demo: bool, user: User,
                 reason: str) -> tuple[LedgerDocument, bytes]:
    """Render the cohort ledger as it is now, sign it with the site key and store it as the next revision
    (flushes; audited; in the caller's transaction, which holds the trial's lock until it commits, so the
    revision shows every decision signed before it and its number is the next one)."""
    guards.enforce(guards.issue_ledger(guards.person(user)))
    reason = inputs.text("reason", reason)
    if not reason:
        raise ValidationFailed("Issuing the cohort ledger needs a reason.")
    trial.lock_trial(session)  # refuses (ValidationFailed) without an effective trial configuration
    now = utcnow()
    book = trial.ledger(session, now=now)
    if book is None:
        raise ValidationFailed("the effective trial configuration has no escalation design: there is no ledger")
    content = ledger_content(session, book, now=now)
    revision = (session.scalar(sa.select(sa.func.max(LedgerDocument.revision))) or 0) + 1
    # the audit position at issue, read after the ledger: everything it shows was recorded at or before it
    anchor = audit_anchors.current_anchor(session)
    unsigned = render_ledger(content, revision=revision, reason=reason, demo=demo, generated_at=display.utc(now),
                             anchor=anchor)
    trial_id = content["trial"]["trial_id"]
    signed = pdfs.sign_pdf(unsigned, site, reason=f"{TITLE} {trial_id} revision {revision}: {reason}",
                           location="DEMO site" if demo else "Manufacturing site")
    record = LedgerDocument(revision=revision, trial_config_version_id=book.version.id,
                            filename=f"cohort-ledger-{trial_id}-r{revision}.pdf", sha256=pdfs.sha256_hex(signed),
                            snapshot_sha256=pdfs.sha256_hex(canonical_json(content).encode()),
                            pages=documents.page_count(signed), reason=reason, content=signed, created_at=now,
                            created_by_id=user.id)
    session.add(record)
    audit.flush(session, reason=f"{TITLE} revision {revision} issued: {reason}")
    return record, signed
