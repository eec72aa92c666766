"""Calculated fields: the one place where an expression from a master record is checked and evaluated.

A calculated field's ``expression`` (written by the SOP author, approved by QA) is arithmetic on values
the operators recorded, e.g. ``final_total_cells / initial_count.total_cells * 100``. This module

* checks it against a whitelist (:func:`inspect_expression`, :func:`parse_expression`): numbers, names of
  fields (``volume_ml``) and fields of other steps (``initial_count.volume_ml``), ``+ - * / **``, unary
  ``+``/``-``, parentheses and the functions in :data:`CALCULATION_FUNCTIONS`. The SOP schema uses the
  same check when a definition is loaded, so an expression that loads is one this module can evaluate;
* evaluates it (:func:`evaluate`) by walking the syntax tree with :class:`~decimal.Decimal` arithmetic
  (28 significant digits). Python's ``eval`` is never used, so an expression can do nothing but arithmetic;
* rounds results the GMP way (:func:`round_half_up`).

Elapsed time. ``hours_between(a, b)`` and ``days_between(a, b)`` give the time from date-time ``a`` to
date-time ``b`` (negative when ``b`` is earlier) in hours or days (24 h), e.g. a culture day
``days_between(culture_initiation.seeded_at, counted_at)``. Their two arguments must be field references
(no numbers, no arithmetic); a date-time reaches :func:`evaluate` as a number, its POSIX seconds
(:func:`moment_number` through :func:`calculation_input`, which the services use when they gather a
calculation's inputs), so every value
stays a Decimal. The master-record schema makes this honest: a datetime field may be named *only* as an
argument of these functions, and their arguments must be datetime fields (:func:`elapsed_references`
names the references that are such arguments), so seconds are never added to cells.

Anything that stops a calculation (a value not recorded yet, division by zero, the square root of a
negative number, a power too large to compute) raises :class:`CalculationError` with a message an
operator can act on; nothing is stored in that case.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from typing import NamedTuple

from mfg.domain.errors import ValidationFailed

__all__ = [
    "CALCULATION_FUNCTIONS",
    "MAX_EXPONENT",
    "MAX_RESULT_EXPONENT",
    "PRECISION",
    "CalculationError",
    "Reference",
    "ELAPSED_FUNCTIONS",
    "calculation_input",
    "elapsed_references",
    "evaluate",
    "inspect_expression",
    "moment_number",
    "parse_expression",
    "record_name",
    "referenced_names",
    "round_half_up",
]

CALCULATION_FUNCTIONS: dict[str, tuple[int, int | None]] = {
    # name: (fewest arguments, most arguments or None for no upper bound)
    "abs": (1, 1),
    "log10": (1, 1),
    "max": (2, None),
    "min": (2, None),
    "round": (1, 2),
    "sqrt": (1, 1),
    "hours_between": (2, 2),
    "days_between": (2, 2),
}
"""The functions an expression may call, with how many positional arguments each takes."""

ELAPSED_FUNCTIONS: dict[str, int] = {"hours_between": 3600, "days_between": 86400}
"""Elapsed time between two date-time fields, by the seconds in the unit of its result."""

PRECISION = 28
"""Significant digits of every intermediate and final result (the :mod:`decimal` default)."""

MAX_EXPONENT = 100
"""``a ** b`` is refused when ``|b|`` exceeds this: no cell-therapy calculation needs more, and it keeps
evaluation fast (``9 ** 9 ** 9`` fails at once instead of computing for hours)."""

MAX_RESULT_EXPONENT = 999_999
"""Results (and intermediate values) must stay below 10 ** 1,000,000 in magnitude."""

MAX_ROUND_DECIMALS = 28
"""``round(x, n)`` in an expression accepts whole numbers ``n`` from -28 to 28."""

_CONTEXT = Context(
    prec=PRECISION,
    Emax=MAX_RESULT_EXPONENT,
    Emin=-MAX_RESULT_EXPONENT,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class CalculationError(ValidationFailed):
    """A calculation cannot be done (or an expression is not allowed); ``problems`` says why."""


class Reference(NamedTuple):
    """A name in an expression: a field of the same step (``step`` None), ``step.field``, or a field of
    another master record of the batch, ``RECORD.step.field`` (``record``: the record's code with ``_`` for
    ``-``, e.g. ``NK_EXPAND.harvest_culture.nk_purity``; :func:`record_name`)."""

    step: str | None
    field: str
    record: str | None = None

    def __str__(self) -> str:
        if self.record:
            return f"{self.record}.{self.step}.{self.field}"
        return f"{self.step}.{self.field}" if self.step else self.field


def record_name(code: str) -> str:
    """How an expression names the master record ``code``: ``NK-EXPAND`` -> ``NK_EXPAND``."""
    return code.replace("-", "_")


# --------------------------------------------------------------------------------------------------
# The whitelist
# --------------------------------------------------------------------------------------------------

_BINARY_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)
_UNARY_OPERATORS = (ast.UAdd, ast.USub)
_FORBIDDEN_SYNTAX = {
    ast.Lambda: "lambda",
    ast.Subscript: "indexing",
    ast.Compare: "comparisons",
    ast.BoolOp: "and/or",
    ast.IfExp: "conditional expressions",
    ast.NamedExpr: "assignment (:=)",
    ast.JoinedStr: "f-strings",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Set: "sets",
    ast.Dict: "dictionaries",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Starred: "* arguments",
}
_OPERATOR_SYMBOLS: dict[type[ast.operator] | type[ast.unaryop], str] = {
    ast.Mod: "%",
    ast.FloorDiv: "//",
    ast.MatMult: "@",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.Invert: "~",
    ast.Not: "not",
}


def _parse(expression: str) -> tuple[ast.Expression | None, list[str]]:
    """Parse ``expression`` (surrounding whitespace ignored) without checking what it uses."""
    if not expression.strip():
        return None, ["the expression is empty"]
    try:
        return ast.parse(expression.strip(), mode="eval"), []
    except SyntaxError as exc:
        return None, [f"not a valid expression: {exc.msg}"]
    except (ValueError, RecursionError, MemoryError):
        return None, ["not a valid expression: too long or too deeply nested"]


def _check(tree: ast.Expression) -> tuple[list[Reference], list[str]]:
    """Walk ``tree`` (iteratively: no recursion limit) and collect references and forbidden constructs."""
    references, problems, _elapsed = _check_all(tree)
    return references, problems


def _check_all(tree: ast.Expression) -> tuple[list[Reference], list[str], list[Reference]]:
    """:func:`_check`, and the references that are arguments of an elapsed-time function."""
    references: list[Reference] = []
    problems: list[str] = []
    elapsed: list[Reference] = []
    pending: list[ast.expr] = [tree.body]
    while pending:
        node = pending.pop()
        children: list[ast.expr] = []
        if isinstance(node, ast.Constant):
            if type(node.value) not in (int, float):
                problems.append(f"only numbers may be written as constants, not {node.value!r}")
        elif isinstance(node, ast.Name):
            if node.id.startswith("_"):
                problems.append(f"names starting with _ are not allowed: {node.id!r}")
            else:
                references.append(Reference(None, node.id))
        elif isinstance(node, ast.Attribute):
            inner = node.value
            if (isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name)
                    and not any(part.startswith("_") for part in (inner.value.id, inner.attr, node.attr))):
                references.append(Reference(inner.attr, node.attr, inner.value.id))  # RECORD.step.field
            elif not isinstance(inner, ast.Name) or node.attr.startswith("_") or inner.id.startswith("_"):
                problems.append("a dot may only join a step id and a field id (or a record, a step and a field): "
                                f"{ast.unparse(node)!r}")
            else:
                references.append(Reference(inner.id, node.attr))
        elif isinstance(node, ast.BinOp):
            if isinstance(node.op, _BINARY_OPERATORS):
                children = [node.left, node.right]
            else:
                problems.append(f"operator {_operator_text(node)!r} is not allowed; use + - * / **")
        elif isinstance(node, ast.UnaryOp):
            if isinstance(node.op, _UNARY_OPERATORS):
                children = [node.operand]
            else:
                problems.append(f"operator {_operator_text(node)!r} is not allowed; use + - * / **")
        elif isinstance(node, ast.Call):
            problem = _call_problem(node)
            if problem:
                problems.append(problem)
            else:
                children = list(node.args)
                if isinstance(node.func, ast.Name) and node.func.id in ELAPSED_FUNCTIONS:
                    elapsed.extend(_reference_of(argument) for argument in node.args)
        else:
            what = _FORBIDDEN_SYNTAX.get(type(node), f"{type(node).__name__} syntax")
            problems.append(f"{what} not allowed in calculations")
        pending.extend(reversed(children))  # keep left-to-right order in messages
    return references, problems, elapsed


def _reference_of(node: ast.expr) -> Reference:
    """The field reference an elapsed-time argument is (``_call_problem`` allowed only references)."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return Reference(node.value.id, node.attr)
    assert isinstance(node, ast.Name)
    return Reference(None, node.id)


