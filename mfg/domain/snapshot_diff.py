"""What changed in a document's data since it was issued: the data it embeds against the same data read now
(``verify-pdf``, issue [3.5] item 4). Pure: plain JSON-like values in, one line per difference out.

Lists grow at their end as a batch goes on (audit entries, custody events, later results): a list whose start
is what it was at issue is reported as "N added since issue", not as N changes. Anything else is named by its
path, with the value at issue and the value now. A correction made through the application also changes a
value: the audit trail says who changed it, when and why; this only shows that it changed.
"""

from __future__ import annotations

import json
from typing import Any

IGNORED = frozenset({"audit_head"})  # the audit position the data was read at: always later now


def differences(then: Any, now: Any, path: str = "") -> list[str]:
    """Every difference between ``then`` (the data at issue) and ``now``, one line each, in document order."""
    if isinstance(then, dict) and isinstance(now, dict):
        lines: list[str] = []
        for key in list(then) + [k for k in now if k not in then]:
            if not path and key in IGNORED:
                continue
            where = f"{path}.{key}" if path else str(key)
            if key not in now:
                lines.append(f"{where}: {_short(then[key])} at issue, now gone")
            elif key not in then:
                lines.append(f"{where}: added since issue: {_short(now[key])}")
            else:
                lines += differences(then[key], now[key], where)
        return lines
    if isinstance(then, list) and isinstance(now, list):
        lines = []
        names = _names(then)
        for index, (old, new) in enumerate(zip(then, now, strict=False)):
            lines += differences(old, new, f"{path}[{names[index]}]")
        if len(now) > len(then):
            lines.append(f"{path or 'list'}: {len(now) - len(then)} added since issue")
        elif len(then) > len(now):
            lines.append(f"{path or 'list'}: {len(then) - len(now)} of {len(then)} at issue now gone")
        return lines
    if then != now or type(then) is not type(now):
        return [f"{path or 'value'}: {_short(then)} at issue, now {_short(now)}"]
    return []


# What names an item of a list in a path, in order of preference: a value's field, a step, a record's code...
NAME_KEYS = ("field", "step", "code", "number", "division", "id", "title", "label")


def _names(items: list[Any]) -> list[str]:
    """How the path names each item: by the first of :data:`NAME_KEYS` that names every item once (a field's id,
    a step's id), else by position."""
    for key in NAME_KEYS:
        names = [item.get(key) if isinstance(item, dict) else None for item in items]
        if all(isinstance(name, (str, int)) and not isinstance(name, bool) for name in names) \
                and len(set(names)) == len(names):
            return [str(name) for name in names]
    return [str(index) for index in range(len(items))]


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[:limit - 1] + "…"
