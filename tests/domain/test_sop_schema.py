"""Master batch record definitions: what a valid file looks like and how every kind of mistake is reported."""

import pickle
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from mfg.domain.sop_schema import (
    FIELD_TYPES,
    CalculatedField,
    DefinitionError,
    MasterRecord,
    NumberField,
    not_before_references,
    parse_definition,
    step_index,
)

SOPS = Path(__file__).resolve().parents[2] / "sops"
DEMO = SOPS / "demo" / "DEMO-PROC_v1.yaml"
SOURCE = "test.yaml"
ERROR_LINE = re.compile(r"^test\.yaml: (\(root\)|[a-z_][a-z0-9_]*(\[\d+\]|\.[a-z_][a-z0-9_]*)*): .+")


# --- helpers ---------------------------------------------------------------------------------------


def minimal() -> dict[str, Any]:
    """The smallest useful record: two stages, a datetime, a number and a calculation."""
    return {
        "kind": "master_batch_record",
        "code": "TEST-1",
        "version": 1,
        "title": "Test record",
        "stages": [
            {
                "id": "first",
                "title": "First",
                "steps": [
                    {
                        "id": "start",
                        "title": "Start",
                        "fields": [
                            {"id": "started_at", "type": "datetime", "label": "Started"},
                            {"id": "note", "type": "text", "label": "Note"},
                        ],
                    },
                    {
                        "id": "measure",
                        "title": "Measure",
                        "fields": [
                            {"id": "volume", "type": "number", "label": "Volume", "unit": "mL", "min": 1, "max": 10},
                            {"id": "count", "type": "integer", "label": "Count", "unit": "1"},
                            {
                                "id": "doubled",
                                "type": "calculated",
                                "label": "Doubled",
                                "unit": "mL",
                                "expression": "volume * 2",
                            },
                        ],
                    },
                ],
            },
            {
                "id": "second",
                "title": "Second",
                "steps": [{"id": "finish", "title": "Finish", "fields": []}],
            },
        ],
    }


def dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def problems(document: dict[str, Any] | str) -> list[str]:
    """Every error reported for ``document`` (a dict is dumped to YAML first); it must not parse."""
    text = document if isinstance(document, str) else dump(document)
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, SOURCE)
    for error in caught.value.errors:
        assert ERROR_LINE.match(error), error
    return caught.value.errors


def only_problem(document: dict[str, Any] | str) -> str:
    found = problems(document)
    assert len(found) == 1, found
    return found[0]


def assert_reported(errors: list[str], path: str, fragment: str) -> None:
    prefix = f"{SOURCE}: {path}: "
    assert any(error.startswith(prefix) and fragment in error for error in errors), (path, fragment, errors)


def step(document: dict[str, Any], stage: int, number: int) -> dict[str, Any]:
    found: dict[str, Any] = document["stages"][stage]["steps"][number]
    return found


def measure_field(document: dict[str, Any], number: int) -> dict[str, Any]:
    found: dict[str, Any] = step(document, 0, 1)["fields"][number]
    return found


def add_calculation(document: dict[str, Any], expression: str, field_id: str = "calc") -> str:
    """Add a calculated field to the "measure" step; return the path of its expression."""
    fields = step(document, 0, 1)["fields"]
    fields.append({"id": field_id, "type": "calculated", "label": "Calc", "unit": "1", "expression": expression})
    return f"stages[0].steps[1].fields[{len(fields) - 1}].expression"


# --- valid files ---------------------------------------------------------------------------------


def test_minimal_record_parses_with_defaults() -> None:
    record = parse_definition(dump(minimal()), SOURCE)

    assert isinstance(record, MasterRecord)
    assert (record.code, record.version, record.description) == ("TEST-1", 1, "")
    finish = record.stages[1].steps[0]
    assert (finish.verification, finish.parallel, finish.repeat, finish.time_window, finish.comment_required) == (
        "none",
        False,
        None,
        None,
        False,
    )
    volume = record.stages[0].steps[1].fields[0]
    assert isinstance(volume, NumberField)
    assert (volume.required, volume.decimals, volume.min, volume.max, volume.critical) == (True, 2, 1.0, 10.0, False)
    assert isinstance(record.stages[0].steps[1].fields[2], CalculatedField)


def test_record_is_frozen() -> None:
    record = parse_definition(dump(minimal()), SOURCE)

    with pytest.raises(pydantic.ValidationError):
        record.version = 2


def test_field_types_are_listed_in_schema_order() -> None:
    assert FIELD_TYPES == (
        "number",
        "integer",
        "text",
        "choice",
        "datetime",
        "confirmation",
        "scan",
        "equipment",
        "material",
        "calculated",
    )