def _call_problem(call: ast.Call) -> str | None:
    allowed = ", ".join(sorted(CALCULATION_FUNCTIONS))
    if not isinstance(call.func, ast.Name) or call.func.id not in CALCULATION_FUNCTIONS:
        return f"function {ast.unparse(call.func)!r} is not allowed; allowed: {allowed}"
    name = call.func.id
    if call.keywords or any(isinstance(arg, ast.Starred) for arg in call.args):
        return f"{name}() takes plain positional arguments only"
    fewest, most = CALCULATION_FUNCTIONS[name]
    if len(call.args) < fewest or (most is not None and len(call.args) > most):
        expected = str(fewest) if fewest == most else f"{fewest} to {most}" if most else f"at least {fewest}"
        return f"{name}() takes {expected} argument{'s' if expected != '1' else ''}, got {len(call.args)}"
    if name in ELAPSED_FUNCTIONS and not all(
            isinstance(arg, ast.Name) or (isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name))
            for arg in call.args):
        return (f"{name}() takes two date-time fields, e.g. {name}(culture_initiation.seeded_at, counted_at), "
                f"not {ast.unparse(call)!r}")
    return None


def _operator_text(node: ast.BinOp | ast.UnaryOp) -> str:
    return _OPERATOR_SYMBOLS.get(type(node.op), type(node.op).__name__)


