"""Read model of the audit trail screen: each entry in words, on one line (issue 17, item 8).

An entry is stored as the system wrote it (``recorded_value.create``, ``{"field_id": "bag_din", ...}``); QA
reads "Value recorded · Identify the collection bag: Bag DIN · Bag DIN: =X9999…", with the stored entry
(before and after, as recorded) one click away. The names come from the master records the steps were
performed under (``domain.words``); nothing is written here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain import words
from ..domain.signing import MEANING_LABELS
from ..domain.sop_schema import Step, step_index
from ..models import AuditEntry, Batch, RecordedValue, SopVersion, StepExecution
from . import batches

# What a record is called on the screen, where its table's name does not say it.
RECORD_WORDS = {"recorded_value": "Value", "step_execution": "Step", "user_account": "User account",
                "sop_version": "Master record", "batch_decision": "Decision",
                "batch_master_record": "Master record of batch",
                "document_revision": "Document", "document_job": "Documents job", "review_mark": "Review mark",
                "custody_event": "Custody event", "pending_result": "Pending result", "bag_block": "Bag block",
                "product_bag": "Bag", "clinical_alert": "Clinical alert"}
_STEP_REASON = re.compile(r"\bstep (\w+) #(\d+)")
_MEANINGS = {m.value: label for m, label in MEANING_LABELS.items()}


@dataclass(frozen=True)
class Line:
    """One audit entry as the screen shows it: what happened, to what, the change in words, and the entry as
    stored (``raw``) for the click that shows it."""

    entry: AuditEntry
    what: str
    record: str
    change: str
    reason: str
    raw: str


def record_words(entity_type: str | None) -> str:
    if not entity_type:
        return ""
    return RECORD_WORDS.get(entity_type, words.plain(entity_type).capitalize())


def action_words(action: str, entity_type: str | None) -> str:
    """``recorded_value.create`` -> "Value recorded"; ``login.success`` -> "Login success"."""
    kind, _, verb = action.rpartition(".")
    if verb == "create" and kind:
        return f"{record_words(kind)} recorded"
    if verb == "update" and kind:
        return f"{record_words(kind)} changed"
    return words.plain(action).capitalize()


def _loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _raw(entry: AuditEntry) -> str:
    lines = [f"{entry.action} · {entry.entity_type or ''} {entry.entity_id or ''}".rstrip()]
    if entry.before:
        lines.append(f"before: {entry.before}")
    if entry.after:
        lines.append(f"after: {entry.after}")
    return "\n".join(lines)


def _step_reason(steps: dict[str, Step], match: re.Match[str]) -> str:
    step = steps.get(match.group(1))
    if step is None:
        return f"step {words.plain(match.group(1))} ({match.group(2)})"
    return "step " + words.step_name(step, int(match.group(2)) if step.repeat is not None else None)


def action_choices(actions: list[str]) -> list[tuple[str, str]]:
    """The audit filter's choices: every kind of record (all its actions), then every action, in words."""
    kinds = sorted({a.rpartition(".")[0] for a in actions if "." in a})
    return ([(f"{kind}.", f"{record_words(kind)}: everything") for kind in kinds]
            + [(a, action_words(a, None)) for a in sorted(actions)])