def test_step_index_maps_every_step_id_to_its_stage_in_order() -> None:
    record = parse_definition(dump(minimal()), SOURCE)

    index = step_index(record)

    assert list(index) == ["start", "measure", "finish"]
    stage, found = index["finish"]
    assert (stage.id, found.id) == ("second", "finish")


def test_demo_process_parses_and_exercises_every_feature() -> None:
    record = parse_definition(DEMO.read_text(encoding="utf-8"), DEMO.name)

    assert (record.code, record.version) == ("DEMO-PROC", 1)
    assert "not for manufacturing" in record.title
    steps = [item for stage in record.stages for item in stage.steps]
    fields = [field for item in steps for field in item.fields]
    assert {field.type for field in fields} == set(FIELD_TYPES)
    assert any(item.verification == "required" for item in steps)
    assert any(item.parallel for item in steps)
    assert any(item.comment_required for item in steps)
    assert any(item.time_window is not None for item in steps)
    assert any(item.repeat is not None and item.repeat.max == 3 for item in steps)
    assert any(getattr(field, "critical", False) for field in fields)
    assert any(getattr(field, "expected", None) == "batch.lot" for field in fields)
    expressions = [field.expression for field in fields if isinstance(field, CalculatedField)]
    assert any("." in expression for expression in expressions), "a calculation referencing an earlier step"
    assert any("." not in expression for expression in expressions), "a calculation on same-step fields"


def _master_record_files() -> list[Path]:
    """Every YAML file under sops/, except those whose ``kind`` names something other than a batch record
    (specifications, trial configuration: they have their own schemas). A file whose kind is missing,
    misspelt or unreadable is checked here, so it fails loudly."""
    chosen = []
    for path in sorted(SOPS.rglob("*.yaml")):
        try:
            declared = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            declared = None
        kind = declared.get("kind") if isinstance(declared, dict) else None
        if not (isinstance(kind, str) and "batch" not in kind):
            chosen.append(path)
    return chosen


@pytest.mark.parametrize("path", _master_record_files(), ids=lambda path: str(path.relative_to(SOPS)))
def test_every_master_record_in_the_repository_parses_and_is_named_after_its_code_and_version(path: Path) -> None:
    record = parse_definition(path.read_text(encoding="utf-8"), path.name)

    assert path.name == f"{record.code}_v{record.version}.yaml"


# --- pass 1: YAML ----------------------------------------------------------------------------------


def test_yaml_syntax_error_reports_line_and_column() -> None:
    error = only_problem("kind: master_batch_record\ncode: [DEMO\ntitle: x\n")

    assert error.startswith(f"{SOURCE}: (root): invalid YAML at line ")
    assert "column" in error


def test_python_object_tags_are_refused_not_constructed() -> None:
    error = only_problem("kind: !!python/object/apply:os.system ['true']\n")

    assert error.startswith(f"{SOURCE}: (root): invalid YAML at line 1, column 7: could not determine a constructor")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("", "the document is empty"), ("- a\n- b\n", "found a list"), ("just text\n", "found the value 'just text'")],
)
def test_document_must_be_a_mapping(text: str, fragment: str) -> None:
    error = only_problem(text)

    assert error.startswith(f"{SOURCE}: (root): ")
    assert fragment in error


def test_duplicate_keys_are_reported_instead_of_silently_overwritten() -> None:
    text = dump(minimal()).replace("      max: 10\n", "      max: 10\n      max: 100\n", 1)
    assert "max: 100" in text

    error = only_problem(text)

    assert error.startswith(
        f"{SOURCE}: stages[0].steps[1].fields[0].max: duplicate key 'max' (line 27; first at line 26)"
    )


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("Yes", "boolean"),  # PyYAML: true; YAML 1.2: text
        ("010", "different numbers"),  # PyYAML: 8; YAML 1.2: 10
        ("1:30", "different numbers"),  # PyYAML: 90; YAML 1.2: text
        ("2.5e3", "number"),  # PyYAML: text; YAML 1.2: 2500.0
        ("2024-01-31", "date"),
    ],
)
def test_values_that_yaml_readers_disagree_about_are_refused(value: str, fragment: str) -> None:
    text = dump(minimal()).replace("title: Test record", f"title: {value}")

    error = only_problem(text)

    assert error.startswith(f"{SOURCE}: title: '{value}' ")
    assert fragment in error
    assert "(line 4)" in error


def test_quoted_and_portable_values_are_accepted() -> None:
    document = minimal()
    measure_field(document, 0)["max"] = 2.5e3
    text = dump(document).replace("title: Test record", "title: 'Yes'")

    record = parse_definition(text, SOURCE)

    assert record.title == "Yes"
    assert record.stages[0].steps[1].fields[0].max == 2500.0  # type: ignore[union-attr]


