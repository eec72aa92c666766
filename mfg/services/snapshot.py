"""The frozen plain snapshot of a batch that its documents are rendered from (never ORM objects).

Every value is a string, number, boolean, list or dict, so the snapshot is embedded as JSON in the
PDF/A-3b file and ``verify-pdf`` can compare it with the stored record. Times are UTC ISO 8601.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain import isbt128, limits, values, words
from ..domain.canonical import iso_utc
from ..domain.signing import MEANING_LABELS, Meaning
from ..domain.trial_config import TrialConfiguration
from ..models import (
    AuditEntry,
    BagBlock,
    Batch,
    ClinicalAlert,
    CustodyEvent,
    Deviation,
    PendingResult,
    ProductBag,
    RecordedValue,
    ReviewMark,
    Signature,
    SopVersion,
    StepExecution,
    User,
)
from . import (
    audit_anchors,
    bags,
    batch_pages,
    batches,
    custody,
    deviations,
    evaluation,
    growth,
    lifecycle,
    results,
    review,
    signatures,
    sops,
    trial,
)

SNAPSHOT_FORMAT = "mfg.batch-snapshot/2"  # 2: audit_head is the sealed audit position (an anchor)


def _number(value: Decimal | None) -> str | None:
    if value is None:
        return None
    return format(value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize(), "f")


def _manifestations(session: Session, record: Any, invalidated: set[int]) -> list[dict[str, Any]]:
    return [{"meaning": MEANING_LABELS[Meaning(s.meaning)], "printed_name": s.printed_name, "username": s.username,
             "signed_at": iso_utc(s.signed_at), "comment": s.comment, "content_sha256": s.content_sha256,
             "stands": s.id not in invalidated}
            for s in signatures.for_record(session, record)]


def _value(field: Any, value: RecordedValue, users: dict[int, str]) -> dict[str, Any]:
    return {"text": values.display(field, value.text) if field is not None else value.text, "raw": value.text,
            "unit": value.unit, "in_limits": value.in_limits, "limit_message": value.limit_message,
            "comment": value.comment, "entered_by": users.get(value.entered_by_id),
            "entered_at": iso_utc(value.entered_at),
            "correction_reason": value.correction_reason}


def _final(session: Session, entry: PendingResult, users: dict[int, str]) -> dict[str, Any]:
    """A result entered after the conditional release, as the records show it beside its "pending"."""
    return {"label": entry.label, "method": entry.method,
            "sampled_at": iso_utc(entry.sampled_at) if entry.sampled_at else None,
            "due_at": iso_utc(entry.due_at) if entry.due_at else None, "status": entry.status,
            "result": entry.result_text, "in_limits": entry.in_limits, "limit_message": entry.limit_message,
            "comment": entry.comment, "entered_by": users.get(entry.entered_by_id) if entry.entered_by_id else None,
            "entered_at": iso_utc(entry.entered_at) if entry.entered_at else None,
            "verified_by": users.get(entry.verified_by_id) if entry.verified_by_id else None,
            "verified_at": iso_utc(entry.verified_at) if entry.verified_at else None,
            "signatures": _manifestations(session, entry, set())}


def _is_test(field: Any, record: Any) -> bool:
    """A test with a specification, listed on the certificate of analysis: a field with a ``certificate``
    entry; in a record that has none (written before they existed), a timed result with limits."""
    if any(f.certificate is not None for stage in record.stages for step in stage.steps for f in step.fields):
        return field.certificate is not None
    return (getattr(field, "result_time", None) is not None and bool(words.limits(field))
            and not getattr(field, "expected", None))


def _test(field: Any, record: Any, current: dict[str, RecordedValue], done: list[StepExecution], version_id: int,
          context: Any) -> dict[str, Any] | None:
    """How the certificate lists a test: its method, the time its sample was taken and the
    specification in words (the test date is the time the result was recorded)."""
    if not _is_test(field, record):
        return None
    entry, timed = field.certificate, getattr(field, "result_time", None)
    method = (entry.method if entry is not None and entry.method else timed.method if timed is not None else "")
    sample = entry.sample if entry is not None and entry.sample else timed.sample if timed is not None else None
    moment = None
    if sample is not None and "." in sample:
        step_id, field_id = sample.split(".", 1)
        found = next((e for e in done if e.sop_version_id == version_id and e.step_id == step_id), None)
        value = found.current_values().get(field_id) if found is not None else None
        moment = value.moment if value is not None else None
    elif sample is not None:
        value = current.get(sample)
        moment = value.moment if value is not None else None
    return {"method": method, "specification": limits.specification_text(field, context),
            "sampled_at": iso_utc(moment) if moment is not None else None}


def _steps(session: Session, batch: Batch, users: dict[int, str], invalidated: set[int]) -> list[dict[str, Any]]:
    done = batches.executions(session, batch)
    finals = {p.pending_value_id: _final(session, p, users) for p in results.of_batch(session, batch)}
    context = evaluation.context_numbers(session, batch)  # the values of limits named by the records
    records = []
    for position, record in enumerate(batches.records(batch)):
        version_id = batch.master_records[position].sop_version_id
        stages = []
        for stage in record.stages:
            steps = []
            for step in stage.steps:
                for ex in (e for e in done if e.sop_version_id == version_id and e.step_id == step.id):
                    current = ex.current_values()
                    by_id = {v.id: v for v in ex.values}
                    rows = []
                    for f in step.fields:
                        if f.id not in current:
                            continue
                        now = current[f.id]
                        history, cursor = [], now
                        while cursor.supersedes_id:  # the original and every earlier value, newest first
                            cursor = by_id[cursor.supersedes_id]
                            history.append(_value(f, cursor, users))
                        timed = getattr(f, "result_time", None)  # the test's method, where the record names it
                        rows.append({"field": f.id, "label": f.label, "limits": words.limits(f, context),
                                     "method": timed.method if timed is not None
                                     else "calculated" if f.type == "calculated" else "",
                                     "value": _value(f, now, users), "earlier": history,
                                     "pending": now.text in (getattr(f, "pending", None) or ()),
                                     "final": finals.get(now.id),
                                     "test": _test(f, record, current, done, version_id, context)
                                     if record.certificate_of_analysis else None})
                    steps.append({"step": step.id, "title": step.title, "instance": ex.instance,
                                  "instance_label": f"{step.repeat.label} {ex.instance}" if step.repeat else "",
                                  "status": ex.status, "comment": ex.comment, "values": rows,
                                  "signatures": _manifestations(session, ex, invalidated)})
            stages.append({"id": stage.id, "title": stage.title, "steps": steps})
        records.append({"code": record.code, "title": record.title, "stages": stages,
                        "certificate_of_analysis": record.certificate_of_analysis})
    return records


def _audit_trail(session: Session, batch: Batch) -> list[dict[str, Any]]:
    """The audit entries of the batch and of everything recorded for it, in order."""
    executions = [str(i) for i in session.scalars(
        sa.select(StepExecution.id).where(StepExecution.batch_id == batch.id))]
    values_ = [str(i) for i in session.scalars(sa.select(RecordedValue.id).join(StepExecution).where(
        StepExecution.batch_id == batch.id))]
    owned = {
        "batch": [str(batch.id)], "step_execution": executions, "recorded_value": values_,
        "deviation": [str(i) for i in session.scalars(sa.select(Deviation.id).where(Deviation.batch_id == batch.id))],
        "product_bag": [str(i) for i in session.scalars(
            sa.select(ProductBag.id).where(ProductBag.batch_id == batch.id))],
        "custody_event": [str(i) for i in session.scalars(sa.select(CustodyEvent.id).where(
            CustodyEvent.batch_id == batch.id))],
        "review_mark": [str(i) for i in session.scalars(
            sa.select(ReviewMark.id).where(ReviewMark.batch_id == batch.id))],
    }
    decisions = [str(d.id) for d in review.decisions(session, batch)]
    owned["batch_decision"] = decisions
    for model in (PendingResult, ClinicalAlert, BagBlock):
        owned[model.__tablename__] = [str(i) for i in session.scalars(sa.select(model.id).where(
            model.batch_id == batch.id))]
    signed = sa.or_(*(sa.and_(Signature.record_type == kind, Signature.record_id.in_(ids))
                      for kind, ids in owned.items() if ids))
    signature_ids = [str(i) for i in session.scalars(sa.select(Signature.id).where(signed))]
    owned["signature"] = signature_ids
    condition = sa.or_(*(sa.and_(AuditEntry.entity_type == kind, AuditEntry.entity_id.in_(ids))
                         for kind, ids in owned.items() if ids))
    return [{"seq": e.seq, "at": iso_utc(e.occurred_at), "user": e.username, "action": e.action,
             "entity": f"{e.entity_type} {e.entity_id}", "reason": e.reason, "before": e.before, "after": e.after}
            for e in session.scalars(sa.select(AuditEntry).where(condition).order_by(AuditEntry.seq))]


def batch_snapshot(session: Session, batch: Batch) -> dict[str, Any]:
    """Everything the batch record, the certificate of analysis and the labels show, as plain data."""
    users = {u.id: u.full_name for u in session.scalars(sa.select(User))}
    invalidated = batch_pages.invalidated_signature_ids(session, batch)
    subject = batch.subject
    config: TrialConfiguration | None = None
    if subject is not None and batch.trial_config_version_id:
        version = session.get(SopVersion, batch.trial_config_version_id)
        assert version is not None  # the batch's pinned trial configuration version (a foreign key)
        document = sops.definition(version)
        assert isinstance(document, TrialConfiguration)
        config = document
    din = isbt128.din_from_text(batch.din) if batch.din else None
    coi = isbt128.parse_coi(isbt128.COI_PREFIX + subject.coi) if subject is not None else None
    bag_divisions = {b.id: b.division for b in bags.of_batch(session, batch)}
    assigned = session.get(Signature, batch.dose_signature_id) if batch.dose_signature_id else None
    opened = trial.get_decision(session, batch.escalation_decision_id)  # the decision pinned at start
    chart = [{"title": c.chart.title, "unit": c.chart.unit,
              "points": [{"label": p.label, "day": _number(p.day), "value": _number(p.value)} for p in c.points]}
             for c in growth.charts(session, batch)]
    return {
        "format": SNAPSHOT_FORMAT,
        "batch": {"id": batch.id, "lot": batch.lot, "status": batch.status, "created_at": iso_utc(batch.created_at),
                  "created_by": users.get(batch.created_by_id),
                  "din": batch.din, "din_eye_readable": din.eye_readable() if din else None,
                  "din_check": din.check if din else None},
        "subject": None if subject is None else {
            # coi is parsed whenever there is a subject
            "code": subject.code, "coi": subject.coi, "coi_eye_readable": cast(isbt128.CoiId, coi).eye_readable(),
            "coi_check": cast(isbt128.CoiId, coi).check,
            # the dose and weight pinned to the batch when it started, never the subject's current ones
            "weight_kg": _number(batch.weight_kg),
            "weight_measured_on": batch.weight_measured_on.isoformat() if batch.weight_measured_on else None,
            "dose_level": batch.dose_level, "dose_cells_per_kg": batch.dose_cells_per_kg,
            "dose_label": batch.dose_label,
            "dose_assigned": None if assigned is None else {
                "meaning": MEANING_LABELS[Meaning(assigned.meaning)], "printed_name": assigned.printed_name,
                "signed_at": iso_utc(assigned.signed_at), "content_sha256": assigned.content_sha256},
            # the signed escalation decision that opened the dose level, pinned at start; absent for a batch without
            # one, so that the documents issued before it existed compare unchanged (``changes since issue``)
            **({} if opened is None else {"dose_decision": {
                "id": opened[0].id, "action": opened[0].action, "level": opened[0].level,
                "printed_name": opened[1].printed_name, "signed_at": iso_utc(opened[1].signed_at),
                "meaning": MEANING_LABELS[Meaning(opened[1].meaning)]}})},
        "trial": None if config is None else {
            "trial_id": config.trial_id, "configuration": f"{config.code} v{config.version}",
            "product_code": config.product_description_code + config.donation_type,
            "facility": config.facility_identification_number, "product_name": config.product_name,
            "storage": config.storage_statement, "label_warnings": list(config.label_warnings),
            "facility_name": config.facility_name, "facility_address": list(config.facility_address),
            "additive": config.additive_statement, "site_timezone": config.site_timezone},
        "master_records": [{"code": pin.sop_version.code, "version": pin.sop_version.version,
                            "title": pin.sop_version.title, "sha256": pin.sop_version.sha256}
                           for pin in batch.master_records],
        "records": _steps(session, batch, users, invalidated),
        "growth_charts": chart,
        "bags": [{"division": b.division, "product_code": b.product_code, "product_code_data": b.product_code_barcode,
                  "volume_ml": _number(b.volume_ml), "nk_cells": b.nk_cells, "viable_cells": b.viable_cells,
                  "expires_at": iso_utc(b.expires_at)} for b in bags.of_batch(session, batch)],
        "deviations": [{"number": d.number, "origin": d.origin, "description": d.description, "status": d.status,
                        "opened_at": iso_utc(d.opened_at), "opened_by": users.get(d.opened_by_id),
                        "classification": d.classification, "investigation": d.investigation,
                        "root_cause": d.root_cause, "impact": d.impact, "capa_reference": d.capa_reference,
                        "signatures": _manifestations(session, d, set())}
                       for d in deviations.of_batch(session, batch)],
        "custody": [{"kind": e.kind, "occurred_at": iso_utc(e.occurred_at), "from": e.from_location,
                     "to": e.to_location, "condition": e.condition, "scanned_din": e.scanned_din,
                     "bag": bag_divisions.get(e.bag_id) if e.bag_id else None,
                     "signatures": _manifestations(session, e, set())} for e in custody.events(session, batch)],
        "pending_results": [_final(session, p, users) for p in results.of_batch(session, batch)],
        "bag_blocks": [{"bag": bag_divisions.get(b.bag_id), "reason": b.reason, "blocked_at": iso_utc(b.blocked_at),
                        "blocked_by": users.get(b.blocked_by_id)} for b in lifecycle.blocks(session, batch).values()],
        "clinical_alerts": [{"finding": a.finding, "raised_at": iso_utc(a.raised_at),
                             "acknowledged_by": users.get(a.acknowledged_by_id) if a.acknowledged_by_id else None,
                             "acknowledged_at": iso_utc(a.acknowledged_at) if a.acknowledged_at else None,
                             "signatures": _manifestations(session, a, set())}
                            for a in lifecycle.alerts_of(session, batch)],
        "review": [{"kind": i.kind, "title": i.title, "detail": i.detail,
                    "reviewed_by": users.get(m.reviewed_by_id) if (m := review.marks(session,
                                                                                     batch).get(i.key)) else None}
                   for i in review.exceptions(session, batch)],
        "decisions": [{"decision": d.decision, "pending": d.pending, "comment": d.comment,
                       "decided_at": iso_utc(d.decided_at), "signatures": _manifestations(session, d, set())}
                      for d in review.decisions(session, batch)],
        "audit_trail": _audit_trail(session, batch),
        # the audit position this snapshot vouches for, read last: everything above was recorded at or before it
        "audit_head": audit_anchors.plain(audit_anchors.current_anchor(session)),
    }