def inspect_expression(expression: str) -> tuple[list[Reference], list[str]]:
    """Return the field references in ``expression`` (in order of appearance) and every problem with it.

    Allowed: numbers, field names, ``step.field``, + - * / ** (binary), unary + and -, parentheses, and
    calls of min, max, abs, round, log10 and sqrt with the right number of positional arguments, and of
    hours_between and days_between with two field references.
    Anything else (comparisons, strings, other functions, ``%``, indexing, ...) is a problem. The list of
    problems is empty for an allowed expression. Never raises for bad input.
    """
    tree, problems = _parse(expression)
    if tree is None:
        return [], problems
    return _check(tree)


def elapsed_references(expression: str) -> list[Reference]:
    """The references in ``expression`` that are arguments of ``hours_between``/``days_between`` (they
    must name date-time fields; every other reference names a number). Empty for a bad expression."""
    tree, _problems = _parse(expression)
    if tree is None:
        return []
    return _check_all(tree)[2]


def moment_number(moment: datetime) -> Decimal:
    """A date-time as :func:`evaluate` takes it: its POSIX seconds (exact to the microsecond)."""
    if moment.tzinfo is None:
        raise ValueError(f"a recorded date-time has a time zone, not {moment!r}")
    since = moment - _EPOCH
    return Decimal(since.days * 86400 + since.seconds) + Decimal(since.microseconds).scaleb(-6)


def calculation_input(number: Decimal | None, moment: datetime | None) -> Decimal | None:
    """A recorded value as a calculation takes it: the number of a number, integer or calculated field;
    of a datetime field its POSIX seconds (:func:`moment_number`), which only ``hours_between`` and
    ``days_between`` may use (the schema allows a datetime reference nowhere else); None otherwise."""
    if number is not None:
        return number
    return moment_number(moment) if moment is not None else None


def parse_expression(expression: str) -> ast.Expression:
    """The syntax tree of an allowed expression; :class:`CalculationError` listing every problem otherwise."""
    tree, problems = _parse(expression)
    if tree is None:
        raise CalculationError(*problems)
    _, problems = _check(tree)
    if problems:
        raise CalculationError(*problems)
    return tree


