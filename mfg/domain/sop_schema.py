"""Schema of master batch record definitions: the YAML files under ``sops/``.

This module is longer than 600 lines because the schema is one document: every model of a definition and
the validators that cross its parts (ids, references, calculations, windows) read together, in the order
of a definition file; split, a reader would follow a reference from file to file.

A master batch record (one SOP version) says which stages and steps an operator walks through, which
values each step records, their units and limits, what is calculated from them, and which steps need a
second person's verification. The engine builds its screens from a parsed :class:`MasterRecord`; nothing
about a process is hard-coded in views.

:func:`parse_definition` turns the text of one file into a frozen :class:`MasterRecord` or raises
:class:`DefinitionError` listing every problem as ``"<source>: <path>: <message>"``, for example
``"DEMO-PROC_v1.yaml: stages[0].steps[2].fields[1].max: must not be below min (10) (line 41)"``.
Checking happens in three passes, and each pass reports everything it finds:

1. YAML: syntax, duplicate keys, and plain values that YAML readers disagree about (``Yes``, ``010``,
   ``1:30``, ``2.1e10``): a GMP definition must mean the same thing to every reader, so these are refused
   and the author writes ``true``, ``10``, ``2.1e+10`` or quotes the text.
2. Structure (pydantic): unknown keys, wrong types, limits that contradict each other, expressions that
   use anything but arithmetic.
3. References, run once the structure is valid: unique ids, time windows that point at an earlier
   datetime, calculations whose names exist (fields, or the run-time context names of
   :data:`CONTEXT_NAMES`) and do not go round in a circle.

No value in a definition is ever evaluated here: calculated-field expressions are only parsed and checked
against the whitelist of :mod:`mfg.domain.calc`, the module that later evaluates them.
"""

import keyword
import math
import re
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal, NamedTuple, get_args

import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, field_validator

# The whitelist of calculated-field expressions lives in calc.py, next to the evaluator that relies on it;
# CALCULATION_FUNCTIONS stays importable from here as before.
from mfg.domain.calc import CALCULATION_FUNCTIONS as CALCULATION_FUNCTIONS
from mfg.domain.calc import Reference, elapsed_references, inspect_expression
from mfg.domain.context import CONTEXT_NAMES as CONTEXT_NAMES

__all__ = [
    "CONTEXT_NAMES",
    "FIELD_TYPES",
    "CalculatedField",
    "ChoiceField",
    "ConfirmationField",
    "DateTimeField",
    "DefinitionError",
    "EquipmentField",
    "Field",
    "FieldBase",
    "IntegerField",
    "MasterRecord",
    "MaterialField",
    "NumberField",
    "ResultTime",
    "Repeat",
    "ScanField",
    "Stage",
    "Step",
    "TextField",
    "TimeWindow",
    "not_before_references",
    "parse_definition",
    "step_index",
]

ROOT = "(root)"

CODE_PATTERN = r"^[A-Z][A-Z0-9-]{1,39}$"
IDENTIFIER_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
DOTTED_NAME_PATTERN = r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$"

# CONTEXT_NAMES (mfg.domain.context): names a calculation, a time window or a limit may use besides fields,
# numbers the batch provides at run time from the subject's record and the trial configuration. Any other
# ``subject.*`` or ``trial.*`` name is refused when the definition is loaded, and no step may be called
# ``subject`` or ``trial`` so that a name always means one thing.

CONTEXT_NAMESPACES: frozenset[str] = frozenset(name.partition(".")[0] for name in CONTEXT_NAMES)


class DefinitionError(Exception):
    """A definition file is not a valid master batch record; ``errors`` lists every problem found."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: list[str] = list(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        return "\n".join(self.errors)


# --------------------------------------------------------------------------------------------------
# Value types shared by the models
# --------------------------------------------------------------------------------------------------


def _identifier(value: str) -> str:
    """Ids name stages, steps and fields in stored data and in calculations, so they stay simple."""
    if not re.fullmatch(IDENTIFIER_PATTERN, value):
        raise ValueError(
            f"{value!r} is not a valid id: a lower-case letter, then lower-case letters, digits or _ "
            "(at most 40 characters)"
        )
    if keyword.iskeyword(value):
        raise ValueError(f"{value!r} is a reserved word and cannot be used in calculations; choose another id")
    return value


def _record_code(value: str) -> str:
    if not re.fullmatch(CODE_PATTERN, value):
        raise ValueError(
            f"{value!r} is not a valid code: an upper-case letter, then upper-case letters, digits or - "
            "(2 to 40 characters)"
        )
    return value


def _dotted_name(value: str) -> str:
    if not re.fullmatch(DOTTED_NAME_PATTERN, value):
        raise ValueError(f"{value!r} is not a dotted name such as batch.lot or subject.coi")
    return value


def _field_reference(value: str) -> str:
    step_id, dot, field_id = value.partition(".")
    if not dot or not re.fullmatch(IDENTIFIER_PATTERN, step_id) or not re.fullmatch(IDENTIFIER_PATTERN, field_id):
        raise ValueError(f"{value!r} is not a reference of the form <step_id>.<field_id>")
    return value


def _context_name(value: str) -> str:
    if value not in CONTEXT_NAMES:
        raise ValueError(f"{value!r} is not a number of hours nor a context name ({', '.join(sorted(CONTEXT_NAMES))})")
    return value


def _hours(value: object) -> float | str:
    if isinstance(value, str):
        return _context_name(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"must be a number of hours greater than 0, got {value!r}")
        return float(value)
    raise ValueError(f"must be a number of hours or a context name such as trial.apheresis_hold_hours, "
                     f"got {type(value).__name__}")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]
Text = Annotated[str, AfterValidator(_not_blank)]
Limit = Annotated[float, pydantic.Field(allow_inf_nan=False)]


def _limit_or_name(value: object) -> float | str:
    """A limit: a finite number, or a context name whose value the batch provides at run time
    (``max: trial.endotoxin_limit_eu_per_kg``: the limit of the trial configuration the subject's dose was
    assigned under, so that a new approved configuration changes what is checked; the value is never
    copied into the definition)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        return float(value)
    if isinstance(value, str) and value in CONTEXT_NAMES:
        return value
    raise ValueError(f"must be a valid number, got {_short_repr(value)}, or a context name "
                     f"({', '.join(sorted(CONTEXT_NAMES))})")


