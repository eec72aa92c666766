"""Recorded values: every field type's good, malformed and out-of-limit entries, calculated fields, local time."""

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mfg.domain import values
from mfg.domain.calc import CalculationError
from mfg.domain.errors import ValidationFailed
from mfg.domain.sop_schema import FIELD_TYPES, CalculatedField, NumberField, parse_definition
from mfg.domain.values import CONFIRMED, KINDS, NOT_RECORDED, Parsed

BERLIN = ZoneInfo("Europe/Berlin")

RECORD = """
kind: master_batch_record
code: VALUES-TEST
version: 1
title: Values test
stages:
  - id: intake
    title: Intake
    steps:
      - id: initial_count
        title: Initial count
        fields:
          - {id: volume_ml, type: number, label: Volume, unit: mL, decimals: 2, min: 10.0, max: 250.0}
          - {id: viability, type: number, label: Viability, unit: "%", decimals: 1, min: 70.0, max: 100.0}
          - {id: whole, type: number, label: Whole, unit: g, decimals: 0}
          - {id: colonies, type: integer, label: Colonies, unit: CFU, min: 0, max: 5}
          - {id: remarks, type: text, label: Remarks, required: false, max_length: 20}
          - {id: status, type: choice, label: Room status, choices: [Clean, Needs cleaning], acceptable: [Clean]}
          - {id: colour, type: choice, label: Colour, choices: [Red, Blue], required: false}
          - {id: started_at, type: datetime, label: Started}
          - {id: cleaned, type: confirmation, label: Cabinet cleaned, statement: The cabinet was cleaned}
          - {id: optional_tick, type: confirmation, label: Extra check, statement: Done, required: false}
          - {id: bag, type: scan, label: Bag label, expected: batch.din}
          - {id: cabinet, type: equipment, label: Cabinet, equipment_type: biosafety cabinet}
          - {id: buffer, type: material, label: Buffer lot, material: PBS}
          - id: total_cells
            type: calculated
            label: Total viable cells
            unit: 10^6 cells
            decimals: 1
            min: 100.0
            expression: volume_ml * concentration
          - {id: concentration, type: number, label: Concentration, unit: 10^6 cells/mL, decimals: 2}
      - id: final_count
        title: Final count
        fields:
          - {id: final_total, type: number, label: Final total, unit: 10^6 cells, decimals: 1}
          - id: recovery
            type: calculated
            label: Recovery
            unit: "%"
            decimals: 2
            min: 50.0
            max: 150.0
            expression: final_total / initial_count.total_cells * 100
"""

FIELDS: dict[str, Any] = {
    field.id: field
    for stage in parse_definition(RECORD, "values.yaml").stages
    for step in stage.steps
    for field in step.fields
}


def parse(field_id: str, raw: str) -> Parsed:
    return values.parse(FIELDS[field_id], raw, tz=BERLIN)


def refused(field_id: str, raw: str) -> str:
    with pytest.raises(ValidationFailed) as caught:
        parse(field_id, raw)
    assert len(caught.value.problems) == 1
    message = caught.value.problems[0]
    assert FIELDS[field_id].label in message, "messages name the field"
    return message


def limits(field_id: str, raw: str) -> list[str]:
    return values.limit_problems(FIELDS[field_id], parse(field_id, raw))


def test_every_field_type_has_a_kind() -> None:
    assert set(KINDS) == set(FIELD_TYPES)
    assert all(kind.type_name == name for name, kind in KINDS.items())
    assert {field.type for field in FIELDS.values()} == set(FIELD_TYPES), "this test covers every type"


# --- number ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("185.25", "185.25"),
        ("185.20", "185.20"),  # the precision read is kept
        ("185", "185"),
        (" 12.5\t", "12.5"),
        ("007.5", "7.5"),
        ("-3.5", "-3.5"),
        ("-0.00", "0.00"),
    ],
)
def test_number_keeps_the_entered_precision(raw: str, text: str) -> None:
    assert parse("volume_ml", raw) == Parsed(text, Decimal(text))


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("abc", "'abc' is not a number; enter digits with an optional decimal point"),
        ("12,5", "use a point as the decimal separator and no thousands separators"),
        ("1,000.5", "no thousands separators"),
        ("1 000", "no thousands separators"),
        ("1e5", "uses exponent notation; write the number out in full"),
        ("1.5E-3", "uses exponent notation"),
        ("+5", "without a plus sign"),
        (".5", "digits on both sides of the decimal point"),
        ("5.", "digits on both sides of the decimal point"),
        ("--5", "is not a number"),
        ("12.5 mL", "is not a number"),
        ("NaN", "is not a number"),
        ("١٢", "is not a number"),  # Arabic-Indic digits: ASCII digits only
        ("185.255", "'185.255' has 3 decimal places; at most 2 decimal places allowed"),
        ("1" * 29, "too many digits (29); at most 28 are allowed"),
    ],
)
def test_malformed_numbers_are_refused(raw: str, fragment: str) -> None:
    message = refused("volume_ml", raw)
    assert message.startswith("Volume: ")
    assert fragment in message