def referenced_names(expression: str) -> set[str]:
    """The names whose recorded values :func:`evaluate` needs, as written: ``volume_ml`` for a field of the
    same step, ``initial_count.volume_ml`` for a field of another step.

    Raises :class:`CalculationError` if the expression is not allowed.
    """
    tree, problems = _parse(expression)
    if tree is None:
        raise CalculationError(*problems)
    references, problems = _check(tree)
    if problems:
        raise CalculationError(*problems)
    return {str(reference) for reference in references}


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def evaluate(expression: str, values: Mapping[str, Decimal | float | int | None]) -> Decimal:
    """Compute ``expression`` from recorded ``values`` with Decimal arithmetic (28 significant digits).

    ``values`` maps each name as written in the expression (see :func:`referenced_names`) to its recorded
    value; ``None`` or an absent key means the value is not recorded yet. Floats are taken by their
    shortest decimal form (``2.675`` means 2.675, not the binary number closest to it). Number constants in
    the expression are read exactly as written.

    ``hours_between(a, b)`` and ``days_between(a, b)`` are ``(b - a) / 3600`` and ``(b - a) / 86400`` of
    date-times given as POSIX seconds (:func:`moment_number`).

    ``round(x)`` and ``round(x, n)`` round half up like :func:`round_half_up` (not Python's "round half to
    even"); ``n`` must be a whole number from -28 to 28.

    Raises :class:`CalculationError` when the expression is not allowed, when values are missing (all of
    them are listed), or when the arithmetic cannot give a finite number: division by zero, square root of
    a negative number, log10 of zero or a negative number, a negative number raised to a fractional power,
    an exponent larger than 100 in magnitude, or a result of 10 ** 1,000,000 or more.
    """
    tree = parse_expression(expression)
    references, _ = _check(tree)
    inputs: dict[str, Decimal] = {}
    problems: list[str] = []
    for name in dict.fromkeys(str(reference) for reference in references):  # unique, in order
        raw = values.get(name)
        if raw is None:
            problems.append(f"needs {name!r}, which is not recorded yet")
            continue
        try:
            inputs[name] = _input_number(name, raw)
        except CalculationError as exc:
            problems.extend(exc.problems)
    if problems:
        raise CalculationError(*problems)

    try:
        result = _Evaluator(expression.strip(), inputs).value(tree.body)
    except RecursionError as exc:
        raise CalculationError("the expression is nested too deeply to calculate") from exc
    if not result.is_finite():  # pragma: no cover - every operation above is checked; kept as a last guard
        raise CalculationError("the result is not a finite number")
    return result


def _input_number(name: str, raw: object) -> Decimal:
    """A recorded value as a Decimal; refuse anything that is not a finite number."""
    if isinstance(raw, bool) or not isinstance(raw, (Decimal, int, float)):
        raise CalculationError(f"{name!r} is not a number (got {type(raw).__name__})")
    number = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
    if not number.is_finite():
        raise CalculationError(f"{name!r} is not a finite number ({raw})")
    return _checked(lambda: _CONTEXT.plus(number), f"{name!r} is too large to calculate with")


def _checked(operation: Callable[[], Decimal], overflow_message: str) -> Decimal:
    """Run a Decimal operation under the context; turn an overflow into an operator-facing message."""
    try:
        return operation()
    except Overflow as exc:
        raise CalculationError(overflow_message) from exc