LimitOrName = Annotated[Any, AfterValidator(_limit_or_name)]
Decimals = Annotated[int, pydantic.Field(ge=0, le=10)]


def _not_below_min(value: float | None, info: ValidationInfo) -> float | None:
    """Shared rule for ``max`` and ``below``: a range whose upper limit is below its lower limit accepts
    nothing (checked when both are numbers; a named limit is known only at run time)."""
    low = info.data.get("min")
    if isinstance(value, int | float) and isinstance(low, int | float) and value < low:
        raise ValueError(f"must not be below min ({low:g})")
    return value


class _Model(BaseModel):
    # strict: a definition says exactly what it means; "yes" is not a boolean and "5" is not a number.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --------------------------------------------------------------------------------------------------
# Field types: what an operator records in a step
# --------------------------------------------------------------------------------------------------


def _sample_reference(value: str) -> str:
    """A datetime field of the same step (``sampled_at``) or of an earlier step (``sampling.sampled_at``)."""
    return _field_reference(value) if "." in value else _identifier(value)


class CertificateEntry(_Model):
    """How a test result is listed on the certificate of analysis (a record with
    ``certificate_of_analysis: true``): a field with this block is a test with a specification; a field
    without it (a sample volume, a volume transcribed, a review) is not on the certificate.

    ``specification`` is the criterion in words as the specification states it ("> 70 %", "No growth at
    14 days"): the limits say what the engine accepts (a strict "> 70 %" is ``min: 70.1`` at one decimal),
    this says what QA signs. ``method`` and ``sample`` (the recorded date-time of the sample, as in
    ``result_time.sample``) default to the field's ``result_time``; a field without one (a calculated
    result) states them here.
    """

    specification: Text
    method: str = ""
    sample: Annotated[str, AfterValidator(_sample_reference)] | None = None


class FieldBase(_Model):
    """Common to every field: ``required`` fields must be filled in before the step can be signed."""

    id: Identifier
    label: Text
    required: bool = True
    help: str = ""
    certificate: CertificateEntry | None = None