def describe(session: Session, entries: list[AuditEntry], tz: ZoneInfo) -> list[Line]:
    """Each entry in words, naming steps and values by their master records (a fixed number of queries)."""
    parsed = [(e, _loads(e.before), _loads(e.after)) for e in entries]
    execution_ids: set[int] = set()
    batch_ids: set[int] = set()
    for entry, _before, after in parsed:
        if entry.entity_type == "step_execution" and entry.entity_id and entry.entity_id.isdigit():
            execution_ids.add(int(entry.entity_id))
        elif entry.entity_type == "batch" and entry.entity_id and entry.entity_id.isdigit():
            batch_ids.add(int(entry.entity_id))
        if isinstance(after.get("execution_id"), int):
            execution_ids.add(after["execution_id"])
        if after.get("record_type") == "step_execution" and str(after.get("record_id", "")).isdigit():
            execution_ids.add(int(after["record_id"]))
    # a fixed number of queries, whatever the page holds (``tests/web/test_query_counts.py``)
    executions = {ex.id: ex for ex in session.scalars(
        sa.select(StepExecution).where(StepExecution.id.in_(execution_ids)))}
    versions = {v.id: v for v in session.scalars(sa.select(SopVersion).where(
        SopVersion.id.in_({ex.sop_version_id for ex in executions.values()})))}
    steps: dict[tuple[int, str], Step] = {}
    titles: dict[str, Step] = {}
    for version in versions.values():
        for _stage, step in step_index(batches.definition_of(version)).values():
            steps[(version.id, step.id)] = step
            titles.setdefault(step.id, step)
    superseded = {after["supersedes_id"] for _e, _b, after in parsed if isinstance(after.get("supersedes_id"), int)}
    originals = {row.id: row.text for row in session.execute(sa.select(RecordedValue.id, RecordedValue.text).where(
        RecordedValue.id.in_(superseded)))}
    lots = {row.id: row.lot for row in session.execute(sa.select(Batch.id, Batch.lot).where(Batch.id.in_(batch_ids)))}

    def step_of(execution_id: Any) -> tuple[StepExecution | None, Step | None]:
        ex = executions.get(execution_id) if isinstance(execution_id, int) else None
        return ex, (steps.get((ex.sop_version_id, ex.step_id)) if ex is not None else None)

    def step_words(ex: StepExecution | None, step: Step | None) -> str:
        if ex is None:
            return ""
        if step is None:
            return words.plain(ex.step_id)
        return words.step_name(step, ex.instance if step.repeat is not None else None)

    lines = []
    for entry, before, after in parsed:
        record, change = "", words.change(before or None, after, tz=tz)
        if entry.entity_type == "recorded_value":
            ex, defined = step_of(after.get("execution_id"))
            if ex is not None:
                record = words.value_name(defined, ex.instance, str(after.get("field_id", "")))
            shown = f"{after.get('text', '')}" + (f" {after['unit']}" if after.get("unit") else "")
            change = [f"{record or 'value'}: {shown}"]
            if isinstance(after.get("supersedes_id"), int):  # a correction: the original is kept, this follows it
                change = [f"{record or 'value'}: {originals.get(after['supersedes_id'], '?')} → {shown}"]
            if after.get("in_limits") is False:
                change.append(f"out of limit: {after.get('limit_message') or ''}")
            change += [f"{key.replace('_', ' ')}: {after[key]}" for key in ("correction_reason", "comment")
                       if after.get(key)]
        elif entry.entity_type == "step_execution" and entry.entity_id and entry.entity_id.isdigit():
            record = step_words(*step_of(int(entry.entity_id)))
        elif entry.entity_type == "batch" and entry.entity_id and entry.entity_id.isdigit():
            record = f"Batch {lots.get(int(entry.entity_id), '')}".strip()
        elif entry.entity_type == "signature" and after:
            meaning = _MEANINGS.get(str(after.get("meaning")), words.plain(str(after.get("meaning", ""))))
            if after.get("record_type") == "step_execution" and str(after.get("record_id", "")).isdigit():
                signed = step_words(*step_of(int(after["record_id"])))
            else:
                signed = record_words(after.get("record_type"))
            record = signed
            change = [f"{meaning} {after.get('printed_name', '')}".strip()] + (
                [f"comment: {after['comment']}"] if after.get("comment") else [])
        reason = _STEP_REASON.sub(lambda m: _step_reason(titles, m), entry.reason or "")
        lines.append(Line(entry, action_words(entry.action, entry.entity_type),
                          record or record_words(entry.entity_type), "; ".join(change), reason, _raw(entry)))
    return lines