def test_merge_keys_are_refused() -> None:
    text = dump(minimal()) + "extra: &base {a: 1}\nmore:\n  <<: *base\n"

    errors = problems(text)

    assert_reported(errors, "more", "merge keys (<<) are not portable")


# --- pass 2: structure -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "path"),
    [
        (lambda d: d, "colour"),
        (lambda d: step(d, 0, 0), "stages[0].steps[0].colour"),
        (lambda d: measure_field(d, 0), "stages[0].steps[1].fields[0].colour"),
    ],
)
def test_unknown_keys_are_refused_everywhere(where: Any, path: str) -> None:
    document = minimal()
    where(document)["colour"] = "blue"

    assert only_problem(document) == f"{SOURCE}: {path}: unknown key (line {_line_hint(document, path)})"


def _line_hint(document: dict[str, Any], path: str) -> int:
    """The line of the key named at the end of ``path`` in the dumped document (it is unique there)."""
    key = path.rsplit(".", 1)[-1]
    lines = dump(document).splitlines()
    return next(number for number, line in enumerate(lines, 1) if line.lstrip(" -").startswith(f"{key}:"))


@pytest.mark.parametrize(
    ("change", "path", "fragment"),
    [
        (lambda d: d.update(version="one"), "version", "valid integer, got 'one'"),
        (lambda d: d.update(version=0), "version", "greater than or equal to 1"),
        (lambda d: d.update(kind="recipe"), "kind", "'master_batch_record'"),
        (lambda d: d.update(code="demo"), "code", "not a valid code"),
        (lambda d: d.update(title=" "), "title", "must not be blank"),
        (lambda d: d.update(stages=[]), "stages", "at least 1 item"),
        (lambda d: d["stages"][0].update(id="First"), "stages[0].id", "not a valid id"),
        (lambda d: d["stages"][0].update(id="class"), "stages[0].id", "reserved word"),
        (lambda d: step(d, 0, 0).update(verification="yes"), "stages[0].steps[0].verification", "'none' or 'required'"),
        (lambda d: step(d, 0, 0).update(parallel="true"), "stages[0].steps[0].parallel", "valid boolean, got 'true'"),
        (lambda d: measure_field(d, 0).update(required=1), "stages[0].steps[1].fields[0].required", "valid boolean"),
        (lambda d: measure_field(d, 0).update(min="5"), "stages[0].steps[1].fields[0].min", "valid number, got '5'"),
        (lambda d: measure_field(d, 0).update(max=float("inf")), "stages[0].steps[1].fields[0].max", "finite number"),
        (
            lambda d: measure_field(d, 0).update(decimals=11),
            "stages[0].steps[1].fields[0].decimals",
            "less than or equal to 10",
        ),
        (lambda d: measure_field(d, 0).pop("unit"), "stages[0].steps[1].fields[0].unit", "required key missing"),
        (lambda d: measure_field(d, 0).update(unit=""), "stages[0].steps[1].fields[0].unit", "must not be blank"),
        (
            lambda d: measure_field(d, 0).update(type="float"),
            "stages[0].steps[1].fields[0].type",
            "unknown field type 'float'",
        ),
        (lambda d: measure_field(d, 0).pop("type"), "stages[0].steps[1].fields[0].type", "required key missing"),
    ],
)
def test_bad_values_are_reported_at_their_path(change: Any, path: str, fragment: str) -> None:
    document = minimal()
    change(document)

    error = only_problem(document)

    assert error.startswith(f"{SOURCE}: {path}: "), error
    assert fragment in error


def test_number_max_below_min_is_reported_at_max() -> None:
    document = minimal()
    measure_field(document, 0).update(min=10, max=1)

    assert only_problem(document).startswith(f"{SOURCE}: stages[0].steps[1].fields[0].max: must not be below min (10)")


def test_number_target_outside_limits_is_reported_at_target() -> None:
    document = minimal()
    measure_field(document, 0)["target"] = 11

    assert only_problem(document).startswith(
        f"{SOURCE}: stages[0].steps[1].fields[0].target: must lie within min and max"
    )


def test_integer_max_below_min_is_reported_at_max() -> None:
    document = minimal()
    measure_field(document, 1).update(min=5, max=4)

    assert only_problem(document).startswith(f"{SOURCE}: stages[0].steps[1].fields[1].max: must not be below min (5)")


def test_calculated_max_below_min_is_reported_at_max() -> None:
    document = minimal()
    measure_field(document, 2).update(min=5, max=4)

    assert only_problem(document).startswith(f"{SOURCE}: stages[0].steps[1].fields[2].max: must not be below min (5)")