class ResultTime(_Model):
    """When a test result can exist, from the specification's method (DOMAIN.md section 4).

    ``sample`` names the recorded date-time the sample was taken or the test started: a datetime field of
    the same step (``inoculated_at``) or ``<step_id>.<field_id>`` of an earlier step. No result (other
    than a ``pending`` answer) may be entered before sample + ``minimum_hours``, the method's minimum
    duration; a result recorded as pending at release is due at sample + ``due_hours``, the method's
    duration (``domain.result_time``).
    """

    method: Text
    sample: Annotated[str, AfterValidator(_sample_reference)]
    minimum_hours: Limit = pydantic.Field(ge=0)
    due_hours: Limit = pydantic.Field(gt=0)

    @field_validator("due_hours")
    @classmethod
    def _due_after_minimum(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("minimum_hours")
        if isinstance(low, float | int) and value < low:
            raise ValueError(f"must not be below minimum_hours ({low:g})")
        return value


class NumberField(FieldBase):
    """A measured value with a unit, shown and stored with ``decimals`` places.

    A value outside [min, max] (or not below ``below``) is still stored, but flagged: it needs a comment
    and opens a deviation. Each limit is a number or a context name (:data:`NamedLimit`). ``critical``
    values need a second person's check. ``target`` is the expected value, shown as guidance.
    """

    type: Literal["number"]
    result_time: ResultTime | None = None
    unit: Text
    decimals: Decimals = 2
    min: LimitOrName | None = None
    max: LimitOrName | None = None
    below: LimitOrName | None = None
    target: Limit | None = None
    critical: bool = False

    _check_max = field_validator("max", "below")(_not_below_min)

    @field_validator("target")
    @classmethod
    def _target_within_limits(cls, value: float | None, info: ValidationInfo) -> float | None:
        """A target outside the limits would guide the operator to an out-of-limit result."""
        low, high = info.data.get("min"), info.data.get("max")
        low = low if isinstance(low, int | float) else None
        high = high if isinstance(high, int | float) else None
        if value is not None and ((low is not None and value < low) or (high is not None and value > high)):
            raise ValueError(f"must lie within min and max ({_range_text(low, high)})")
        return value


class IntegerField(FieldBase):
    """A counted value (whole number) with a unit; limits behave as for ``number``."""

    type: Literal["integer"]
    result_time: ResultTime | None = None
    unit: Text
    min: int | None = None
    max: int | None = None
    critical: bool = False

    _check_max = field_validator("max")(_not_below_min)


class TextField(FieldBase):
    """Free text, for observations that have no fixed set of answers."""

    type: Literal["text"]
    max_length: int = pydantic.Field(500, ge=1)


class ChoiceField(FieldBase):
    """One answer from a fixed list. An answer outside ``acceptable`` is out of limit (flagged, deviation).

    ``pending`` answers (e.g. "Pending" for a 14-day sterility culture) mean the result is not known yet:
    QA may only release conditionally, naming it, and the final result is entered later as a correction.
    """

    type: Literal["choice"]
    result_time: ResultTime | None = None
    choices: list[Text] = pydantic.Field(min_length=1)
    acceptable: list[Text] | None = pydantic.Field(None, min_length=1)
    pending: list[Text] = pydantic.Field(default_factory=list)
    critical: bool = False

    @field_validator("pending")
    @classmethod
    def _pending_are_choices(cls, value: list[str], info: ValidationInfo) -> list[str]:
        unknown = [answer for answer in value if answer not in (info.data.get("choices") or [])]
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))} not among the choices")
        return value

    @field_validator("choices")
    @classmethod
    def _choices_unique(cls, value: list[str]) -> list[str]:
        duplicates = _duplicates(value)
        if duplicates:
            raise ValueError(f"choices must be unique; repeated: {', '.join(map(repr, duplicates))}")
        return value

    @field_validator("acceptable")
    @classmethod
    def _acceptable_are_choices(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return value
        duplicates = _duplicates(value)
        if duplicates:
            raise ValueError(f"acceptable answers must be unique; repeated: {', '.join(map(repr, duplicates))}")
        choices = info.data.get("choices")
        if choices is not None:
            unknown = [answer for answer in value if answer not in choices]
            if unknown:
                raise ValueError(f"{', '.join(map(repr, unknown))} not among the choices")
        return value


class DateTimeField(FieldBase):
    """A date and time, stored in UTC and shown in the site's time zone.

    ``not_before`` (``<step_id>.<field_id>``, a datetime field of an earlier, non-repeatable step) is the
    recorded date-time this event cannot precede: a count is not before the seeding it counts from. An
    entry earlier than it is refused (:func:`not_before_references`, enforced by ``services.evaluation``).
    """

    type: Literal["datetime"]
    not_before: Annotated[str, AfterValidator(_field_reference)] | None = None


class ConfirmationField(FieldBase):
    """A tick box: the operator confirms ``statement`` (e.g. "The cabinet was cleaned")."""

    type: Literal["confirmation"]
    statement: Text


class ScanField(FieldBase):
    """A barcode scan compared with an expected value named by ``expected`` (e.g. ``batch.lot``).

    The names the NK master records use, resolved by the services from the batch at run time:
    ``batch.lot`` (the batch's lot), ``batch.din`` (the donation identification number of the product),
    ``subject.coi`` (the subject's chain-of-identity identifier) and ``bag.product_code`` (the ISBT 128
    product code with division of one of the batch's bags; each bag is scanned once per step, so a step
    that scans every bag repeats once per bag, see ``Repeat.count``).
    The schema accepts any dotted name; a name the services cannot resolve refuses the scan.

    With ``identity`` true, a mismatch is an identity event: it stops the step, is audited and opens a
    deviation; there is no override.
    """

    type: Literal["scan"]
    expected: Annotated[str, AfterValidator(_dotted_name)]
    identity: bool = True


class EquipmentField(FieldBase):
    """The piece of equipment used, chosen from the site's equipment of ``equipment_type``."""

    type: Literal["equipment"]
    equipment_type: Text


class MaterialField(FieldBase):
    """The lot of ``material`` (a reagent or consumable) used in the step."""

    type: Literal["material"]
    material: Text


def _expression_syntax(value: str) -> str:
    """Calculations may use arithmetic only; the whitelist is :func:`mfg.domain.calc.inspect_expression`."""
    _, problems = inspect_expression(value)
    if problems:
        raise ValueError("; ".join(problems))
    return value


class CalculatedField(FieldBase):
    """A value the system computes from numbers recorded in this or other steps; the operator types nothing.

    ``expression`` uses + - * / **, parentheses, numbers, the functions min, max, abs, round, log10 and
    sqrt, ids of number, integer and calculated fields of the same step, ``<step_id>.<field_id>`` for
    such fields of any step, and the run-time context names of :data:`CONTEXT_NAMES` (e.g.
    ``subject.weight_kg``). Limits (numbers or context names) apply to the result, as for ``number``
    (``below`` is strict: a result equal to it is outside): a result outside them is
    stored, flagged and opens a deviation, unless ``refuse_outside_limits`` is set, in which case the
    step is refused and nothing is stored (a formulation over the residual T-cell cap must be refused,
    not warned about).
    """

    type: Literal["calculated"]
    expression: Annotated[str, AfterValidator(_expression_syntax)]
    unit: Text
    decimals: Decimals = 2
    min: LimitOrName | None = None
    max: LimitOrName | None = None
    below: LimitOrName | None = None
    refuse_outside_limits: bool = False

    _check_max = field_validator("max", "below")(_not_below_min)


Field = Annotated[
    NumberField
    | IntegerField
    | TextField
    | ChoiceField
    | DateTimeField
    | ConfirmationField
    | ScanField
    | EquipmentField
    | MaterialField
    | CalculatedField,
    pydantic.Field(discriminator="type"),
]
"""Any field of a step; its ``type`` key selects the model."""


def _type_name(model: type[FieldBase]) -> str:
    """The value of the ``type`` key that selects ``model``: its ``Literal[...]`` annotation."""
    return str(get_args(model.model_fields["type"].annotation)[0])


# The type names in the order of the union above (Field is Annotated[A | B | ..., ...]).
FIELD_TYPES: tuple[str, ...] = tuple(_type_name(model) for model in get_args(get_args(Field)[0]))
NUMERIC_FIELD_TYPES = frozenset({"number", "integer", "calculated"})


# --------------------------------------------------------------------------------------------------
# Steps, stages, record
# --------------------------------------------------------------------------------------------------


class Repeat(_Model):
    """The step is done several times in one batch (e.g. daily feeds): at least ``min``, at most ``max``.

    Each instance is recorded and signed on its own and is called "<label> 1", "<label> 2", ...
    """

    min: int = pydantic.Field(1, ge=1)
    max: int = pydantic.Field(ge=1)
    label: Text = "Instance"
    # ``<step_id>.<field_id>``: an integer field of an earlier step (e.g. the number of bags filled). Once it
    # is recorded, the step is done exactly that many times (still at most ``max``).
    count: Annotated[str, AfterValidator(_field_reference)] | None = None

    _check_max = field_validator("max")(_not_below_min)


class TimeWindow(_Model):
    """The step must be performed between ``min_hours`` and ``max_hours`` after the time recorded in
    ``after`` (``<step_id>.<field_id>``, a datetime field of an earlier step). Outside the window the
    step is out of limit: flagged, commented and a deviation.
    """

    after: Annotated[str, AfterValidator(_field_reference)]
    # Hours, or a context name whose value is hours (e.g. trial.apheresis_hold_hours, the trial configuration's).
    max_hours: Annotated[Any, AfterValidator(_hours)]
    min_hours: Limit = pydantic.Field(0, ge=0)
    # A datetime field of this step recording when it actually happened (e.g. received_at); the window
    # judges that time. Without it, the window judges the time the step is signed.
    at: Identifier | None = None

    @field_validator("min_hours")
    @classmethod
    def _window_not_empty(cls, value: float, info: ValidationInfo) -> float:
        high = info.data.get("max_hours")
        if isinstance(high, float | int) and value >= high:
            raise ValueError(f"must be less than max_hours ({high:g})")
        return value


class Division(_Model):
    """Performing the step divides the product into bags: ISBT 128 divisions A0, B0, ... of the batch's DIN.

    The fewest bags of at most the trial configuration's largest bag volume, volumes as equal as possible
    in 0.1 mL steps, cells in proportion (``domain.dose.divide``); every bag expires the trial
    configuration's shelf life after the date-time in ``expires_from``. ``volume_ml``, ``viable_cells`` and
    ``nk_cells`` are calculations (as in a calculated field) giving the drawn volume in mL and its cells;
    ``count`` is this step's integer field where the operator records the bags filled, which must equal
    the plan (otherwise the step is refused and nothing is stored). ``cd3_cells``, optional, is a calculation
    giving the drawn volume's CD3+ cells, apportioned to the bags like the NK cells (each bag records them).
    """

    volume_ml: Annotated[str, AfterValidator(_expression_syntax)]
    viable_cells: Annotated[str, AfterValidator(_expression_syntax)]
    nk_cells: Annotated[str, AfterValidator(_expression_syntax)]
    cd3_cells: Annotated[str, AfterValidator(_expression_syntax)] | None = None
    expires_from: Annotated[str, AfterValidator(_field_reference)]
    count: Identifier


class Step(_Model):
    """One screen: an instruction (Markdown), the values to record, and who signs.

    Steps are done in order within their stage unless ``parallel``. ``verification: required`` means a
    second person, never the performer, checks and signs "Verified by". ``comment_required`` asks the
    operator for a comment before signing, whatever the values are.
    """

    id: Identifier
    title: Text
    instruction: str = ""
    fields: list[Field] = pydantic.Field(default_factory=list)
    verification: Literal["none", "required"] = "none"
    parallel: bool = False
    repeat: Repeat | None = None
    time_window: TimeWindow | None = None
    comment_required: bool = False
    divides_product: Division | None = None


class Stage(_Model):
    """A phase of the process (e.g. intake, expansion) grouping steps; stages are done in order."""

    id: Identifier
    title: Text
    steps: list[Step] = pydantic.Field(min_length=1)


class ChartPoint(_Model):
    """Where a growth chart's points come from: every performed instance of ``step`` gives one point, at
    culture day ``day`` (a number, or an integer/number field of the step) with the value of field
    ``value`` (a number, integer or calculated field of the step)."""

    step: Identifier
    label: Text
    day: Annotated[int, pydantic.Field(ge=0)] | Identifier
    value: Identifier


class GrowthChart(_Model):
    """A chart of cells per culture day drawn from recorded values (on the batch page and batch record)."""

    title: Text
    unit: Text
    points: list[ChartPoint] = pydantic.Field(min_length=1)


class MasterRecord(_Model):
    """One version of a master batch record. Immutable: a change is a new version approved by QA."""

    kind: Literal["master_batch_record"]
    code: Annotated[str, AfterValidator(_record_code)]
    version: int = pydantic.Field(ge=1)
    title: Text
    description: str = ""
    growth_chart: GrowthChart | None = None
    # The record's results (each value with a specification) are the tests a certificate of analysis lists.
    certificate_of_analysis: bool = False
    stages: list[Stage] = pydantic.Field(min_length=1)


def step_index(record: MasterRecord) -> dict[str, tuple[Stage, Step]]:
    """Every step of ``record`` by id (ids are unique in a parsed record), in the order they are done."""
    return {step.id: (stage, step) for stage in record.stages for step in stage.steps}


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


class _Problem(NamedTuple):
    path: str
    message: str


def parse_definition(text: str, source: str) -> MasterRecord:
    """Parse and check one definition file; ``source`` (its file name) prefixes every error."""
    data, lines = _load_yaml(text, source)
    try:
        record = MasterRecord.model_validate(data)
    except pydantic.ValidationError as exc:
        raise DefinitionError(_format(source, _validation_problems(exc), lines)) from exc
    problems = list(_cross_check(record))
    if problems:
        raise DefinitionError(_format(source, problems, lines))
    return record


def _format(source: str, problems: Iterable[_Problem], lines: dict[str, int]) -> list[str]:
    """Render problems as "<source>: <path>: <message> (line N)", the line found from the path."""
    rendered = []
    for path, message in problems:
        line = _line_of(path, lines) if path != ROOT else None
        rendered.append(f"{source}: {path}: {message}" + (f" (line {line})" if line else ""))
    return rendered


def _line_of(path: str, lines: dict[str, int]) -> int | None:
    """Line of the nearest enclosing node that exists in the file (a missing key has none of its own)."""
    while path:
        if path in lines:
            return lines[path]
        path = path[: max(path.rfind("."), path.rfind("["), 0)]
    return None


def _render_path(parts: Iterable[str | int]) -> str:
    """``("stages", 0, "title")`` -> ``"stages[0].title"``; an empty path is the document itself."""
    rendered = ""
    for part in parts:
        if isinstance(part, int):
            rendered += f"[{part}]"
        else:
            rendered += f".{part}" if rendered else part
    return rendered or ROOT


# --- pass 1: YAML --------------------------------------------------------------------------------

_YAML = "tag:yaml.org,2002:"
_PORTABLE_BOOL = re.compile(r"true|True|TRUE|false|False|FALSE")
_PORTABLE_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_PORTABLE_FLOAT = re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+][0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")
_YAML12_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|0o[0-7]+|0x[0-9a-fA-F]+")


def _load_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[str, int]]:
    """Return the document (a mapping) and the 1-based line of every path in it."""
    try:
        return _read_yaml(text, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        detail = "; ".join(part for part in (exc.context, exc.problem) if part)
        raise DefinitionError([f"{source}: {ROOT}: invalid YAML{where}: {detail}"]) from exc
    except yaml.YAMLError as exc:
        raise DefinitionError([f"{source}: {ROOT}: invalid YAML: {exc}"]) from exc
    except RecursionError as exc:
        raise DefinitionError([f"{source}: {ROOT}: invalid YAML: nested too deeply"]) from exc


def _read_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[str, int]]:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        raise DefinitionError([f"{source}: {ROOT}: the document is empty; expected a master batch record"])
    if not isinstance(root, yaml.MappingNode):
        found = "a list" if isinstance(root, yaml.SequenceNode) else f"the value {root.value!r}"
        raise DefinitionError([f"{source}: {ROOT}: expected a mapping of keys (kind, code, ...) but found {found}"])

    lines: dict[str, int] = {}
    problems = list(_lint_yaml(root, (), lines, set()))
    if problems:
        raise DefinitionError(_format(source, problems, {}))  # the messages already carry their lines
    # The node tree above is only inspected; the values come from the standard safe loader.
    data: dict[str, Any] = yaml.safe_load(text)
    return data, lines


