"""Time is checked, not typed: a result cannot be entered before its sample time plus the method's minimum
duration; a date-time cannot precede the recorded date-time it depends on, nor lie in the future; elapsed
times (a culture day) are calculated from recorded date-times, and the growth chart plots them.

Real database (SQLite, and PostgreSQL when MFG_TEST_DATABASE_URL is set), real services, no mocks: the
times entered are computed back from the real clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from mfg.domain import values
from mfg.domain.errors import ValidationFailed
from mfg.domain.result_time import earliest
from mfg.domain.sop_schema import ChoiceField, step_index
from mfg.models import RecordedValue, utcnow
from mfg.services import batches, evaluation, growth, sops, starting, steps
from tests.support import PASSWORD

SITE = ZoneInfo("Europe/Berlin")

RECORD = """\
kind: master_batch_record
code: TIME-CHECK
version: 1
title: Time is checked, not typed
growth_chart:
  title: Cells per culture day
  unit: 10^6 cells
  points:
    - {step: seed, label: Seeded, day: 0, value: cells}
    - {step: count, label: Count, day: culture_day, value: cells}
stages:
  - id: culture
    title: Culture
    steps:
      - id: seed
        title: Seed
        fields:
          - {id: seeded_at, type: datetime, label: Seeded at}
          - {id: cells, type: number, label: Cells seeded, unit: 10^6 cells, decimals: 0}
      - id: count
        title: Count
        repeat: {min: 1, max: 3, label: Count}
        fields:
          - {id: counted_at, type: datetime, label: Counted at, not_before: seed.seeded_at}
          - {id: cells, type: number, label: Cells, unit: 10^6 cells, decimals: 0}
          - id: culture_day
            type: calculated
            label: Culture day
            unit: day
            decimals: 2
            expression: days_between(seed.seeded_at, counted_at)
          - id: culture_hours
            type: calculated
            label: Hours in culture
            unit: h
            decimals: 1
            expression: hours_between(seed.seeded_at, counted_at)
      - id: sterility
        title: Sterility culture
        parallel: true
        fields:
          - {id: inoculated_at, type: datetime, label: Culture inoculated}
          - {id: read_at, type: datetime, label: Culture read, required: false}
          - id: result
            type: choice
            label: 14-day culture
            choices: [Pending, No growth, Growth]
            acceptable: [Pending, No growth]
            pending: [Pending]
            result_time: {method: 14-day culture, sample: inoculated_at, minimum_hours: 336, due_hours: 336}
      - id: viability_assay
        title: Viability assay
        parallel: true
        fields:
          - id: viability
            type: number
            label: Viability after 24 h
            unit: "%"
            decimals: 1
            result_time: {method: 24-hour viability assay, sample: seed.seeded_at, minimum_hours: 24, due_hours: 24}
"""


def _typed(moment: datetime) -> str:
    """A moment as an operator types it in the site's time (a local hour that occurs twice is avoided)."""
    local = moment.astimezone(SITE)
    if local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset():
        local = (moment - timedelta(hours=1)).astimezone(SITE)
    return f"{local:%Y-%m-%d %H:%M}"


def _local(moment: datetime) -> str:
    return moment.astimezone(SITE).strftime("%Y-%m-%d %H:%M %Z")


@pytest.fixture
def timed(session, make_user, sops_dir):
    (sops_dir / "TIME-CHECK_v1.yaml").write_text(RECORD)
    loader, approver = session.merge(make_user("loader", "qa")), session.merge(make_user("approver", "qa"))
    olivia = session.merge(make_user("olivia", "operator"))
    version = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    sops.approve(session, version, site_timezone="UTC",
                 signer=approver, password=PASSWORD, username=None, require_username=False)
    batch = starting.start_batch(session, codes=["TIME-CHECK"], user=olivia)
    session.commit()

    def perform(step_id: str, raw: dict[str, str], instance: int = 1):
        return steps.perform_step(session, batch, position=0, step_id=step_id, instance=instance,
                                  entry=evaluation.StepInput(raw=raw), signer=olivia, password=PASSWORD,
                                  username=None, require_username=False, tz=SITE)

    return {"session": session, "batch": batch, "perform": perform}