def test_choices_must_be_unique_and_acceptable_answers_among_them() -> None:
    document = minimal()
    step(document, 0, 0)["fields"] += [
        {"id": "twice", "type": "choice", "label": "A", "choices": ["Clear", "Clear"]},
        {"id": "outside", "type": "choice", "label": "B", "choices": ["Clear", "Cloudy"], "acceptable": ["Clean"]},
    ]

    errors = problems(document)

    assert len(errors) == 2, errors
    assert_reported(errors, "stages[0].steps[0].fields[2].choices", "repeated: 'Clear'")
    assert_reported(errors, "stages[0].steps[0].fields[3].acceptable", "'Clean' not among the choices")


def test_scan_expected_must_be_a_dotted_name() -> None:
    document = minimal()
    step(document, 0, 0)["fields"].append({"id": "scan", "type": "scan", "label": "Scan", "expected": "batch lot"})

    assert only_problem(document).startswith(
        f"{SOURCE}: stages[0].steps[0].fields[2].expected: 'batch lot' is not a dotted name"
    )


def test_repeat_max_below_min_is_reported() -> None:
    document = minimal()
    step(document, 1, 0)["repeat"] = {"min": 3, "max": 2}

    assert only_problem(document).startswith(f"{SOURCE}: stages[1].steps[0].repeat.max: must not be below min (3)")


def test_repeat_needs_a_maximum() -> None:
    document = minimal()
    step(document, 1, 0)["repeat"] = {"min": 1}

    assert only_problem(document).startswith(f"{SOURCE}: stages[1].steps[0].repeat.max: required key missing")


def test_time_window_must_not_be_empty() -> None:
    document = minimal()
    step(document, 1, 0)["time_window"] = {"after": "start.started_at", "max_hours": 2, "min_hours": 2}

    assert only_problem(document).startswith(
        f"{SOURCE}: stages[1].steps[0].time_window.min_hours: must be less than max_hours (2)"
    )


def test_time_window_after_must_be_a_step_field_reference() -> None:
    document = minimal()
    step(document, 1, 0)["time_window"] = {"after": "started_at", "max_hours": 2}

    assert only_problem(document).startswith(
        f"{SOURCE}: stages[1].steps[0].time_window.after: 'started_at' is not a reference"
    )


# --- calculated expressions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("__import__('os').system('ls')", "function \"__import__('os').system\" is not allowed"),
        ("__import__('os')", "function '__import__' is not allowed"),
        ("open('f')", "function 'open' is not allowed"),
        ("(lambda: 1)()", "function 'lambda: 1' is not allowed"),
        ("lambda: volume", "lambda not allowed"),
        ("volume.__class__", "a dot may only join a step id and a field id"),
        ("start.note.upper", "is not a master record code"),
        ("start.note.upper.x", "a dot may only join a step id and a field id"),
        ("volume if count else 1", "conditional expressions not allowed"),
        ("volume > 1", "comparisons not allowed"),
        ("[volume][0]", "indexing not allowed"),
        ("volume % 2", "operator '%' is not allowed"),
        ("volume // 2", "operator '//' is not allowed"),
        ("~count", "operator '~' is not allowed"),
        ("'text'", "only numbers may be written as constants"),
        ("True", "only numbers may be written as constants"),
        ("min(volume)", "min() takes at least 2 arguments, got 1"),
        ("sqrt(volume, 2)", "sqrt() takes 1 argument, got 2"),
        ("round(volume, ndigits=1)", "round() takes plain positional arguments only"),
        ("volume *", "not a valid expression"),
        ("", "the expression is empty"),
    ],
)
def test_calculations_allow_arithmetic_only(expression: str, fragment: str) -> None:
    document = minimal()
    path = add_calculation(document, expression)

    error = only_problem(document)

    assert error.startswith(f"{SOURCE}: {path}: "), error
    assert fragment in error


def test_allowed_calculation_syntax_parses() -> None:
    document = minimal()
    add_calculation(document, "round(-volume + +count * 2 / max(1, doubled) ** 0.5 - abs(log10(sqrt(4))), 2)")
    add_calculation(document, "measure.volume / first_value", "ratio")
    step(document, 0, 1)["fields"].append({"id": "first_value", "type": "number", "label": "F", "unit": "1"})

    parse_definition(dump(document), SOURCE)


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("volume * missing", "unknown name 'missing': step 'measure' has no such field"),
        ("nowhere.volume", "unknown step 'nowhere' in 'nowhere.volume'"),
        ("volume.real", "unknown step 'volume' in 'volume.real'"),
        ("start.volume", "step 'start' has no field 'volume'"),
        ("start.note * 2", "'start.note' is a text field; calculations use number, integer and calculated fields only"),
        ("start.started_at", "'start.started_at' is a datetime field"),
    ],
)
def test_calculation_names_must_be_numeric_fields(expression: str, fragment: str) -> None:
    document = minimal()
    path = add_calculation(document, expression)

    error = only_problem(document)

    assert error.startswith(f"{SOURCE}: {path}: "), error
    assert fragment in error


