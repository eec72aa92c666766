"""The growth chart of a batch: points read from recorded values as the master record's ``growth_chart``
names them (``sop_schema.GrowthChart``), drawn by ``reports.growth_chart`` on the batch page and later in
the batch record. Nothing about the NK process is written here: the master record says which steps and
fields are the culture day and the cells. The day is read as recorded: where the record calculates it from
recorded date-times (NK-EXPAND v2: ``days_between(culture_initiation.seeded_at, counted_at)``), the chart
plots the computed day, and a corrected date-time moves the point (the calculation is redone)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from ..domain.sop_schema import GrowthChart, step_index
from ..models import Batch
from ..reports.growth_chart import Point
from . import batches


@dataclass(frozen=True)
class Chart:
    record_code: str
    chart: GrowthChart
    points: list[Point]


def _plain(number: Decimal) -> Decimal:
    """A stored Numeric(38, 10) without its trailing zeros: 190.0000000000 -> 190, 6.5000000000 -> 6.5."""
    return number.quantize(Decimal(1)) if number == number.to_integral_value() else number.normalize()


def charts(session: Session, batch: Batch) -> list[Chart]:
    """One chart per pinned master record that defines one, with every recorded point (current values,
    so a correction moves the point)."""
    found = []
    done = batches.executions(session, batch)
    for position, record in enumerate(batches.records(batch)):
        if record.growth_chart is None:
            continue
        version_id = batch.master_records[position].sop_version_id
        index = step_index(record)
        points = []
        for spec in record.growth_chart.points:
            step = index[spec.step][1]
            for ex in done:
                if ex.sop_version_id != version_id or ex.step_id != spec.step:
                    continue
                current = ex.current_values()
                value = current.get(spec.value)
                day = Decimal(spec.day) if isinstance(spec.day, int) else (
                    current[spec.day].number if spec.day in current else None)
                if value is None or value.number is None or day is None:
                    continue
                label = f"{spec.label} {ex.instance}" if step.repeat else spec.label
                points.append(Point(day=_plain(day), value=_plain(value.number), label=label))
        found.append(Chart(record.code, record.growth_chart, points))
    return found