def test_number_field_without_decimals_takes_whole_numbers_only() -> None:
    assert parse("whole", "12").text == "12"
    assert "'12.5' has 1 decimal place; whole numbers only" in refused("whole", "12.5")


def test_required_number_must_be_entered() -> None:
    assert refused("volume_ml", "  ") == "Volume is required; enter a value."


def test_number_limits() -> None:
    assert limits("viability", "62") == ["Viability 62 % is below the minimum 70 %"]
    assert limits("viability", "100.1") == ["Viability 100.1 % is above the maximum 100 %"]
    assert limits("viability", "70.0") == []  # limits are inclusive
    assert limits("viability", "100") == []
    assert limits("volume_ml", "9.99") == ["Volume 9.99 mL is below the minimum 10 mL"]
    assert limits("whole", "-5") == []  # no limits, nothing to judge


def test_number_display() -> None:
    assert values.display(FIELDS["viability"], "62.5") == "62.5 %"
    assert values.display(FIELDS["volume_ml"], "185.20") == "185.20 mL"
    assert values.display(FIELDS["volume_ml"], "") == NOT_RECORDED


# --- integer -----------------------------------------------------------------------------------------


def test_integer_values() -> None:
    assert parse("colonies", "3") == Parsed("3", Decimal(3))
    assert parse("colonies", "0003") == Parsed("3", Decimal(3))
    assert "'2.0' is not a whole number" in refused("colonies", "2.0")
    assert "'2.5' is not a whole number" in refused("colonies", "2.5")
    assert "'three' is not a number" in refused("colonies", "three")
    assert "exponent notation" in refused("colonies", "1e2")
    assert limits("colonies", "6") == ["Colonies 6 CFU is above the maximum 5 CFU"]
    assert limits("colonies", "-1") == ["Colonies -1 CFU is below the minimum 0 CFU"]
    assert limits("colonies", "5") == []
    assert values.display(FIELDS["colonies"], "3") == "3 CFU"


# --- text --------------------------------------------------------------------------------------------


def test_text_values() -> None:
    assert parse("remarks", "  fine \r\nline 2 ") == Parsed("fine \nline 2")
    assert parse("remarks", "") == Parsed("")  # optional
    assert "21 characters; at most 20 are allowed" in refused("remarks", "x" * 21)
    assert "control character" in refused("remarks", "bad\x00byte")
    assert "RIGHT-TO-LEFT OVERRIDE" in refused("remarks", "dose \u202e01 gk")  # would print reversed
    assert parse("remarks", "cafe\u0301").text == "caf\u00e9"  # one stored form (NFC)
    assert parse("remarks", "tab\there").text == "tab\there"
    assert limits("remarks", "anything") == []
    assert values.display(FIELDS["remarks"], "") == NOT_RECORDED
    assert values.display(FIELDS["remarks"], "all fine") == "all fine"


# --- choice ------------------------------------------------------------------------------------------


def test_choice_values() -> None:
    assert parse("status", " Clean ") == Parsed("Clean")
    assert limits("status", "Clean") == []
    assert limits("status", "Needs cleaning") == ["Room status 'Needs cleaning' is not acceptable (acceptable: Clean)"]
    assert refused("status", "Dirty") == "Room status: 'Dirty' is not one of the answers: Clean, Needs cleaning"
    assert "'clean' is not one of the answers" in refused("status", "clean")  # exact answers only
    assert refused("status", "") == "Room status is required; choose an answer."
    assert parse("colour", "") == Parsed("")
    assert limits("colour", "Blue") == []  # no acceptable list: any answer is within limits
    assert values.display(FIELDS["status"], "Clean") == "Clean"