def test_calculation_may_reference_numeric_fields_of_any_step() -> None:
    document = minimal()
    step(document, 1, 0)["fields"].append(
        {
            "id": "ratio",
            "type": "calculated",
            "label": "Ratio",
            "unit": "1",
            "expression": "measure.doubled / measure.volume",
        }
    )

    parse_definition(dump(document), SOURCE)


def test_calculation_may_not_reference_itself() -> None:
    document = minimal()
    measure_field(document, 2)["expression"] = "doubled + volume"

    error = only_problem(document)

    assert error.startswith(f"{SOURCE}: stages[0].steps[1].fields[2].expression: 'doubled' refers to itself")


def test_calculation_may_not_reference_itself_through_its_step_id() -> None:
    document = minimal()
    measure_field(document, 2)["expression"] = "measure.doubled * 2"

    assert "refers to itself" in only_problem(document)


def test_calculation_cycle_within_a_step_is_reported_once() -> None:
    document = minimal()
    measure_field(document, 2)["expression"] = "half * 4"
    add_calculation(document, "doubled / 4", "half")

    error = only_problem(document)

    assert error.startswith(f"{SOURCE}: stages[0].steps[1].fields[2].expression: calculation cycle: ")
    assert "measure.doubled -> measure.half -> measure.doubled" in error


def test_calculation_cycle_across_steps_is_reported() -> None:
    document = minimal()
    measure_field(document, 2)["expression"] = "finish.back * 2"
    step(document, 1, 0)["fields"].append(
        {"id": "back", "type": "calculated", "label": "Back", "unit": "1", "expression": "measure.doubled + 1"}
    )

    error = only_problem(document)

    assert "calculation cycle: measure.doubled -> finish.back -> measure.doubled" in error


def test_reference_into_a_repeatable_step_is_refused() -> None:
    document = minimal()
    step(document, 0, 1)["repeat"] = {"max": 3}
    step(document, 1, 0)["fields"].append(
        {"id": "total", "type": "calculated", "label": "Total", "unit": "mL", "expression": "measure.volume * 2"}
    )

    error = only_problem(document)

    assert error.startswith(f"{SOURCE}: stages[1].steps[0].fields[0].expression: ")
    assert "cannot reference a field of repeatable step 'measure'" in error


def test_repeatable_step_may_calculate_from_its_own_fields() -> None:
    document = minimal()
    step(document, 0, 1)["repeat"] = {"max": 3, "label": "Day"}
    measure_field(document, 2)["expression"] = "measure.volume * 2 + count"

    record = parse_definition(dump(document), SOURCE)

    assert record.stages[0].steps[1].repeat is not None
    assert record.stages[0].steps[1].repeat.label == "Day"


# --- pass 3: ids and time windows ------------------------------------------------------------------


def test_duplicate_stage_ids_are_reported() -> None:
    document = minimal()
    document["stages"][1]["id"] = "first"

    assert only_problem(document).startswith(
        f"{SOURCE}: stages[1].id: duplicate stage id 'first' (first used at stages[0])"
    )


def test_step_ids_are_unique_across_the_whole_record() -> None:
    document = minimal()
    step(document, 1, 0)["id"] = "start"

    error = only_problem(document)

    assert error.startswith(
        f"{SOURCE}: stages[1].steps[0].id: duplicate step id 'start' (first used at stages[0].steps[0])"
    )


def test_field_ids_are_unique_within_a_step() -> None:
    document = minimal()
    measure_field(document, 1)["id"] = "volume"

    error = only_problem(document)

    assert error.startswith(f"{SOURCE}: stages[0].steps[1].fields[1].id: duplicate field id 'volume' in step 'measure'")


def test_same_field_id_in_different_steps_is_fine() -> None:
    document = minimal()
    step(document, 1, 0)["fields"].append({"id": "volume", "type": "number", "label": "Volume", "unit": "mL"})

    parse_definition(dump(document), SOURCE)


def test_time_window_after_an_earlier_datetime_parses() -> None:
    document = minimal()
    step(document, 0, 1)["time_window"] = {"after": "start.started_at", "max_hours": 2}
    step(document, 1, 0)["time_window"] = {"after": "start.started_at", "max_hours": 48, "min_hours": 24}

    record = parse_definition(dump(document), SOURCE)

    window = record.stages[1].steps[0].time_window
    assert window is not None
    assert (window.after, window.min_hours, window.max_hours) == ("start.started_at", 24.0, 48.0)