def _lint_yaml(
    node: yaml.Node, path: tuple[str | int, ...], lines: dict[str, int], seen: set[int]
) -> Iterator[_Problem]:
    """Record the line of every node and report duplicate keys, merge keys and ambiguous scalars."""
    line = node.start_mark.line + 1
    lines.setdefault(_render_path(path), line)
    if id(node) in seen:  # an alias of a node already inspected
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        message = _ambiguity(node)
        if message:
            yield _Problem(_render_path(path), f"{message} (line {line})")
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _lint_yaml(item, (*path, index), lines, seen)
    elif isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _YAML + "merge":
                yield _Problem(
                    _render_path(path), f"merge keys (<<) are not portable YAML; write the keys out (line {key_line})"
                )
            elif not isinstance(key_node, yaml.ScalarNode):
                yield _Problem(_render_path(path), f"keys must be plain names (line {key_line})")
            elif key_node.value in first_line:
                yield _Problem(
                    _render_path((*path, key_node.value)),
                    f"duplicate key {key_node.value!r} (line {key_line}; first at line {first_line[key_node.value]}); "
                    "YAML would silently keep only the last value",
                )
            else:
                first_line[key_node.value] = key_line
                yield from _lint_yaml(key_node, (*path, key_node.value), lines, seen)
                yield from _lint_yaml(value_node, (*path, key_node.value), lines, seen)