# --- confirmation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["y", "Yes", "on", "TRUE", "1", "confirmed"])
def test_ticked_confirmation(raw: str) -> None:
    assert parse("cleaned", raw) == Parsed(CONFIRMED)
    assert limits("cleaned", raw) == []
    assert values.display(FIELDS["cleaned"], CONFIRMED) == "Confirmed"


@pytest.mark.parametrize("raw", ["", "n", "off", "false", "0"])
def test_unticked_confirmation(raw: str) -> None:
    assert refused("cleaned", raw) == "Cabinet cleaned is required; tick the box to confirm: The cabinet was cleaned."
    assert parse("optional_tick", raw) == Parsed("")
    assert values.display(FIELDS["optional_tick"], "") == NOT_RECORDED


def test_confirmation_refuses_anything_else() -> None:
    assert "'maybe' is not a tick" in refused("cleaned", "maybe")


# --- datetime ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "utc"),
    [
        ("2026-03-29 10:30", datetime(2026, 3, 29, 8, 30, tzinfo=timezone.utc)),  # summer time, UTC+2
        ("2026-03-29T10:30", datetime(2026, 3, 29, 8, 30, tzinfo=timezone.utc)),
        ("2026-01-15 10:30:15", datetime(2026, 1, 15, 9, 30, 15, tzinfo=timezone.utc)),  # winter time, UTC+1
        ("2026-03-29 01:59", datetime(2026, 3, 29, 0, 59, tzinfo=timezone.utc)),  # just before the gap
        ("2026-03-29 03:00", datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc)),  # just after it
    ],
)
def test_local_site_time_is_stored_in_utc(raw: str, utc: datetime) -> None:
    parsed = parse("started_at", raw)
    assert parsed.moment == utc
    assert parsed.moment is not None and parsed.moment.utcoffset() is not None
    assert parsed.text == utc.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert values.restore(FIELDS["started_at"], parsed.text) == parsed


def test_datetime_display_in_site_time_or_utc() -> None:
    text = parse("started_at", "2026-03-29 10:30").text
    assert values.display(FIELDS["started_at"], text, tz=BERLIN) == "2026-03-29 10:30 CEST"
    assert values.display(FIELDS["started_at"], text) == "2026-03-29 08:30 UTC"
    winter = parse("started_at", "2026-01-15 10:30:15").text
    assert values.display(FIELDS["started_at"], winter, tz=BERLIN) == "2026-01-15 10:30:15 CET"


def test_times_that_do_not_exist_or_occur_twice_are_refused() -> None:
    gap = refused("started_at", "2026-03-29 02:30")
    assert gap == (
        "Started: 2026-03-29 02:30 does not exist in Europe/Berlin: the clocks go forward an hour at that time; "
        "check the time on the clock"
    )
    twice = refused("started_at", "2026-10-25 02:30")
    assert "2026-10-25 02:30 is ambiguous in Europe/Berlin: it occurs twice" in twice


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("2026-02-30 10:00", "'2026-02-30 10:00' is not a valid date and time (day is out of range for month)"),
        ("2026-03-29 24:00", "is not a valid date and time"),
        ("2026-03-29", "is not a date and time; enter YYYY-MM-DD HH:MM"),
        ("29.03.2026 10:30", "is not a date and time"),
        ("2026-03-29 10:30+02:00", "is not a date and time"),  # local time only, no offsets
        ("0226-03-29 10:30", "the year must be 1900 or later"),
        ("yesterday", "is not a date and time"),
    ],
)
def test_malformed_dates_are_refused(raw: str, fragment: str) -> None:
    assert fragment in refused("started_at", raw)


def test_datetime_has_no_limits_of_its_own() -> None:
    assert limits("started_at", "2026-03-29 10:30") == []  # time windows are judged by the services


# --- scan, equipment, material -----------------------------------------------------------------------


@pytest.mark.parametrize(("field_id", "what"), [("bag", "scanned code"), ("cabinet", "equipment identifier"),
                                                ("buffer", "material lot")])
