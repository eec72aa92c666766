"""What each document of a batch shows and embeds, taken from the frozen batch snapshot
(``services.snapshot``): each document carries only its own data.

* :func:`certificate`: the certificate of analysis: the product as the trial configuration names it, the
  facility, storage and additive statements, the bags, and only the tests with a specification (each with
  its method, sample date, test date, specification in words and result: the final result once it was
  entered after a conditional release), the deviations and QA's decisions. No manufacturing steps, no
  audit trail.
* :func:`labels`: one plain dict per bag label (what :class:`mfg.reports.labels.LabelData` takes).
* :func:`audit_lines`: the batch record's audit trail, one line an entry: time, who, action, what changed
  in words (the raw entries stay in the batch record's attachment, the whole snapshot).

Times are written for people by :mod:`mfg.domain.display` in the site's zone (the trial configuration's
``site_timezone``, UTC when the batch has none), to the minute; cell counts as ``1.87 × 10⁹``.
Pure: no Flask, no database.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from ..domain import display

CERTIFICATE_FORMAT = "mfg.certificate-of-analysis/1"
LABELS_FORMAT = "mfg.labels/1"


def zone(snap: dict[str, Any]) -> ZoneInfo:
    """The site's time zone of the batch (its pinned trial configuration), UTC without one."""
    trial = snap.get("trial") or {}
    return ZoneInfo(trial.get("site_timezone") or "UTC")


def moment(iso: str | None) -> datetime | None:
    """A snapshot time (UTC ISO 8601, ``...Z``) as an aware datetime."""
    if not iso:
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)


def when(iso: str | None, tz: ZoneInfo) -> str:
    """A snapshot time as people read it: ``2026-03-29 10:30 CST`` (no seconds)."""
    return display.local(moment(iso), tz)


def day(iso: str | None, tz: ZoneInfo) -> str:
    return display.local_date(moment(iso), tz)


def dose_decision_line(subject: dict[str, Any] | None) -> str:
    """The signed escalation decision that opened the batch's dose level, as the batch record and the certificate
    print it: ``Dose level DL2 opened by escalation decision 2: escalate, Approved by Clara Coordinator
    2026-12-07 10:00 UTC`` ("" for a batch without one, or a snapshot made before batches pinned it)."""
    decision = (subject or {}).get("dose_decision")
    if not decision:
        return ""
    return (f"Dose level {decision['level']} opened by escalation decision {decision['id']}: {decision['action']}, "
            f"{decision['meaning']} {decision['printed_name']} {display.utc(moment(decision['signed_at']))}")


# --- certificate of analysis ------------------------------------------------------------------------------


def _result(value: dict[str, Any]) -> str:
    """A result as the certificate states it: a count of cells as ``8.05 × 10³ CD3+ cells/kg``, as its
    specification is written; any other value as recorded (with its unit). The batch record keeps every
    recorded value exactly as it was entered or calculated."""
    unit, raw = str(value.get("unit") or ""), str(value.get("raw") or "")
    if "cells" in unit.split("/")[0] and "×" not in unit and raw:
        try:
            counted = Decimal(raw)
        except InvalidOperation:
            counted = None
        if counted is not None and abs(counted) >= 1000:
            return f"{display.cells(counted)} {unit}"
    return str(value.get("text") or "")