def _ambiguity(node: yaml.ScalarNode) -> str | None:
    """Explain why a plain scalar means different things in YAML 1.1 (PyYAML) and YAML 1.2, if it does.

    PyYAML reads ``Yes``/``on`` as true, ``010`` as 8, ``1:30`` as 90 and ``2.1e10`` as text; YAML 1.2
    readers do not. Such values are refused rather than guessed.
    """
    if node.style is not None or node.tag != _yaml11_tag(node.value):
        return None  # quoted, block or explicitly tagged: unambiguous
    value, tag = node.value, node.tag.removeprefix(_YAML)
    number_hint = "write a plain decimal number such as 12, 0.5 or 2.1e+10, or quote it if it is text"
    if tag == "bool" and not _PORTABLE_BOOL.fullmatch(value):
        return (
            f"{value!r} is read as a boolean by some YAML readers and as text by others; "
            "write true or false, or quote it if it is text"
        )
    if tag == "int" and not _PORTABLE_INT.fullmatch(value):
        return f"{value!r} is read as different numbers by different YAML readers; {number_hint}"
    if tag == "float" and not _PORTABLE_FLOAT.fullmatch(value):
        return f"{value!r} is read as different numbers by different YAML readers; {number_hint}"
    if tag == "timestamp":
        return f"{value!r} is read as a date by some YAML readers and as text by others; quote it"
    if tag == "str" and _YAML12_NUMBER.fullmatch(value):
        return f"{value!r} is read as a number by some YAML readers and as text by others; {number_hint}"
    return None


def _yaml11_tag(value: str) -> str:
    """The tag PyYAML's safe loader gives a plain scalar without an explicit tag."""
    for tag, pattern in yaml.SafeLoader.yaml_implicit_resolvers.get(value[:1], []):
        if pattern.match(value):
            return str(tag)
    return _YAML + "str"