class _Evaluator:
    """Evaluates an already whitelisted tree; messages quote the part of the expression that failed."""

    def __init__(self, source: str, inputs: dict[str, Decimal]) -> None:
        self.source = source
        self.inputs = inputs

    def value(self, node: ast.expr) -> Decimal:
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            return self.inputs[node.id]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            return self.inputs[f"{node.value.id}.{node.attr}"]
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name)):  # RECORD.step.field
            return self.inputs[f"{node.value.value.id}.{node.value.attr}.{node.attr}"]
        if isinstance(node, ast.UnaryOp):
            operand = self.value(node.operand)
            return _CONTEXT.minus(operand) if isinstance(node.op, ast.USub) else _CONTEXT.plus(operand)
        if isinstance(node, ast.BinOp):
            return self._binary(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self._call(node.func.id, node)
        raise CalculationError(f"cannot evaluate {ast.unparse(node)!r}")  # pragma: no cover - whitelisted above

    def _constant(self, node: ast.Constant) -> Decimal:
        if isinstance(node.value, float):
            # Read the digits as written: 2.675 stays 2.675 and 1e400 is not turned into infinity.
            written = ast.get_source_segment(self.source, node)
            number = Decimal(written) if written else Decimal(repr(node.value))
        else:
            assert isinstance(node.value, int)  # the whitelist allows int and float constants only
            number = Decimal(node.value)
        return _checked(lambda: _CONTEXT.plus(number), f"the number {self._quote(node)} is too large")

    def _binary(self, node: ast.BinOp) -> Decimal:
        left, right = self.value(node.left), self.value(node.right)
        too_large = f"the result of {self._quote(node)} is too large"
        if isinstance(node.op, ast.Add):
            return _checked(lambda: _CONTEXT.add(left, right), too_large)
        if isinstance(node.op, ast.Sub):
            return _checked(lambda: _CONTEXT.subtract(left, right), too_large)
        if isinstance(node.op, ast.Mult):
            return _checked(lambda: _CONTEXT.multiply(left, right), too_large)
        if isinstance(node.op, ast.Div):
            if right.is_zero():
                raise CalculationError(f"division by zero: {self._quote(node.right)} is 0")
            return _checked(lambda: _CONTEXT.divide(left, right), too_large)
        return self._power(node, left, right)

    def _power(self, node: ast.BinOp, base: Decimal, exponent: Decimal) -> Decimal:
        if abs(exponent) > MAX_EXPONENT:
            raise CalculationError(
                f"exponent too large in {self._quote(node)}: {self._quote(node.right)} is {_show(exponent)}, "
                f"at most {MAX_EXPONENT} is allowed"
            )
        if base.is_zero() and exponent < 0:
            raise CalculationError(f"division by zero: {self._quote(node.left)} is 0 and is raised to a negative power")
        if base.is_zero() and exponent.is_zero():
            raise CalculationError(f"0 to the power 0 is undefined in {self._quote(node)}")
        if base < 0 and exponent != exponent.to_integral_value():
            raise CalculationError(
                f"a negative number cannot be raised to a fractional power: {self._quote(node.left)} is {_show(base)}"
            )
        return _checked(lambda: _CONTEXT.power(base, exponent), f"the result of {self._quote(node)} is too large")

    def _call(self, name: str, node: ast.Call) -> Decimal:
        arguments = [self.value(argument) for argument in node.args]
        first = arguments[0]
        if name in ELAPSED_FUNCTIONS:
            seconds = _CONTEXT.subtract(arguments[1], first)
            return _CONTEXT.divide(seconds, Decimal(ELAPSED_FUNCTIONS[name]))
        if name == "min":
            return min(arguments)
        if name == "max":
            return max(arguments)
        if name == "abs":
            return _CONTEXT.abs(first)
        if name == "sqrt":
            if first < 0:
                raise CalculationError(
                    f"square root of a negative number: {self._quote(node.args[0])} is {_show(first)}"
                )
            return _CONTEXT.sqrt(first)
        if name == "log10":
            if first <= 0:
                raise CalculationError(
                    f"log10 of zero or a negative number: {self._quote(node.args[0])} is {_show(first)}"
                )
            return _CONTEXT.log10(first)
        # round(x) or round(x, n)
        decimals = arguments[1] if len(arguments) > 1 else Decimal(0)
        if decimals != decimals.to_integral_value() or abs(decimals) > MAX_ROUND_DECIMALS:
            raise CalculationError(
                f"round(): the number of decimals must be a whole number from {-MAX_ROUND_DECIMALS} to "
                f"{MAX_ROUND_DECIMALS}, but {self._quote(node.args[1])} is {_show(decimals)}"
            )
        return round_half_up(first, int(decimals))

    def _quote(self, node: ast.AST) -> str:
        """The part of the expression a message is about, as written, e.g. ``'b - c'``."""
        written = ast.get_source_segment(self.source, node)
        return repr(" ".join(written.split()) if written else ast.unparse(node))


def _show(value: Decimal) -> str:
    """A number for a message: plain notation where reasonable, 0 for any zero."""
    if value.is_zero():
        return "0"
    if abs(value.adjusted()) > 30:
        return f"{value:E}"
    return f"{value.normalize(_CONTEXT):f}"


# --------------------------------------------------------------------------------------------------
# Rounding
# --------------------------------------------------------------------------------------------------


def round_half_up(value: Decimal, decimals: int) -> Decimal:
    """Round ``value`` to ``decimals`` places, a 5 in the first dropped place rounding away from zero.

    This is the rounding convention of GMP documentation and the pharmacopoeias (USP General Notices
    7.20): 2.675 -> 2.68, 0.125 -> 0.13, -2.675 -> -2.68. It is *not* Python's ``round``, which rounds
    halves to even and works on binary floats (``round(2.675, 2)`` gives 2.67). The result always has
    exactly ``decimals`` places (``2`` -> ``2.00``), so the stored text shows the field's precision.
    A negative ``decimals`` rounds to tens, hundreds, ... (``round_half_up(Decimal(1250), -2)`` is 1.3E+3).
    Raises :class:`ValueError` for a value that is not a finite number.
    """
    if not value.is_finite():
        raise ValueError(f"cannot round {value}: not a finite number")
    if isinstance(decimals, bool) or not isinstance(decimals, int):
        raise ValueError(f"decimals must be a whole number, got {decimals!r}")
    # Enough digits for the rounded result, however large the value: quantize never loses digits here.
    digits = max(PRECISION, value.adjusted() + decimals + 2)
    context = Context(prec=digits, Emax=_CONTEXT.Emax + digits, Emin=_CONTEXT.Emin - digits)
    rounded = value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP, context=context)
    return rounded.copy_abs() if rounded.is_zero() else rounded  # no "-0.00"
