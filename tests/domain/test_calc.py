"""Calculated fields: the whitelist, Decimal evaluation with operator-facing errors, and GMP rounding."""

import ast
import time
from decimal import Decimal

import pytest

from mfg.domain import calc, sop_schema
from mfg.domain.calc import (
    CalculationError,
    Reference,
    evaluate,
    inspect_expression,
    parse_expression,
    record_name,
    referenced_names,
    round_half_up,
)
from mfg.domain.errors import ValidationFailed


def problems_of(expression: str, values: dict[str, Decimal | float | int | None] | None = None) -> list[str]:
    with pytest.raises(CalculationError) as caught:
        evaluate(expression, values or {})
    return caught.value.problems


# --- whitelist ---------------------------------------------------------------------------------------


def test_one_whitelist_shared_with_the_schema() -> None:
    assert sop_schema.CALCULATION_FUNCTIONS is calc.CALCULATION_FUNCTIONS
    assert issubclass(CalculationError, ValidationFailed)


def test_parse_expression_returns_the_tree_of_an_allowed_expression() -> None:
    tree = parse_expression("  round(-a + +b * 2 / max(1, c) ** 0.5 - abs(log10(sqrt(4))), 2)\n")
    assert isinstance(tree, ast.Expression)


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("__import__('os').system('ls')", "is not allowed"),
        ("open('f')", "function 'open' is not allowed"),
        ("a.__class__", "a dot may only join a step id and a field id"),
        ("a.b.c.d", "a dot may only join a step id and a field id"),
        ("a.b().c", "a dot may only join a step id and a field id"),
        ("a if b else 1", "conditional expressions not allowed"),
        ("a > 1", "comparisons not allowed"),
        ("a % 2", "operator '%' is not allowed"),
        ("'text'", "only numbers may be written as constants"),
        ("1j", "only numbers may be written as constants"),
        ("min(a)", "min() takes at least 2 arguments, got 1"),
        ("sqrt(a, 2)", "sqrt() takes 1 argument, got 2"),
        ("a *", "not a valid expression"),
        ("   ", "the expression is empty"),
    ],
)
def test_forbidden_expressions_are_refused_and_never_evaluated(expression: str, fragment: str) -> None:
    with pytest.raises(CalculationError) as caught:
        parse_expression(expression)
    assert any(fragment in problem for problem in caught.value.problems), caught.value.problems
    with pytest.raises(CalculationError):
        evaluate(expression, {"a": 1, "b": 1})
    with pytest.raises(CalculationError):
        referenced_names(expression)


def test_inspect_reports_every_problem_without_raising() -> None:
    references, problems = inspect_expression("a + open(b) + x.y + 'text'")
    assert references == [Reference(None, "a"), Reference("x", "y")]
    assert len(problems) == 2


def test_referenced_names_plain_and_dotted() -> None:
    names = referenced_names("final_total_cells / initial_count.total_cells * 100 + max(volume_ml, 1)")
    assert names == {"final_total_cells", "initial_count.total_cells", "volume_ml"}
    assert referenced_names("2 * 3") == set()


# --- evaluation --------------------------------------------------------------------------------------


def test_arithmetic_is_decimal_not_float() -> None:
    assert evaluate("a + b", {"a": Decimal("0.1"), "b": Decimal("0.2")}) == Decimal("0.3")
    assert evaluate("0.1 + 0.2", {}) == Decimal("0.3")
    assert evaluate("a * 3", {"a": 0.1}) == Decimal("0.3")  # floats are read by their shortest decimal form
    assert evaluate("1 / 3", {}) == Decimal("0.3333333333333333333333333333")  # 28 significant digits


def test_operators_and_functions() -> None:
    values: dict[str, Decimal | int] = {"a": 3, "b": Decimal("-4.5")}
    assert evaluate("-a + +b * 2", values) == Decimal("-12.0")
    assert evaluate("a ** 2", values) == 9
    assert evaluate("2 ** -1", values) == Decimal("0.5")
    assert evaluate("min(a, b, 0)", values) == Decimal("-4.5")
    assert evaluate("max(a, b, 0)", values) == 3
    assert evaluate("abs(b)", values) == Decimal("4.5")
    assert evaluate("sqrt(16)", values) == 4
    assert evaluate("log10(1000)", values) == 3
    assert evaluate("round(2.675, 2)", values) == Decimal("2.68")
    assert evaluate("round(2.5)", values) == 3  # half up, not Python's half to even
    assert evaluate("round(1250, -2)", values) == 1300