def _stored(session) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(RecordedValue))


def _refused(timed, step_id: str, raw: dict[str, str], instance: int = 1) -> list[str]:
    session = timed["session"]
    before = _stored(session)
    with pytest.raises(ValidationFailed) as caught:
        timed["perform"](step_id, raw, instance)
    session.rollback()
    assert _stored(session) == before  # nothing stored
    return caught.value.problems


def _seed(timed, seeded_at: datetime) -> datetime:
    timed["perform"]("seed", {"seeded_at": _typed(seeded_at), "cells": "190"})
    timed["session"].commit()
    moment = evaluation.recorded_moment(timed["session"], timed["batch"], 0, "seed.seeded_at")
    assert moment is not None
    return moment


# --- a result cannot exist before its sample time plus the method's minimum duration --------------------


def test_a_14_day_culture_result_30_minutes_after_inoculation_is_refused_naming_the_earliest_time(timed):
    inoculated = utcnow() - timedelta(minutes=30)
    _seed(timed, utcnow() - timedelta(days=1))
    typed = _typed(inoculated)
    inoculated_at = datetime.strptime(typed, "%Y-%m-%d %H:%M").replace(tzinfo=SITE)

    [problem] = _refused(timed, "sterility", {"inoculated_at": typed, "result": "No growth"})

    first = inoculated_at + timedelta(hours=336)
    assert problem == (f"14-day culture: a result of 14-day culture cannot exist before {_local(first)} "
                       f"(sampled {_local(inoculated_at)} + 336 h); nothing was stored")
    assert _local(first).endswith((" CET", " CEST"))  # the site's local time with its zone


def test_a_pending_answer_may_be_entered_at_any_time(timed):
    _seed(timed, utcnow() - timedelta(days=1))
    execution = timed["perform"]("sterility", {"inoculated_at": _typed(utcnow() - timedelta(minutes=30)),
                                               "result": "Pending"})
    timed["session"].commit()
    assert execution.current_values()["result"].text == "Pending"


def test_a_result_at_the_earliest_allowed_time_passes_and_a_moment_before_it_is_refused(timed):
    """The service function the separate "result entry" of a pending result reuses: the sample time is
    the one recorded in the step, the time judged is the time of entry."""
    session, batch = timed["session"], timed["batch"]
    _seed(timed, utcnow() - timedelta(days=20))
    timed["perform"]("sterility", {"inoculated_at": _typed(utcnow() - timedelta(hours=2)), "result": "Pending"})
    session.commit()
    step = step_index(batches.records(batch)[0])["sterility"][1]
    result = next(f for f in step.fields if f.id == "result")
    assert isinstance(result, ChoiceField) and result.result_time is not None
    inoculated = batches.find_execution(session, batch, 0, "sterility", 1).current_values()["inoculated_at"].moment
    first = earliest(result.result_time, inoculated)
    entered = [evaluation.Evaluated("result", "choice", "No growth", values.restore(result, "No growth"),
                                    None, [])]

    def problem(at: datetime) -> str | None:
        return evaluation.result_time_problem(session, batch, 0, step, "result", at, entered, SITE)

    assert problem(first) is None
    assert problem(first + timedelta(days=3)) is None
    assert f"cannot exist before {_local(first)}" in (problem(first - timedelta(microseconds=1)) or "")


def test_a_result_whose_sample_is_an_earlier_steps_time_is_judged_from_it(timed):
    _seed(timed, utcnow() - timedelta(hours=2))
    timed["perform"]("count", {"counted_at": _typed(utcnow() - timedelta(hours=1)), "cells": "200"})
    timed["perform"]("sterility", {"inoculated_at": _typed(utcnow() - timedelta(minutes=50)), "result": "Pending"})
    timed["session"].commit()

    [problem] = _refused(timed, "viability_assay", {"viability": "95.0"})
    assert "a result of 24-hour viability assay cannot exist before" in problem