def certificate_tests(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """The tests with a specification of the records on the certificate, in the records' order."""
    tz = zone(snap)
    rows = []
    for record in snap["records"]:
        if not record.get("certificate_of_analysis"):
            continue
        for stage in record["stages"]:
            for step in stage["steps"]:
                for v in step["values"]:
                    test = v.get("test")
                    if not test:
                        continue
                    final = v["final"] if v.get("final") and v["final"].get("result") else None
                    if final is not None:
                        result, tested, meets = final["result"], final["entered_at"], final["in_limits"]
                        status = "meets" if meets else "does NOT meet"
                        status += (f" · verified by {final['verified_by']}" if final.get("verified_by")
                                   else " · NOT YET VERIFIED")
                    elif v["pending"]:
                        result, tested, status = _result(v["value"]), None, "pending"
                    else:
                        result, tested = _result(v["value"]), v["value"]["entered_at"]
                        status = "meets" if v["value"]["in_limits"] else "does NOT meet"
                    rows.append({"test": v["label"], "method": test["method"],
                                 "sampled": day(test.get("sampled_at"), tz),
                                 "tested": day(tested, tz) if tested else "",
                                 "specification": test["specification"], "result": result, "status": status,
                                 "pending": status == "pending"})
    return rows


def certificate(snap: dict[str, Any]) -> dict[str, Any]:
    """Everything the certificate of analysis prints, and nothing else: it is also what it embeds."""
    tz = zone(snap)
    trial, subject, batch = snap.get("trial") or {}, snap.get("subject"), snap["batch"]
    tests = certificate_tests(snap)
    pending = [t["test"] for t in tests if t["pending"]]
    return {
        "format": CERTIFICATE_FORMAT,
        "facility": {"name": trial.get("facility_name") or "", "address": list(trial.get("facility_address") or []),
                     "fin": trial.get("facility") or ""},
        "product": {"name": trial.get("product_name") or "", "code": trial.get("product_code") or "",
                    "trial": trial.get("trial_id") or "", "configuration": trial.get("configuration") or "",
                    "storage": trial.get("storage") or "", "additive": trial.get("additive") or ""},
        "batch": {"lot": batch["lot"], "din": batch.get("din_eye_readable") or "", "din_check": batch.get("din_check")
                  or "", "started": when(batch["created_at"], tz)},
        "subject": None if subject is None else {
            "code": subject["code"], "coi": subject["coi_eye_readable"], "coi_check": subject["coi_check"],
            "dose_level": subject["dose_level"], "dose_cells_per_kg": display.cells(subject["dose_cells_per_kg"]),
            "weight_kg": subject["weight_kg"], "weight_measured_on": subject["weight_measured_on"] or "",
            # absent without a decision: certificates issued before it existed compare unchanged
            **({"dose_decision": line} if (line := dose_decision_line(subject)) else {})},
        "bags": [{"division": b["division"], "product_code": b["product_code_data"], "volume_ml": b["volume_ml"],
                  "nk_cells": display.cells(b["nk_cells"]), "expires": when(b["expires_at"], tz)}
                 for b in snap["bags"]],
        "tests": tests,
        "pending": pending,
        "deviations": [{"number": d["number"], "classification": d["classification"] or "unclassified",
                        "status": d["status"], "description": d["description"]} for d in snap["deviations"]],
        "decisions": [{"decision": d["decision"].replace("_", " ").capitalize(),
                       # the tests still pending, by name; a supplemental certificate lists final results only
                       "pending": ", ".join(pending) if d["pending"] and pending else "",
                       "comment": d["comment"] or "",
                       # the signature's manifestation (its comment restates the decision in the engine's words)
                       "signatures": [{"meaning": s["meaning"], "printed_name": s["printed_name"],
                                       "username": s["username"], "signed_at": when(s["signed_at"], tz)}
                                      for s in d["signatures"]]}
                      for d in snap["decisions"]],
    }


# --- labels -----------------------------------------------------------------------------------------------


def labels(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """One plain dict per bag: what its label prints (``LabelData`` fields, times as UTC ISO 8601)."""
    subject, trial = snap["subject"], snap["trial"]
    if not snap["bags"] or subject is None or trial is None:
        return []
    return [{"din": snap["batch"]["din"], "flags": "00", "product_code": bag["product_code"],
             "product_name": trial["product_name"], "expires_at": bag["expires_at"],
             "timezone": trial.get("site_timezone") or "UTC",
             "subject_code": subject["code"], "coi": subject["coi"], "nk_cells": bag["nk_cells"],
             "volume_ml": bag["volume_ml"],
             "dose_level": f"{subject['dose_level']} ({display.cells(subject['dose_cells_per_kg'])} NK cells/kg)",
             "storage": trial["storage"], "facility": trial["facility"],
             "facility_name": trial.get("facility_name") or "",
             "facility_address": list(trial.get("facility_address") or []),
             "additive": trial.get("additive") or "", "warnings": list(trial["label_warnings"])}
            for bag in snap["bags"]]


# --- the batch record's audit trail -------------------------------------------------------------------------

_ACTIONS = {"create": "created", "update": "changed"}
# Columns that say nothing to a reader of the line (keys and references, hashes, file bytes, the entry's own
# time and author, which the line prints already); the attachment keeps every one.
_QUIET = {"id", "content", "batch", "execution", "field_type", "instance", "position", "revision_of",
          "created_at", "created_by", "entered_at", "entered_by", "performed_at", "signed_at", "opened_at",
          "opened_by", "decided_at", "decided_by", "reviewed_at", "reviewed_by", "record_type", "record", "user",
          "supersedes", "sop_version", "pending_value", "signature", "dose_signature", "trial_config_version"}
_LINE = 80  # characters of "what changed" on one printed line


def _words(name: str) -> str:
    return name.removesuffix("_id").replace("_", " ")


def _short(value: Any) -> str:
    if value is None:
        return "none"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) >= 20 and text[4:5] == "-" and "T" in text[8:12]:  # an ISO time: to the minute, no microseconds
        try:
            return display.utc(moment(text))
        except ValueError:
            pass
    return text if len(text) <= 40 else text[:39] + "…"


def _loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def change_words(action: str, before: str | None, after: str | None) -> str:
    """What an audit entry changed, in words: ``status: in progress → done`` for a change, the values
    of a new record (``field: viability · text: 93.4``) for a creation; keys and hashes left out."""
    old, new = _loads(before), _loads(after)
    keys = [k for k in new if _words(k).replace(" ", "_") not in _QUIET and not k.endswith(("_hash", "sha256"))]
    if action.startswith("recorded_value.") and "field_id" in new:  # a value: "viability = 92.0 %"
        value = f"{new['field_id']} = {_short(new.get('text'))}" + (f" {new['unit']}" if new.get("unit") else "")
        if new.get("in_limits") is False:
            value += " (OUT OF LIMIT)"
        keys = [k for k in keys if k not in ("field_id", "text", "unit", "in_limits")]
        rest = "; ".join(f"{_words(k)}: {_short(new[k])}" for k in keys if new[k] not in (None, "", [], {}))
        text = value + (f"; {rest}" if rest else "")
        return text if len(text) <= _LINE else text[:_LINE - 1] + "…"
    if action.endswith(".update"):
        parts = [f"{_words(k)}: {_short(old.get(k))} → {_short(new[k])}" for k in keys]
    else:
        parts = [f"{_words(k)}: {_short(new[k])}" for k in keys if new[k] not in (None, "", [], {})]
    text = "; ".join(parts)
    return text if len(text) <= _LINE else text[:_LINE - 1] + "…"


def audit_lines(snap: dict[str, Any]) -> list[dict[str, str]]:
    """The batch record's audit trail, one line an entry: time, who, action and what changed, in words."""
    tz = zone(snap)
    lines = []
    for entry in snap["audit_trail"]:
        kind, _, verb = entry["action"].partition(".")
        lines.append({"seq": str(entry["seq"]), "at": when(entry["at"], tz), "user": entry["user"],
                      "action": f"{_words(kind)} {_ACTIONS.get(verb, verb)}".strip(),
                      "what": change_words(entry["action"], entry.get("before"), entry.get("after")),
                      # the reason of a change (a correction's); a creation's reason restates its action
                      "reason": _short(entry["reason"]) if entry["reason"] and verb != "create" else ""})
    return lines
