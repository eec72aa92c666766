"""What the screens call the things a master record names by id: the record's own words.

A master record names fields by id (``tnc_count``), fields of other steps by ``<step_id>.<field_id>``
(``identify_bag.collection_end``) and the batch's run-time values by context names (``batch.din``,
``subject.weight_kg``, ``trial.cd3_limit_per_kg``). People read the step's title and the field's label
("Identify the collection bag: Collection end"), and "DIN". Nothing here knows the NK process: the titles and
labels come from the master record; the run-time names are the engine's own (``domain.context``, the scan
names of ``sop_schema.ScanField``).

Pure functions: no Flask, no database. The web registers them as Jinja filters; the review and audit screens'
services call them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from . import display
from .limits import LimitContext, limit_text, limit_value
from .runtime_names import RUNTIME_WORDS  # the one table, shared with domain.errors
from .sop_schema import MasterRecord, Step, step_index

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?")
_FUNCTIONS = {"min", "max", "abs", "round", "log10", "sqrt", "hours_between", "days_between"}
_FUNCTION_WORDS = {"hours_between": "hours between", "days_between": "days between"}


def plain(name: str) -> str:
    """A name with no label anywhere, as words: ``collection_end`` -> ``collection end`` (never an id on screen)."""
    return name.replace("_", " ").replace(".", " ")


def step_name(step: Step, instance: int | None = None) -> str:
    """A step as people call it: its title, and for a repeated step the record's name of the instance
    ("Feed 2")."""
    if step.repeat is not None and instance is not None:
        return f"{step.title} ({step.repeat.label} {instance})"
    return step.title


def field_label(step: Step | None, field_id: str) -> str:
    if step is not None:
        for f in step.fields:
            if f.id == field_id:
                return f.label
    return plain(field_id)


def _find_step(records: Iterable[MasterRecord], step_id: str) -> Step | None:
    for record in records:
        found = step_index(record).get(step_id)
        if found is not None:
            return found[1]
    return None


def step_title(step_id: str | None, records: Sequence[MasterRecord] = ()) -> str:
    """A step named by its id, as its master record titles it."""
    if not step_id:
        return ""
    step = _find_step(records, step_id)
    return step.title if step is not None else plain(step_id)


def reference(name: str, records: Sequence[MasterRecord] = (), step: Step | None = None) -> str:
    """A name from a master record in its words: a run-time name (``batch.din`` -> "DIN"), a field of another
    step (``identify_bag.collection_end`` -> "Identify the collection bag: Collection end"), a field of
    ``step`` (``tnc_count`` -> its label)."""
    if name in RUNTIME_WORDS:
        return RUNTIME_WORDS[name]
    if "." in name:
        step_id, _, field_id = name.partition(".")
        other = _find_step(records, step_id)
        if other is None:
            return plain(name)
        return f"{other.title}: {field_label(other, field_id)}"
    return field_label(step, name)


def _operators(text: str) -> str:
    """The arithmetic between names as printed: × ÷ ^, large numbers grouped."""
    text = re.sub(r"\s*\*\*\s*", "^", text)
    text = re.sub(r"\s*\*\s*", " × ", text)
    text = re.sub(r"\s*/\s*", " ÷ ", text)
    return re.sub(r"(?<![\d.,])\d{4,}(?!\d)", lambda m: display.grouped(m.group(0)), text)


def expression(text: str, records: Sequence[MasterRecord] = (), step: Step | None = None) -> str:
    """A calculation in words: each name replaced by its label, the operators as printed (× ÷)."""
    out: list[str] = []
    position = 0
    for match in _NAME.finditer(text):
        out.append(_operators(text[position:match.start()]))
        name = match.group(0)
        out.append(_FUNCTION_WORDS.get(name, name) if name in _FUNCTIONS else reference(name, records, step))
        position = match.end()
    out.append(_operators(text[position:]))
    return "".join(out)


def _number(value: Any, field: Any = None) -> str:
    if not isinstance(value, (int, float, Decimal)):
        return str(value)
    given = getattr(field, "unit", "") or ""
    if "cell" in given.lower() and not _POWER_UNIT.match(given):  # as the value is shown (:func:`amount`)
        return display.cells(limit_text(value))
    return display.grouped(limit_text(value))


def limits(field: Any, context: LimitContext | None = None) -> str:
    """A field's limits as people read them: ``≥ 70.1; ≤ 100``, ``< 200,000 (the trial's CD3⁺ cell limit per
    kg)``, ``acceptable: No growth``, ``must match DIN``: on screens and in every printed record."""
    parts = []
    for attribute, sign in (("min", "≥"), ("max", "≤"), ("below", "<")):
        limit = getattr(field, attribute, None)
        if limit is None:
            continue
        if isinstance(limit, str):
            value = limit_value(limit, context)
            words = reference(limit)
            parts.append(f"{sign} {_number(value, field)} ({words})" if value is not None else f"{sign} {words}")
        else:
            parts.append(f"{sign} {_number(limit, field)}")
    if getattr(field, "acceptable", None):
        parts.append("acceptable: " + ", ".join(field.acceptable))
    if getattr(field, "expected", None):
        parts.append(f"must match {reference(field.expected)}")
    return "; ".join(parts)


def value_name(step: Step | None, instance: int, field_id: str) -> str:
    """A recorded value as people read it: the step's title (and instance, for a repeated step) and the
    field's label, in the master record's words ("Sterility (14-day culture)", "Feed (Day 2): Viable cells")."""
    label = field_label(step, field_id)
    if step is None:
        return label
    where = step_name(step, instance if step.repeat is not None else None)
    return where if label == step.title else f"{where}: {label}"


# Keys of a record that say nothing to a person (database ids, hashes, tokens, versions): in the raw record only.
_SILENT = re.compile(r"^(id|row_version|position|instance|.*sha256|.*_hash|claim_token|claimed_by|field_type|raw|"
                     r"stage_id|step_id|field_id|item_key|filename|source_name)$")


def change(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
           label: Mapping[str, str] | None = None, tz: ZoneInfo | None = None) -> list[str]:
    """A record's change as "label: old → new" (a new record: "label: value"), in the order of ``after``.
    ``label`` names the keys (others are written in words); moments are written in ``tz`` (else UTC), to the
    minute. Database ids, hashes and tokens are left out (a reference set is "recorded")."""
    label = label or {}
    before = before or {}
    after = after or {}
    lines = []
    for key in list(after) + [k for k in before if k not in after]:
        if _SILENT.match(key) and key not in label:
            continue
        name = label.get(key, plain(key.removesuffix("_id") if key.endswith("_id") else key))
        old, new = before.get(key), after.get(key)
        if key.endswith("_id") and key not in label:  # a reference to another record: said, not numbered
            if key in before and new is not None and old is None:
                lines.append(f"{name}: recorded")
            continue
        say = _cells_words if "cells" in key else value_words
        if key in before:
            lines.append(f"{name}: {say(old, tz)} → {say(new, tz)}")
        elif new is not None and new != "":
            lines.append(f"{name}: {say(new, tz)}")
    return lines


def _cells_words(value: Any, tz: ZoneInfo | None = None) -> str:
    return "none" if value is None or value == "" else display.cells(value)


_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?")
_CODE = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)+(?:,[a-z0-9_]+)*")


def value_words(value: Any, tz: ZoneInfo | None = None) -> str:
    """A recorded value in a change line: moments in the site's time to the minute, codes in words, large
    numbers grouped."""
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return "…"
    text = str(value)
    if _ISO.fullmatch(text):
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return display.local(moment, tz or ZoneInfo("UTC"))
    if _CODE.fullmatch(text):
        return plain(text).replace(",", ", ")
    if isinstance(value, int) or re.fullmatch(r"-?\d{4,}(\.\d+)?", text):
        return display.grouped(text)
    return text


_POWER_UNIT = re.compile(r"^10\^(-?\d+)\s*(.*)$")
_NUMERIC_TYPES = frozenset({"number", "integer", "calculated"})


def unit(text: str) -> str:
    """A master record's unit as printed: ``10^6 cells`` -> ``× 10⁶ cells`` (after a number)."""
    match = _POWER_UNIT.match(text or "")
    if match is None:
        return text
    return f"× 10{display.superscript(match.group(1))} {match.group(2)}".rstrip()