@pytest.mark.parametrize(
    ("stage", "number", "after", "fragment"),
    [
        (0, 0, "finish.done_at", "must refer to an earlier step; 'finish' comes later in the record"),
        (0, 1, "finish.done_at", "'finish' comes later"),
        (1, 0, "finish.done_at", "must refer to an earlier step, not to step 'finish' itself"),
        (1, 0, "start.note", "'start.note' is a text field; this needs a datetime field"),
        (1, 0, "measure.volume", "'measure.volume' is a number field"),
        (1, 0, "start.ended_at", "step 'start' has no field 'ended_at'"),
        (1, 0, "nowhere.started_at", "unknown step 'nowhere'"),
    ],
)
def test_time_window_must_count_from_a_datetime_of_an_earlier_step(
    stage: int, number: int, after: str, fragment: str
) -> None:
    document = minimal()
    step(document, 1, 0)["fields"].append({"id": "done_at", "type": "datetime", "label": "Done"})
    step(document, stage, number)["time_window"] = {"after": after, "max_hours": 2}

    error = only_problem(document)

    assert error.startswith(f"{SOURCE}: stages[{stage}].steps[{number}].time_window.after: "), error
    assert fragment in error


def test_time_window_may_not_count_from_a_repeatable_step() -> None:
    document = minimal()
    step(document, 0, 0)["repeat"] = {"max": 2}
    step(document, 1, 0)["time_window"] = {"after": "start.started_at", "max_hours": 2}

    assert "cannot reference a field of repeatable step 'start'" in only_problem(document)


# --- reporting -------------------------------------------------------------------------------------


def test_all_structure_problems_are_reported_together() -> None:
    document = minimal()
    document["colour"] = "blue"
    measure_field(document, 0).update(min=10, max=1)
    measure_field(document, 1)["unit"] = 5
    add_calculation(document, "volume % 2")

    errors = problems(document)

    assert len(errors) == 4, errors
    assert_reported(errors, "colour", "unknown key")
    assert_reported(errors, "stages[0].steps[1].fields[0].max", "must not be below min")
    assert_reported(errors, "stages[0].steps[1].fields[1].unit", "valid string, got 5")
    assert_reported(errors, "stages[0].steps[1].fields[3].expression", "operator '%'")


def test_all_reference_problems_are_reported_together() -> None:
    document = minimal()
    step(document, 1, 0)["id"] = "start"
    measure_field(document, 2)["expression"] = "volume * missing"
    step(document, 0, 1)["time_window"] = {"after": "measure.volume", "max_hours": 1}

    errors = problems(document)

    assert len(errors) == 3, errors
    assert_reported(errors, "stages[1].steps[0].id", "duplicate step id 'start'")
    assert_reported(errors, "stages[0].steps[1].fields[2].expression", "unknown name 'missing'")
    assert_reported(errors, "stages[0].steps[1].time_window.after", "must refer to an earlier step")


def test_errors_carry_the_line_of_the_offending_key() -> None:
    document = minimal()
    measure_field(document, 0)["colour"] = "blue"

    error = only_problem(document)

    assert error.endswith(f"(line {_line_hint(document, 'colour')})")


def test_definition_error_message_joins_all_errors() -> None:
    error = DefinitionError(["a.yaml: code: first", "a.yaml: title: second"])

    assert str(error) == "a.yaml: code: first\na.yaml: title: second"
    assert pickle.loads(pickle.dumps(error)).errors == error.errors


def test_source_name_prefixes_every_error() -> None:
    document = minimal()
    document["code"] = "x"

    with pytest.raises(DefinitionError) as caught:
        parse_definition(dump(document), "sops/X_v1.yaml")

    assert caught.value.errors[0].startswith("sops/X_v1.yaml: code: ")


# --- dividing the product, repeat counts, growth charts, windows from the trial configuration --------


def _with_division(**overrides: Any) -> dict[str, Any]:
    """The "finish" step fills bags from the "measure" step's numbers; "scan" repeats once per bag."""
    document = minimal()
    finish = step(document, 1, 0)
    finish["fields"] = [{"id": "bags", "type": "integer", "label": "Bags", "unit": "bags", "min": 1, "max": 4}]
    finish["divides_product"] = {"volume_ml": "measure.volume", "viable_cells": "measure.volume * 1000000",
                                 "nk_cells": "measure.doubled * 1000000", "expires_from": "start.started_at",
                                 "count": "bags"} | overrides
    document["stages"][1]["steps"].append(
        {"id": "scan", "title": "Scan", "repeat": {"max": 4, "count": "finish.bags", "label": "Bag"},
         "fields": [{"id": "code", "type": "scan", "label": "Product code", "expected": "bag.product_code"}]})
    return document


