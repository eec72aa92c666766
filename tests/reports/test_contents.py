"""What each document shows, from a plain snapshot (mfg.reports.contents): the batch record's audit trail one
line an entry in words, no microseconds; pure, no database."""

from __future__ import annotations

import json

from mfg.reports import contents


def _entry(seq: int, action: str, before: dict | None, after: dict, reason: str | None = None) -> dict:
    return {"seq": seq, "at": "2026-03-29T02:30:15.123456Z", "user": "olivia", "action": action,
            "entity": f"{action.split('.')[0]} 7", "reason": reason,
            "before": json.dumps(before) if before is not None else None, "after": json.dumps(after)}


SNAP = {"trial": {"site_timezone": "America/Chicago"}, "audit_trail": [
    _entry(1, "step_execution.update", {"status": "in_progress", "completed_at": None},
           {"status": "complete", "completed_at": "2026-03-29T02:31:00.654321Z"}),
    _entry(2, "recorded_value.create", None,
           {"id": 9, "execution_id": 3, "field_id": "viability", "field_type": "number", "text": "92.0", "unit": "%",
            "in_limits": True, "entered_at": "2026-03-29T02:30:15.123456Z", "entered_by_id": 4, "comment": None}),
    _entry(3, "recorded_value.create", None,
           {"field_id": "endotoxin_eu_per_ml", "text": "7.10", "unit": "EU/mL", "in_limits": False,
            "comment": "retest requested"}),
    _entry(4, "recorded_value.update", {"text": "12.5"}, {"text": "12.6"}, reason="transcription error"),
]}


def test_each_audit_entry_is_one_line_in_words_in_the_sites_time() -> None:
    lines = contents.audit_lines(SNAP)
    assert [line["at"] for line in lines] == ["2026-03-28 21:30 CDT"] * 4  # the site's time, minutes, its zone
    assert lines[0]["action"] == "step execution changed"
    assert lines[0]["what"] == "status: in_progress → complete; completed at: none → 2026-03-29 02:31 UTC"
    assert lines[1]["action"] == "recorded value created" and lines[1]["what"] == "viability = 92.0 %"
    assert lines[2]["what"] == "endotoxin_eu_per_ml = 7.10 EU/mL (OUT OF LIMIT); comment: retest requested"
    assert lines[3]["what"] == "text: 12.5 → 12.6" and lines[3]["reason"] == "transcription error"
    assert all(len(line["what"]) <= 80 for line in lines)
    assert not any(".123456" in value or ".654321" in value for line in lines for value in line.values())


def test_a_long_change_is_cut_to_one_line() -> None:
    (line,) = contents.audit_lines({"trial": None, "audit_trail": [
        _entry(5, "deviation.create", None, {"description": "x" * 300, "origin": "by_hand", "status": "open",
                                             "number": "DEV-2026-0001", "classification": "minor"})]})
    assert line["what"].startswith("description: " + "x" * 39 + "…; origin: by_hand")  # each value shortened
    assert len(line["what"]) == 80 and line["what"].endswith("…") and line["at"] == "2026-03-29 02:30 UTC"