def test_a_result_passes_once_its_minimum_duration_has_elapsed(timed):
    _seed(timed, utcnow() - timedelta(days=2))
    timed["perform"]("count", {"counted_at": _typed(utcnow() - timedelta(days=1)), "cells": "300"})
    timed["perform"]("sterility", {"inoculated_at": _typed(utcnow() - timedelta(days=1, minutes=1)),
                                   "result": "Pending"})
    execution = timed["perform"]("viability_assay", {"viability": "95.0"})
    timed["session"].commit()
    assert execution.current_values()["viability"].text == "95.0"


# --- a date-time cannot precede the one it depends on, nor lie in the future ----------------------------


def test_a_count_before_the_seeding_is_refused_naming_both_times(timed):
    seeded = _seed(timed, utcnow() - timedelta(days=2))
    typed = _typed(seeded - timedelta(hours=3))
    counted = datetime.strptime(typed, "%Y-%m-%d %H:%M").replace(tzinfo=SITE)

    [problem] = _refused(timed, "count", {"counted_at": typed, "cells": "200"})

    assert problem == (f"Counted at: {_local(counted)} is before seed.seeded_at ({_local(seeded)}); it cannot have "
                       "happened before it. Nothing was stored.")


def test_a_reading_before_its_sample_in_the_same_step_is_refused(timed):
    _seed(timed, utcnow() - timedelta(days=20))
    inoculated = utcnow() - timedelta(days=15)
    [problem] = _refused(timed, "sterility", {"inoculated_at": _typed(inoculated),
                                              "read_at": _typed(inoculated - timedelta(hours=1)),
                                              "result": "No growth"})
    assert problem.startswith("Culture read: ") and " is before inoculated_at (" in problem


def test_a_date_time_in_the_future_is_refused(timed):
    _seed(timed, utcnow() - timedelta(days=2))
    future = utcnow() + evaluation.FUTURE_TOLERANCE + timedelta(minutes=30)

    [problem] = _refused(timed, "count", {"counted_at": _typed(future), "cells": "200"})

    assert problem == f"Counted at: {_typed(future)} is in the future; record the time it happened"


# --- elapsed time is calculated from recorded date-times, and the growth chart plots it ----------------


def test_the_culture_day_is_calculated_from_the_recorded_times_and_the_growth_chart_plots_it(timed):
    session, batch = timed["session"], timed["batch"]
    seeded = _seed(timed, utcnow() - timedelta(days=8))
    execution = timed["perform"]("count", {"counted_at": _typed(seeded + timedelta(days=7, hours=6)),
                                           "cells": "2600"})
    session.commit()

    recorded = execution.current_values()
    assert (recorded["culture_day"].text, recorded["culture_hours"].text) == ("7.25", "174.0")
    [chart] = growth.charts(session, batch)
    assert [(p.label, p.day, p.value) for p in chart.points] == [
        ("Seeded", Decimal(0), Decimal(190)), ("Count 1", Decimal("7.25"), Decimal(2600))]


def test_a_corrected_seeding_time_recalculates_the_culture_day_and_moves_the_chart_point(timed, make_user):
    session, batch = timed["session"], timed["batch"]
    seeded = _seed(timed, utcnow() - timedelta(days=9))
    timed["perform"]("count", {"counted_at": _typed(seeded + timedelta(days=7, hours=6)), "cells": "2600"})
    session.commit()
    seed = batches.find_execution(session, batch, 0, "seed", 1)
    oscar = session.merge(make_user("oscar", "operator"))

    steps.correct_value(session, seed, field_id="seeded_at", raw=_typed(seeded - timedelta(days=1)),
                        reason="seeding time mistyped", field_comment="", signer=oscar, password=PASSWORD,
                        username=None, require_username=False, tz=SITE)
    session.commit()

    count = batches.find_execution(session, batch, 0, "count", 1).current_values()
    assert count["culture_day"].text == "8.25" and count["culture_day"].correction_reason.startswith("recalculated")
    [chart] = growth.charts(session, batch)
    assert chart.points[-1].day == Decimal("8.25")