def amount(field: Any, number_text: str) -> str:
    """A recorded number with its unit as people read it: ``200.0 × 10⁶ cells`` (the digits as recorded),
    a count of cells ``9.36 × 10⁸ NK cells`` (``display.cells``), other numbers grouped (``12,500 U/mL``)."""
    given = getattr(field, "unit", "1") or "1"
    if given == "1":
        return display.grouped(number_text)
    if _POWER_UNIT.match(given):
        return f"{number_text} {unit(given)}"
    if "cell" in given.lower():
        return f"{display.cells(number_text)} {given}"
    return f"{display.grouped(number_text)} {given}"


def shown(field: Any, text: str, displayed: str) -> str:
    """A recorded value on a screen: numbers through :func:`amount`, everything else as ``values.display``
    wrote it (``displayed``)."""
    if getattr(field, "type", None) in _NUMERIC_TYPES and text:
        return amount(field, text)
    return displayed


_QUOTED_NAME = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*){0,2})'")


def names_in(text: str, records: Sequence[MasterRecord] = (), step: Step | None = None) -> str:
    """An engine message with the names it quotes in words: "needs 'volume_ml', which is not recorded yet"
    -> "needs Volume to infuse, which is not recorded yet"."""
    return _QUOTED_NAME.sub(lambda match: reference(match.group(1), records, step), text)