def test_a_dividing_step_and_a_step_repeated_once_per_bag_parse() -> None:
    record = parse_definition(dump(_with_division()), SOURCE)
    finish, scan = record.stages[1].steps
    assert finish.divides_product is not None and finish.divides_product.count == "bags"
    assert finish.divides_product.cd3_cells is None  # optional (issue [3.7] item 5)
    assert parse_definition(dump(_with_division(cd3_cells="measure.volume * 1000")), SOURCE).stages[1].steps[0] \
        .divides_product.cd3_cells == "measure.volume * 1000"
    assert scan.repeat is not None and scan.repeat.count == "finish.bags"


@pytest.mark.parametrize(("overrides", "path", "fragment"), [
    ({"count": "missing"}, "divides_product.count", "has no integer field 'missing'"),
    ({"expires_from": "measure.volume"}, "divides_product.expires_from", "this needs a datetime field"),
    ({"expires_from": "scan.code"}, "divides_product.expires_from", "comes later in the record"),
    ({"nk_cells": "measure.nothing * 2"}, "divides_product.nk_cells", "step 'measure' has no field 'nothing'"),
    ({"volume_ml": "subject.height"}, "divides_product.volume_ml", "unknown context name 'subject.height'"),
    ({"cd3_cells": "measure.nothing * 2"}, "divides_product.cd3_cells", "step 'measure' has no field 'nothing'"),
    ({"cd3_cells": "measure.volume *"}, "divides_product.cd3_cells", "not a valid expression"),
])
def test_a_division_must_name_what_it_divides_by(overrides: dict[str, str], path: str, fragment: str) -> None:
    assert_reported(problems(_with_division(**overrides)), f"stages[1].steps[0].{path}", fragment)


def test_a_repeat_count_must_be_an_integer_recorded_earlier() -> None:
    document = _with_division()
    document["stages"][1]["steps"][1]["repeat"]["count"] = "measure.volume"
    error = only_problem(document)
    assert error.startswith(f"{SOURCE}: stages[1].steps[1].repeat.count: "), error
    assert "'measure.volume' is a number field; this needs a integer field" in error


def test_a_time_window_may_take_its_hours_from_the_trial_configuration() -> None:
    document = minimal()
    step(document, 0, 1)["time_window"] = {"after": "start.started_at", "max_hours": "trial.apheresis_hold_hours"}
    record = parse_definition(dump(document), SOURCE)
    assert record.stages[0].steps[1].time_window.max_hours == "trial.apheresis_hold_hours"
    step(document, 0, 1)["time_window"]["max_hours"] = "trial.coffee_break_hours"
    assert "is not a number of hours nor a context name" in " ".join(problems(document))


def test_a_growth_chart_names_numeric_fields_of_a_step() -> None:
    document = minimal()
    document["growth_chart"] = {"title": "Cells", "unit": "10^6 cells", "points": [
        {"step": "measure", "label": "Count", "day": "count", "value": "doubled"},
        {"step": "measure", "label": "Start", "day": 0, "value": "volume"}]}
    assert parse_definition(dump(document), SOURCE).growth_chart.points[0].day == "count"
    document["growth_chart"]["points"][1]["value"] = "nothing"
    document["growth_chart"]["points"].append({"step": "start", "label": "X", "day": "note", "value": "note"})
    errors = problems(document)
    assert_reported(errors, "growth_chart.points[1].value", "step 'measure' has no field 'nothing'")
    assert_reported(errors, "growth_chart.points[2].value", "start.note is a text field; a chart needs numbers")
    assert_reported(errors, "growth_chart.points[2].day", "start.note is a text field; a chart needs numbers")


@pytest.mark.parametrize(("hours", "fragment"), [(0, "greater than 0, got 0"), (-1.5, "greater than 0"),
                                                  (True, "got bool"), ([12], "got list")])
def test_time_window_hours_must_be_positive_hours(hours: object, fragment: str) -> None:
    document = minimal()
    step(document, 0, 1)["time_window"] = {"after": "start.started_at", "max_hours": hours}
    error = only_problem(document)
    assert error.startswith(f"{SOURCE}: stages[0].steps[1].time_window.max_hours: ") and fragment in error, error


# --- result times (when a result can exist, when a pending one is due) ---------------------------

def _with_result_time(result_time: dict[str, Any]) -> dict[str, Any]:
    document = minimal()
    fields = step(document, 0, 1)["fields"]
    fields.insert(0, {"id": "sampled_at", "type": "datetime", "label": "Sampled at"})
    fields.append({"id": "culture", "type": "choice", "label": "Culture", "choices": ["Pending", "No growth"],
                   "pending": ["Pending"], "result_time": result_time})
    return document