def test_dotted_references_use_the_value_of_the_named_step() -> None:
    values = {
        "final_total_cells": Decimal("1850.0"),
        "initial_count.total_cells": Decimal("925.0"),
        "total_cells": Decimal("1"),  # a same-named field of this step is a different value
    }
    assert evaluate("final_total_cells / initial_count.total_cells * 100", values) == 200


def test_constants_are_read_exactly_as_written() -> None:
    assert evaluate("1e400 / 1e399", {}) == 10  # not float infinity
    assert evaluate("0.1234567890123456789", {}) == Decimal("0.1234567890123456789")


def test_missing_inputs_are_all_named() -> None:
    problems = problems_of("volume_ml * concentration + initial_count.volume_ml", {"concentration": None})
    assert problems == [
        "needs 'volume_ml', which is not recorded yet",
        "needs 'concentration', which is not recorded yet",
        "needs 'initial_count.volume_ml', which is not recorded yet",
    ]


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), float("inf"), float("nan")])
def test_non_finite_inputs_are_refused(bad: Decimal | float) -> None:
    assert problems_of("x + 1", {"x": bad}) == [f"'x' is not a finite number ({bad})"]


def test_non_numbers_are_refused() -> None:
    assert problems_of("x + 1", {"x": True}) == ["'x' is not a number (got bool)"]
    assert problems_of("x + 1", {"x": "5"}) == ["'x' is not a number (got str)"]  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("x / y", "division by zero: 'y' is 0"),
        ("x / (y - y)", "division by zero: 'y - y' is 0"),
        ("y ** -1", "division by zero: 'y' is 0 and is raised to a negative power"),
        ("y ** 0", "0 to the power 0 is undefined in 'y ** 0'"),
        ("sqrt(y - x)", "square root of a negative number: 'y - x' is -2.5"),
        ("log10(y)", "log10 of zero or a negative number: 'y' is 0"),
        ("log10(-x)", "log10 of zero or a negative number: '-x' is -2.5"),
        ("(-x) ** 0.5", "a negative number cannot be raised to a fractional power: '-x' is -2.5"),
        ("round(x, 0.5)", "round(): the number of decimals must be a whole number from -28 to 28, but '0.5' is 0.5"),
    ],
)
def test_impossible_arithmetic_is_explained(expression: str, message: str) -> None:
    assert problems_of(expression, {"x": Decimal("2.5"), "y": 0}) == [message]


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("9 ** 9 ** 9", "exponent too large in '9 ** 9 ** 9': '9 ** 9' is 387420489, at most 100 is allowed"),
        ("2 ** 101", "exponent too large"),
        ("2 ** -101", "exponent too large"),
        ("10 ** (10 ** 100)", "exponent too large"),
        ("((10 ** 100) ** 100) ** 100", "the result of '((10 ** 100) ** 100) ** 100' is too large"),
        ("1e999999 * 10", "the result of '1e999999 * 10' is too large"),
        ("1e1000000 + 1", "the number '1e1000000' is too large"),
    ],
)
def test_huge_powers_fail_fast(expression: str, fragment: str) -> None:
    started = time.perf_counter()
    problems = problems_of(expression)
    assert time.perf_counter() - started < 0.5
    assert len(problems) == 1 and fragment in problems[0], problems


def test_large_but_allowed_powers_are_computed() -> None:
    assert evaluate("2 ** 100", {}) == Decimal(2**100).quantize(Decimal("1E+3"))  # rounded to 28 digits
    assert evaluate("(10 ** 100) ** 100", {}) == Decimal("1E+10000")
    assert evaluate("2 ** 0.5", {}) == Decimal("1.414213562373095048801688724")


def test_absurdly_nested_expressions_are_refused() -> None:
    assert problems_of("-" * 5000 + "1") in (
        ["the expression is nested too deeply to calculate"],
        ["not a valid expression: too long or too deeply nested"],
    )