def test_identifiers_get_format_checks_only(field_id: str, what: str) -> None:
    typed = "BSC-01/2" if field_id == "cabinet" else "W1234 26 123456 A"  # equipment: no spaces (inputs.LABEL)
    assert parse(field_id, f" {typed}\r\n") == Parsed(typed)  # scanner's Enter removed
    assert parse(field_id, "x" * 200).text == "x" * 200
    assert "the text has 201 characters; at most 200 are allowed" in refused(field_id, "x" * 201)
    assert "contains a control character" in refused(field_id, "W1234\x1d26")
    assert "ZERO WIDTH SPACE" in refused(field_id, "BSC\u200b01")
    assert "CYRILLIC CAPITAL LETTER O" in refused(field_id, "NK-\u041e01")
    assert refused(field_id, "") == f"{FIELDS[field_id].label} is required; enter the {what}."
    assert limits(field_id, "anything") == []
    assert values.display(FIELDS[field_id], "W1234") == "W1234"


# --- calculated --------------------------------------------------------------------------------------


def test_operators_cannot_type_a_calculated_value() -> None:
    assert refused("total_cells", "500") == "Total viable cells is calculated by the system and cannot be entered."


def test_compute_rounds_half_up_to_the_field_decimals() -> None:
    field: CalculatedField = FIELDS["total_cells"]
    parsed = values.compute(field, {"volume_ml": Decimal("185.25"), "concentration": Decimal("2.5")})
    assert parsed == Parsed("463.1", Decimal("463.1"))  # 463.125 -> 463.1
    assert values.compute(field, {"volume_ml": Decimal("107"), "concentration": Decimal("2.5")}).text == "267.5"
    assert values.compute(field, {"volume_ml": 100, "concentration": 2}).text == "200.0"  # always 1 place
    assert values.limit_problems(field, parsed) == []
    assert values.display(field, parsed.text) == "463.1 10^6 cells"


def test_compute_half_up_where_float_rounding_is_wrong() -> None:
    field = CalculatedField(id="c", type="calculated", label="C", unit="1", decimals=2, expression="x")
    assert round(2.675, 2) == 2.67
    assert values.compute(field, {"x": 2.675}).text == "2.68"
    assert values.compute(field, {"x": Decimal("-2.675")}).text == "-2.68"
    assert values.compute(field, {"x": Decimal("-0.001")}).text == "0.00"


def test_computed_values_are_judged_against_limits() -> None:
    low = values.compute(FIELDS["total_cells"], {"volume_ml": 20, "concentration": Decimal("2.5")})
    assert values.limit_problems(FIELDS["total_cells"], low) == [
        "Total viable cells 50.0 10^6 cells is below the minimum 100 10^6 cells"
    ]


def test_compute_with_dotted_reference() -> None:
    field = FIELDS["recovery"]
    parsed = values.compute(field, {"final_total": Decimal("925.0"), "initial_count.total_cells": Decimal("463.1")})
    assert parsed.text == "199.74"  # 199.740876...
    assert values.limit_problems(field, parsed) == ["Recovery 199.74 % is above the maximum 150 %"]


def test_compute_reports_missing_inputs_and_division_by_zero_with_the_label() -> None:
    field = FIELDS["recovery"]
    with pytest.raises(CalculationError) as caught:
        values.compute(field, {"final_total": Decimal("925.0"), "initial_count.total_cells": None})
    assert caught.value.problems == [
        "Recovery cannot be calculated: needs 'initial_count.total_cells', which is not recorded yet"
    ]
    with pytest.raises(ValidationFailed) as caught_zero:
        values.compute(field, {"final_total": Decimal("925.0"), "initial_count.total_cells": Decimal("0.0")})
    assert caught_zero.value.problems == [
        "Recovery cannot be calculated: division by zero: 'initial_count.total_cells' is 0"
    ]


def test_compute_refuses_results_too_large_to_record() -> None:
    field = CalculatedField(id="c", type="calculated", label="Huge", unit="1", expression="x ** 30")
    with pytest.raises(CalculationError) as caught:
        values.compute(field, {"x": 10})
    assert caught.value.problems == [
        "Huge cannot be calculated: the result 1E+30 is too large to record (more than 28 digits)"
    ]


# --- fields built directly -----------------------------------------------------------------------


def test_kinds_work_with_models_built_directly() -> None:
    field = NumberField(id="ph", type="number", label="pH", unit="pH", decimals=2, min=7.0, max=7.6)
    assert values.limit_problems(field, values.parse(field, "7.60", tz=BERLIN)) == []  # 7.60 is not above 7.6
    assert values.limit_problems(field, values.parse(field, "7.61", tz=BERLIN)) == [
        "pH 7.61 pH is above the maximum 7.6 pH"
    ]
    assert values.restore(field, "7.60") == Parsed("7.60", Decimal("7.60"))
    assert values.restore(field, "") == Parsed("")
