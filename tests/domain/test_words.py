"""The master record's words for what it names by id (``mfg.domain.words``), issue 17 item 8."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from mfg.config import RESOURCE_ROOT
from mfg.domain import words
from mfg.domain.sop_schema import parse_definition, step_index

INTAKE = RESOURCE_ROOT / "sops" / "nk" / "NK-INTAKE_v1.yaml"
FORMULATE = RESOURCE_ROOT / "sops" / "nk" / "NK-FORMULATE_v3.yaml"


def _record(path):  # noqa: ANN001, ANN202
    return parse_definition(path.read_text(encoding="utf-8"), path.name)


def test_references_are_named_by_the_step_title_and_field_label_and_run_time_names_in_words() -> None:
    intake = _record(INTAKE)
    assert words.reference("identify_bag.collection_end", [intake]) == "Identify the collection bag: End of collection"
    assert words.reference("batch.din") == "DIN"
    assert words.reference("subject.coi") == "the subject's COI"
    assert words.reference("trial.cd3_limit_per_kg").startswith("the trial's CD3")
    assert words.reference("nowhere.to_be_found", [intake]) == "nowhere to be found"  # never an id on screen
    assert words.step_title("transport_receipt", [intake]) == "Transport and receipt"


def test_a_calculation_is_written_with_labels_and_printed_operators() -> None:
    formulate = _record(FORMULATE)
    _stage, dose_plan = step_index(formulate)["dose_plan"]
    text = words.expression("subject.dose_per_kg * subject.weight_kg / 1000000", [formulate], dose_plan)
    assert text == "the subject's dose (NK cells/kg) × the subject's weight (kg) ÷ 1,000,000"
    assert "_" not in words.expression(dose_plan.fields[-1].expression, [formulate], dose_plan)


def test_limits_read_as_people_write_them() -> None:
    intake = _record(INTAKE)
    fields = {f.id: f for _stage, step in step_index(intake).values() for f in step.fields}
    assert words.limits(fields["transport_temperature"]) == "≥ 2; ≤ 8"
    assert words.limits(fields["bag_din"]) == "must match DIN"


def test_a_change_is_label_old_to_new_in_the_sites_time_without_ids_or_hashes() -> None:
    chicago = ZoneInfo("America/Chicago")
    lines = words.change({"status": "draft", "approved_at": None, "approved_by_id": None},
                         {"status": "effective", "approved_at": "2026-03-29T15:30:12.123456Z", "approved_by_id": 3},
                         tz=chicago)
    assert lines == ["status: draft → effective", "approved at: none → 2026-03-29 10:30 CDT", "approved by: recorded"]
    created = words.change(None, {"id": 7, "sha256": "ab" * 32, "batch_id": 1, "nk_cells": 936045000,
                                  "status": "awaiting_verification"})
    assert created == ["nk cells: 9.36 × 10⁸", "status: awaiting verification"]


def test_units_and_amounts() -> None:
    class Count:
        type, unit = "number", "10^6 cells"

    class PerKg:
        type, unit = "calculated", "CD3+ cells/kg"

    assert words.unit("10^6 cells/mL") == "× 10⁶ cells/mL"
    assert words.shown(Count, "250.0", "250.0 10^6 cells") == "250.0 × 10⁶ cells"  # the digits as recorded
    assert words.shown(PerKg, "8053", "8053 CD3+ cells/kg") == "8.05 × 10³ CD3+ cells/kg"
    assert words.value_words(datetime(2026, 3, 29, 15, 30, tzinfo=UTC).isoformat()) == "2026-03-29 15:30 UTC"