# --- rounding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        ("2.675", 2, "2.68"),
        ("0.125", 2, "0.13"),
        ("0.135", 2, "0.14"),
        ("-2.675", 2, "-2.68"),
        ("2.674999", 2, "2.67"),
        ("2", 2, "2.00"),
        ("2.5", 0, "3"),
        ("3.5", 0, "4"),
        ("-0.001", 2, "0.00"),
        ("1250", -2, "1.3E+3"),
        ("123456789012345678901234567890.55", 1, "123456789012345678901234567890.6"),
    ],
)
def test_round_half_up(value: str, decimals: int, expected: str) -> None:
    assert str(round_half_up(Decimal(value), decimals)) == expected


def test_round_half_up_differs_from_float_rounding() -> None:
    assert round(2.675, 2) == 2.67  # the binary float just below 2.675
    assert round_half_up(Decimal("2.675"), 2) == Decimal("2.68")


def test_round_half_up_refuses_non_finite() -> None:
    with pytest.raises(ValueError):
        round_half_up(Decimal("NaN"), 2)


# --- elapsed time between recorded date-times -------------------------------------------------------


def test_hours_and_days_between_two_recorded_date_times() -> None:
    from datetime import datetime, timedelta, timezone

    seeded = datetime(2026, 3, 2, 16, 0, tzinfo=timezone.utc)
    counted = seeded + timedelta(days=7, minutes=30)
    moments = {"culture_initiation.seeded_at": calc.moment_number(seeded), "counted_at": calc.moment_number(counted)}

    assert evaluate("hours_between(culture_initiation.seeded_at, counted_at)", moments) == Decimal("168.5")
    assert round_half_up(evaluate("days_between(culture_initiation.seeded_at, counted_at)", moments), 2) == \
        Decimal("7.02")
    assert evaluate("days_between(counted_at, culture_initiation.seeded_at) * 24", moments) == Decimal("-168.5")
    assert calc.moment_number(datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=timezone.utc)) == Decimal("1.5")
    assert calc.moment_number(datetime(1969, 12, 31, 23, 59, 59, tzinfo=timezone.utc)) == Decimal(-1)


def test_elapsed_time_functions_take_two_field_references_only() -> None:
    for expression, fragment in [
        ("hours_between(1, counted_at)", "hours_between() takes two date-time fields"),
        ("days_between(seeded_at + 1, counted_at)", "days_between() takes two date-time fields"),
        ("days_between(seeded_at)", "days_between() takes 2 arguments, got 1"),
    ]:
        _, found = inspect_expression(expression)
        assert any(fragment in problem for problem in found), (expression, found)
    assert calc.elapsed_references("a * days_between(s.a, b) + b") == [Reference("s", "a"), Reference(None, "b")]
    with pytest.raises(CalculationError, match="'counted_at', which is not recorded yet"):
        evaluate("hours_between(seeded_at, counted_at)", {"seeded_at": Decimal(0)})


def test_a_field_of_another_record_is_named_record_step_field_and_evaluated_from_its_recorded_value() -> None:
    """Issue 17 item 2: a value recorded in another record of the batch is named, never typed again."""
    references, problems = inspect_expression("NK_EXPAND.harvest_culture.nk_purity / 100 * volume_ml")
    assert problems == []
    assert [str(r) for r in references] == ["NK_EXPAND.harvest_culture.nk_purity", "volume_ml"]
    assert references[0].record == "NK_EXPAND" and references[0].step == "harvest_culture"
    recorded = {"NK_EXPAND.harvest_culture.nk_purity": Decimal("93.0"), "volume_ml": Decimal("10")}
    assert evaluate("NK_EXPAND.harvest_culture.nk_purity / 100 * volume_ml", recorded) == Decimal("9.300")
    with pytest.raises(CalculationError,
                       match="needs 'NK_EXPAND.harvest_culture.nk_purity', which is not recorded yet"):
        evaluate("NK_EXPAND.harvest_culture.nk_purity", {})
    assert record_name("NK-EXPAND") == "NK_EXPAND"