# --- pass 2: structure (pydantic) ----------------------------------------------------------------


def _validation_problems(exc: pydantic.ValidationError) -> Iterator[_Problem]:
    for error in exc.errors():
        loc = _without_field_type_tags(error["loc"])
        kind, message = error["type"], error["msg"]
        if kind in ("union_tag_not_found", "union_tag_invalid"):
            loc = (*loc, "type")
            expected = ", ".join(FIELD_TYPES)
            tag = error.get("ctx", {}).get("tag")
            message = (
                f"unknown field type {tag!r}; expected one of: {expected}"
                if tag
                else f"required key missing; one of: {expected}"
            )
        elif kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "required key missing"
        elif kind == "value_error":
            message = message.removeprefix("Value error, ")
        else:
            message = message[:1].lower() + message[1:]
            if kind.endswith("_type") or kind == "literal_error":
                message += f", got {_short_repr(error['input'])}"
        yield _Problem(_render_path(loc), message)


def _without_field_type_tags(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Pydantic puts the discriminator tag in the location (``fields, 1, number, max``); drop it."""
    kept: list[str | int] = []
    for index, part in enumerate(loc):
        after_field_index = index >= 2 and loc[index - 2] == "fields" and isinstance(loc[index - 1], int)
        if after_field_index and part in FIELD_TYPES:
            continue
        kept.append(part)
    return tuple(kept)


# --- pass 3: references --------------------------------------------------------------------------


class _Place(NamedTuple):
    """Where a step sits: its path in the document and its position in the order of execution."""

    path: str
    order: int
    step: Step


def _cross_check(record: MasterRecord) -> Iterator[_Problem]:
    places = _step_places(record)
    yield from _duplicate_ids(record)
    yield from _reserved_step_ids(places)
    yield from _time_window_problems(places)
    yield from _result_time_problems(places)
    yield from _not_before_problems(places)
    yield from _division_problems(places)
    yield from _chart_problems(record, places)
    yield from _calculation_problems(places)


def _step_places(record: MasterRecord) -> dict[str, _Place]:
    places: dict[str, _Place] = {}
    order = 0
    for stage_number, stage in enumerate(record.stages):
        for step_number, step in enumerate(stage.steps):
            places.setdefault(step.id, _Place(f"stages[{stage_number}].steps[{step_number}]", order, step))
            order += 1
    return places


def _duplicate_ids(record: MasterRecord) -> Iterator[_Problem]:
    """Stage ids are unique in the record, step ids too (values are stored by step id), field ids per step."""
    first_stage: dict[str, str] = {}
    first_step: dict[str, str] = {}
    for stage_number, stage in enumerate(record.stages):
        stage_path = f"stages[{stage_number}]"
        if stage.id in first_stage:
            yield _Problem(
                f"{stage_path}.id", f"duplicate stage id {stage.id!r} (first used at {first_stage[stage.id]})"
            )
        first_stage.setdefault(stage.id, stage_path)
        for step_number, step in enumerate(stage.steps):
            step_path = f"{stage_path}.steps[{step_number}]"
            if step.id in first_step:
                yield _Problem(
                    f"{step_path}.id", f"duplicate step id {step.id!r} (first used at {first_step[step.id]})"
                )
            first_step.setdefault(step.id, step_path)
            first_field: dict[str, str] = {}
            for field_number, field in enumerate(step.fields):
                field_path = f"{step_path}.fields[{field_number}]"
                if field.id in first_field:
                    yield _Problem(
                        f"{field_path}.id",
                        f"duplicate field id {field.id!r} in step {step.id!r} (first used at {first_field[field.id]})",
                    )
                first_field.setdefault(field.id, field_path)


def _reserved_step_ids(places: dict[str, _Place]) -> Iterator[_Problem]:
    """``subject.weight_kg`` must never be read as field ``weight_kg`` of a step called ``subject``."""
    for step_id, place in places.items():
        if step_id in CONTEXT_NAMESPACES:
            yield _Problem(
                f"{place.path}.id",
                f"step id {step_id!r} is reserved for the context names "
                f"({', '.join(sorted(name for name in CONTEXT_NAMES if name.startswith(step_id + '.')))})",
            )


_RECORD_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
"""A master record code as an expression names it (``calc.record_name``: ``NK-EXPAND`` -> ``NK_EXPAND``)."""


def _fields_by_id(step: Step) -> dict[str, Field]:
    found: dict[str, Field] = {}
    for field in step.fields:
        found.setdefault(field.id, field)
    return found


def _earlier_field_problem(place: _Place, places: dict[str, _Place], reference: str, wanted: str) -> str | None:
    """Why ``reference`` (``<step_id>.<field_id>``) is not a ``wanted``-type field of an earlier,
    non-repeatable step (so that it is recorded, once, before ``place`` starts), or None."""
    target_step, _, target_field = reference.partition(".")
    target = places.get(target_step)
    if target is None:
        return f"unknown step {target_step!r}"
    if target.order == place.order:
        return f"must refer to an earlier step, not to step {place.step.id!r} itself"
    if target.order > place.order:
        return f"must refer to an earlier step; {target_step!r} comes later in the record"
    if target_field not in _fields_by_id(target.step):
        return f"step {target_step!r} has no field {target_field!r}"
    if (field_type := _fields_by_id(target.step)[target_field].type) != wanted:
        return f"{reference!r} is a {field_type} field; this needs a {wanted} field"
    if target.step.repeat is not None:
        return f"cannot reference a field of repeatable step {target_step!r}"
    return None


def _time_window_problems(places: dict[str, _Place]) -> Iterator[_Problem]:
    """A time window counts from a datetime already recorded, once, when the step starts; a repeat count
    is an integer recorded before the repeated step starts."""
    for place in places.values():
        window = place.step.time_window
        if window is not None:
            problem = _earlier_field_problem(place, places, window.after, "datetime")
            if problem:
                yield _Problem(f"{place.path}.time_window.after", problem)
            own = _fields_by_id(place.step).get(window.at) if window.at else None
            if window.at and (own is None or own.type != "datetime"):
                yield _Problem(f"{place.path}.time_window.at",
                               f"step {place.step.id!r} has no datetime field {window.at!r}")
        repeat = place.step.repeat
        if repeat is not None and repeat.count is not None:
            problem = _earlier_field_problem(place, places, repeat.count, "integer")
            if problem:
                yield _Problem(f"{place.path}.repeat.count", problem)


def _result_time_problems(places: dict[str, _Place]) -> Iterator[_Problem]:
    """A result's sample time (``result_time.sample``, ``certificate.sample``) is a datetime of its own
    step or of an earlier, non-repeatable one; a certificate entry has a method and a sample, its own or
    its ``result_time``'s."""
    for place in places.values():
        for number, f in enumerate(place.step.fields):
            result_time = getattr(f, "result_time", None)
            samples = [("result_time", result_time.sample if result_time else None)]
            if f.certificate is not None:
                samples.append(("certificate", f.certificate.sample))
                if not (f.certificate.method or result_time):
                    yield _Problem(f"{place.path}.fields[{number}].certificate.method",
                                   "a test on the certificate names its method (here or in result_time)")
                if "{limit}" in f.certificate.specification and len(
                        [a for a in ("min", "max", "below") if isinstance(getattr(f, a, None), str)]) != 1:
                    yield _Problem(f"{place.path}.fields[{number}].certificate.specification",
                                   "{limit} stands for the field's one named limit (min, max or below)")
                if not (f.certificate.sample or result_time):
                    yield _Problem(f"{place.path}.fields[{number}].certificate.sample",
                                   "a test on the certificate names its sample time (here or in result_time)")
            for block, sample in samples:
                if sample is None:
                    continue
                path = f"{place.path}.fields[{number}].{block}.sample"
                if "." in sample:
                    problem = _earlier_field_problem(place, places, sample, "datetime")
                    if problem:
                        yield _Problem(path, problem)
                else:
                    own = _fields_by_id(place.step).get(sample)
                    if own is None or own.type != "datetime":
                        yield _Problem(path, f"step {place.step.id!r} has no datetime field {sample!r}")


def _not_before_problems(places: dict[str, _Place]) -> Iterator[_Problem]:
    """A datetime's ``not_before`` names a datetime already recorded, once, when its step starts."""
    for place in places.values():
        for number, f in enumerate(place.step.fields):
            if isinstance(f, DateTimeField) and f.not_before is not None:
                problem = _earlier_field_problem(place, places, f.not_before, "datetime")
                if problem:
                    yield _Problem(f"{place.path}.fields[{number}].not_before", problem)


def not_before_references(step: Step) -> dict[str, list[str]]:
    """For each datetime field of ``step``, the recorded date-times it must not precede: its
    ``not_before`` (``<step_id>.<field_id>``), and, where a result of the step names a sample date-time of
    the same step (``result_time.sample``), that sample for every datetime field listed after it (what is
    read or done with a sample happens after it is taken). The one statement of that order; the services
    enforce it when a step is performed."""
    found: dict[str, list[str]] = {}
    samples = {rt.sample for f in step.fields if (rt := getattr(f, "result_time", None)) is not None
               and "." not in rt.sample}
    seen: list[str] = []
    for f in step.fields:
        if not isinstance(f, DateTimeField):
            continue
        found[f.id] = ([f.not_before] if f.not_before else []) + [sample for sample in seen if sample in samples]
        seen.append(f.id)
    return {field_id: references for field_id, references in found.items() if references}


def _chart_problems(record: MasterRecord, places: dict[str, _Place]) -> Iterator[_Problem]:
    """A chart point names a step of this record and numeric fields of that step."""
    if record.growth_chart is None:
        return
    for number, point in enumerate(record.growth_chart.points):
        path = f"growth_chart.points[{number}]"
        place = places.get(point.step)
        if place is None:
            yield _Problem(f"{path}.step", f"unknown step {point.step!r}")
            continue
        fields = _fields_by_id(place.step)
        for key, name in (("value", point.value), ("day", point.day)):
            if isinstance(name, int):
                continue
            field = fields.get(name)
            if field is None:
                yield _Problem(f"{path}.{key}", f"step {point.step!r} has no field {name!r}")
            elif field.type not in NUMERIC_FIELD_TYPES:
                yield _Problem(f"{path}.{key}", f"{point.step}.{name} is a {field.type} field; a chart needs numbers")


def _division_problems(places: dict[str, _Place]) -> Iterator[_Problem]:
    """A dividing step is done once, counts its bags in an integer field of its own and calculates from
    numbers it or earlier steps record."""
    for place in places.values():
        division = place.step.divides_product
        if division is None:
            continue
        path = f"{place.path}.divides_product"
        if place.step.repeat is not None:
            yield _Problem(path, "a step that divides the product cannot be repeatable")
        count = _fields_by_id(place.step).get(division.count)
        if count is None or count.type != "integer":
            yield _Problem(f"{path}.count", f"step {place.step.id!r} has no integer field {division.count!r}")
        problem = _earlier_field_problem(place, places, division.expires_from, "datetime")
        if problem:
            yield _Problem(f"{path}.expires_from", problem)
        for name in ("volume_ml", "viable_cells", "nk_cells", "cd3_cells"):
            if getattr(division, name) is None:
                continue
            for reference, moment in _typed_references(getattr(division, name)):
                problem, _target = _resolve(reference, place, places, None, moment=moment)
                if problem:
                    yield _Problem(f"{path}.{name}", problem)


def _calculation_problems(places: dict[str, _Place]) -> Iterator[_Problem]:
    """Every name in a calculation must be a numeric field or a context name; no calculation may depend on
    itself."""
    depends_on: dict[tuple[str, str], list[tuple[str, str]]] = {}
    expression_path: dict[tuple[str, str], str] = {}
    for step_id, place in places.items():
        fields = _fields_by_id(place.step)
        for field_number, field in enumerate(place.step.fields):
            if not isinstance(field, CalculatedField) or fields[field.id] is not field:
                continue
            node = (step_id, field.id)
            path = f"{place.path}.fields[{field_number}].expression"
            expression_path[node] = path
            depends_on[node] = []
            for reference, moment in _typed_references(field.expression):
                problem, target = _resolve(reference, place, places, field, moment=moment)
                if problem:
                    yield _Problem(path, problem)
                elif target is not None:
                    depends_on[node].append(target)
    yield from _cycles(depends_on, expression_path)


def _typed_references(expression: str) -> list[tuple[Reference, bool]]:
    """Each reference of ``expression`` with whether it is an argument of an elapsed-time function (a
    date-time) or not (a number)."""
    references, _ = inspect_expression(expression)
    moments = elapsed_references(expression)
    typed = []
    for reference in references:
        moment = reference in moments
        if moment:
            moments.remove(reference)
        typed.append((reference, moment))
    return typed


def _resolve(
    reference: Reference, place: _Place, places: dict[str, _Place], calculated: CalculatedField | None,
    *, moment: bool = False,
) -> tuple[str | None, tuple[str, str] | None]:
    """Return (problem, None) or (None, the calculated field referred to, if the target is calculated).
    ``moment``: the reference is an argument of hours_between/days_between and must be a datetime field;
    a datetime field is used nowhere else."""
    if reference.record is not None:
        # A field of another master record of the batch (RECORD.step.field): a value recorded there once,
        # shown here and never typed again. The other record is a file of its own, so the field is resolved
        # when the batch runs (services.evaluation.inputs_from_batch); here only its form is checked.
        if moment:
            return (f"{str(reference)!r} is a field of another record; hours_between and days_between take "
                    "this record's datetime fields"), None
        if not _RECORD_NAME.fullmatch(reference.record):
            return (f"{str(reference)!r}: {reference.record!r} is not a master record code written with _ for -, "
                    "e.g. NK_EXPAND.harvest_culture.nk_purity"), None
        return None, None
    if reference.step in CONTEXT_NAMESPACES and moment:
        return f"{str(reference)!r} is a context number; hours_between and days_between take datetime fields", None
    if reference.step in CONTEXT_NAMESPACES:
        if str(reference) in CONTEXT_NAMES:
            return None, None  # provided by the batch at run time
        return (
            f"unknown context name {str(reference)!r}; calculations may use: {', '.join(sorted(CONTEXT_NAMES))}",
            None,
        )
    own_step = reference.step is None or reference.step == place.step.id
    target = place if own_step else places.get(str(reference.step))
    if target is None:
        return f"unknown step {reference.step!r} in {str(reference)!r}", None
    field = _fields_by_id(target.step).get(reference.field)
    if field is None:
        if reference.step is None:
            return f"unknown name {reference.field!r}: step {place.step.id!r} has no such field", None
        return f"step {reference.step!r} has no field {reference.field!r}", None
    if moment and field.type != "datetime":
        return f"{str(reference)!r} is a {field.type} field; hours_between and days_between take datetime fields", None
    if not moment and field.type not in NUMERIC_FIELD_TYPES:
        return (
            f"{str(reference)!r} is a {field.type} field; calculations use number, integer and calculated fields only"
            + (" (a datetime only in hours_between or days_between)" if field.type == "datetime" else ""),
            None,
        )
    if not own_step and target.step.repeat is not None:
        return f"cannot reference a field of repeatable step {target.step.id!r}", None
    if field is calculated:
        return f"{calculated.id!r} refers to itself", None
    if isinstance(field, CalculatedField):
        return None, (target.step.id, field.id)
    return None, None


def _cycles(
    depends_on: dict[tuple[str, str], list[tuple[str, str]]], paths: dict[tuple[str, str], str]
) -> Iterator[_Problem]:
    """Report each circle of calculations once, at the field where the search first entered it."""
    state: dict[tuple[str, str], str] = {}  # "active" while on the current chain, then "done"
    reported: set[frozenset[tuple[str, str]]] = set()

    def visit(node: tuple[str, str], chain: list[tuple[str, str]]) -> Iterator[_Problem]:
        state[node] = "active"
        chain.append(node)
        for target in depends_on.get(node, []):
            if state.get(target) == "active":
                circle = chain[chain.index(target) :]
                if frozenset(circle) not in reported:
                    reported.add(frozenset(circle))
                    names = " -> ".join(f"{step}.{field}" for step, field in (*circle, target))
                    yield _Problem(paths[target], f"calculation cycle: {names}")
            elif target not in state:
                yield from visit(target, chain)
        chain.pop()
        state[node] = "done"

    for node in depends_on:
        if node not in state:
            yield from visit(node, [])


def _duplicates(values: list[str]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return repeated


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _range_text(low: float | None, high: float | None) -> str:
    return f"{'-inf' if low is None else f'{low:g}'} to {'inf' if high is None else f'{high:g}'}"