def test_a_result_time_names_the_sample_time_and_the_methods_durations() -> None:
    record = parse_definition(dump(_with_result_time(
        {"method": "14-day culture", "sample": "sampled_at", "minimum_hours": 336, "due_hours": 336})), SOURCE)
    field = record.stages[0].steps[1].fields[-1]
    assert field.result_time is not None
    assert (field.result_time.sample, field.result_time.minimum_hours, field.result_time.due_hours) == \
        ("sampled_at", 336, 336)


@pytest.mark.parametrize(("result_time", "fragment"), [
    ({"method": "culture", "sample": "not_here", "minimum_hours": 1, "due_hours": 2}, "no datetime field 'not_here'"),
    ({"method": "culture", "sample": "measure.volume", "minimum_hours": 1, "due_hours": 2},
     "must refer to an earlier step"),
    ({"method": "culture", "sample": "sampled_at", "minimum_hours": 5, "due_hours": 2}, "must not be below minimum"),
    ({"method": "culture", "sample": "sampled_at", "minimum_hours": -1, "due_hours": 2}, "greater than or equal"),
])
def test_a_result_time_must_name_a_recorded_datetime_and_a_due_time_after_the_minimum(
        result_time: dict[str, Any], fragment: str) -> None:
    errors = problems(_with_result_time(result_time))
    assert any(fragment in error for error in errors), errors


# --- elapsed time in calculations; a date-time not before the one it depends on ----------------------

def test_a_calculation_computes_elapsed_time_from_datetime_fields() -> None:
    document = minimal()
    step(document, 0, 1)["fields"].insert(0, {"id": "measured_at", "type": "datetime", "label": "Measured"})
    add_calculation(document, "hours_between(start.started_at, measured_at)", "hours")
    add_calculation(document, "days_between(start.started_at, measured_at) * volume", "day_volume")

    record = parse_definition(dump(document), SOURCE)
    assert [f.id for f in record.stages[0].steps[1].fields][-2:] == ["hours", "day_volume"]


@pytest.mark.parametrize(("expression", "fragment"), [
    ("hours_between(start.started_at, volume)", "'volume' is a number field; hours_between and days_between take "
                                               "datetime fields"),
    ("days_between(start.note, start.started_at)", "'start.note' is a text field; hours_between"),
    ("days_between(subject.weight_kg, start.started_at)", "is a context number; hours_between"),
    ("start.started_at * 2", "'start.started_at' is a datetime field; calculations use number, integer and "
                             "calculated fields only (a datetime only in hours_between or days_between)"),
    ("days_between(start.started_at, start.started_at) + start.started_at", "is a datetime field; calculations"),
])
def test_elapsed_time_takes_datetime_fields_and_a_datetime_is_used_nowhere_else(expression: str,
                                                                                fragment: str) -> None:
    document = minimal()
    path = add_calculation(document, expression)
    assert_reported(problems(document), path, fragment)


def test_a_datetime_may_not_be_before_an_earlier_steps_datetime() -> None:
    document = minimal()
    step(document, 0, 1)["fields"].insert(0, {"id": "measured_at", "type": "datetime", "label": "Measured",
                                              "not_before": "start.started_at"})
    record = parse_definition(dump(document), SOURCE)
    measured = record.stages[0].steps[1].fields[0]
    assert measured.type == "datetime" and measured.not_before == "start.started_at"
    assert not_before_references(record.stages[0].steps[1]) == {"measured_at": ["start.started_at"]}


@pytest.mark.parametrize(("not_before", "fragment"), [
    ("start.note", "'start.note' is a text field; this needs a datetime field"),
    ("measure.measured_at", "must refer to an earlier step"),
    ("finish.done_at", "comes later in the record"),
    ("started_at", "is not a reference of the form <step_id>.<field_id>"),
])
def test_not_before_names_an_earlier_recorded_datetime(not_before: str, fragment: str) -> None:
    document = minimal()
    step(document, 0, 1)["fields"].insert(0, {"id": "measured_at", "type": "datetime", "label": "Measured",
                                              "not_before": not_before})
    step(document, 1, 0)["fields"].append({"id": "done_at", "type": "datetime", "label": "Done"})
    errors = problems(document)
    assert any("not_before" in error and fragment in error for error in errors), errors


def test_a_result_with_a_same_step_sample_orders_the_steps_later_datetimes_after_the_sample() -> None:
    document = _with_result_time({"method": "14-day culture", "sample": "sampled_at", "minimum_hours": 336,
                                  "due_hours": 336})
    step(document, 0, 1)["fields"].append({"id": "read_at", "type": "datetime", "label": "Read at"})
    record = parse_definition(dump(document), SOURCE)

    assert not_before_references(record.stages[0].steps[1]) == {"read_at": ["sampled_at"]}
