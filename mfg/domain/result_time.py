"""When a test result can exist, and when a pending one is due (DOMAIN.md section 4).

A result within specification cannot exist before its sample time plus the method's minimum duration (a
14-day culture cannot read "no growth" on day 1); a failing result may be reported as soon as it is found (a
culture flags growth when it is detected), and refusing it would hide a hazard, so the minimum applies to
results within specification only. A result recorded as pending at a conditional release is due at the
sample time plus the method's duration. Both come from the
field's ``result_time`` in the master record (``sop_schema.ResultTime``); the sample time is a recorded
date-time, never a typed culture day. Pure: the service resolves the sample time and asks.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from .sop_schema import ResultTime


def earliest(result_time: ResultTime, sampled_at: datetime) -> datetime:
    """The first moment a result of this method can exist."""
    return sampled_at + timedelta(hours=result_time.minimum_hours)


def due(result_time: ResultTime, sampled_at: datetime) -> datetime:
    """When a result pending at release is due."""
    return sampled_at + timedelta(hours=result_time.due_hours)


def too_early(label: str, result_time: ResultTime, sampled_at: datetime | None, now: datetime,
              show: Callable[[datetime], str]) -> str | None:
    """Why a result entered at ``now`` cannot exist yet (naming the earliest allowed time), or None.

    ``sampled_at`` None: the sample time is not recorded, so no result can be judged possible; ``show``
    writes a moment for the person (the site's local time with its zone)."""
    if sampled_at is None:
        return f"{label}: the sample time ({result_time.sample}) is not recorded; a result cannot be entered before it"
    first = earliest(result_time, sampled_at)
    if now < first:
        return (f"{label}: a result of {result_time.method} cannot exist before {show(first)} (sampled "
                f"{show(sampled_at)} + {result_time.minimum_hours:g} h); nothing was stored")
    return None

