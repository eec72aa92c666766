"""What each document shows, from a plain snapshot (mfg.reports.contents): the batch record's audit trail one
line an entry in words, no microseconds; pure, no database."""

from __future__ import annotations

import json

import pytest

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


def _value(label: str, text: str, *, test: dict | None, pending: bool = False, final: dict | None = None) -> dict:
    return {"label": label, "pending": pending, "final": final, "test": test,
            "value": {"text": text, "in_limits": True, "entered_at": "2026-03-30T10:00:00.5Z"}}


def _snapshot(final: dict | None) -> dict:
    sterility = {"method": "Compendial culture, 14 days", "specification": "No growth at 14 days",
                 "sampled_at": "2026-03-29T08:00:00.1Z"}
    return {
        "trial": {"site_timezone": "UTC", "facility_name": "Cell Lab", "facility_address": ["1 Way"],
                  "facility": "X9999", "product_name": "NK cells", "product_code": "S9999V", "trial_id": "NCT1",
                  "configuration": "NK-TRIAL v4", "storage": "Store at 2-8 °C. Do not irradiate.",
                  "additive": "5 % albumin"},
        "batch": {"lot": "L1", "din_eye_readable": "X9999 26 000001", "din_check": "X",
                  "created_at": "2026-03-20T08:00:00.123456Z"},
        "subject": None, "bags": [], "deviations": [],
        "decisions": [{"decision": "conditionally_released", "pending": "sterility #1: result (recorded as Pending)",
                       "comment": "", "signatures": [{"meaning": "Released by", "printed_name": "Quinn",
                                                      "username": "qa1", "signed_at": "2026-03-30T11:00:00.5Z",
                                                      "comment": "batch conditionally released; pending: ..."}]}],
        "records": [{"certificate_of_analysis": True, "stages": [{"steps": [
            {"values": [_value("Total volume sampled", "4.0 mL", test=None),
                        _value("Sterility (14-day culture)", "Pending", test=sterility, pending=True, final=final),
                        _value("Results against NK-SPEC v2", "All available results ...; sterility pending",
                               test=None)]}]}]},
            {"certificate_of_analysis": False, "stages": [{"steps": [{"values": [
                _value("Viability at intake", "95 %", test={"method": "m", "specification": "s",
                                                            "sampled_at": None})]}]}]}],
    }


def test_the_certificate_lists_only_tests_and_a_supplemental_only_final_results() -> None:
    first = contents.certificate(_snapshot(None))
    assert [t["test"] for t in first["tests"]] == ["Sterility (14-day culture)"]  # no non-tests, no other record
    (row,) = first["tests"]
    assert (row["method"], row["sampled"], row["tested"], row["specification"], row["pending"]) == (
        "Compendial culture, 14 days", "2026-03-29", "", "No growth at 14 days", True)
    assert first["decisions"][0]["pending"] == "Sterility (14-day culture)"  # named as QA reads it
    assert first["facility"] == {"name": "Cell Lab", "address": ["1 Way"], "fin": "X9999"}
    assert first["product"]["storage"] == "Store at 2-8 °C. Do not irradiate." and first["batch"]["started"] == \
        "2026-03-20 08:00 UTC"
    final = {"result": "No growth", "in_limits": True, "entered_at": "2026-04-13T09:00:00.2Z",
             "verified_by": "Oscar Verifier"}
    supplemental = contents.certificate(_snapshot(final))
    (row,) = supplemental["tests"]
    assert (row["result"], row["tested"], row["status"], row["pending"]) == (
        "No growth", "2026-04-13", "meets · verified by Oscar Verifier", False)
    assert supplemental["pending"] == [] and supplemental["decisions"][0]["pending"] == ""
    items = supplemental["tests"] + supplemental["decisions"]
    texts = [v for item in items for v in item.values() if isinstance(v, str)]
    assert not any("pending" in text.lower() for text in texts)
    assert "audit_trail" not in supplemental and "records" not in supplemental


@pytest.mark.parametrize(("raw", "unit", "text", "shown"), [
    ("8053", "CD3+ cells/kg", "8053 CD3+ cells/kg", "8.05 × 10³ CD3+ cells/kg"),  # as its specification is written
    ("187000000", "NK cells", "187000000 NK cells", "1.87 × 10⁸ NK cells"),
    ("950", "cells/µL", "950 cells/µL", "950 cells/µL"),  # a small count as recorded
    ("2500.0", "× 10⁶ cells", "2500.0 × 10⁶ cells", "2500.0 × 10⁶ cells"),  # already in powers of ten
    ("0.12", "EU/mL", "0.12 EU/mL", "0.12 EU/mL"),  # not a count of cells
])
def test_a_count_of_cells_is_stated_in_powers_of_ten_on_the_certificate(raw: str, unit: str, text: str,
                                                                         shown: str) -> None:
    assert contents._result({"raw": raw, "unit": unit, "text": text}) == shown
