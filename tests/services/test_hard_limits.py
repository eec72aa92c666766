"""Calculated limits that refuse instead of flag (the residual T-cell cap of a formulation)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from mfg.config import RESOURCE_ROOT
from mfg.domain.errors import ValidationFailed
from mfg.domain.sop_schema import parse_definition, step_index
from mfg.models import Deviation, RecordedValue
from mfg.services import evaluation, sops, starting, steps
from tests.support import PASSWORD

RECORD = """\
kind: master_batch_record
code: HARD-LIMIT
version: 1
title: Hard limit test
stages:
  - id: only
    title: Only
    steps:
      - id: formulate
        title: Formulate
        fields:
          - {id: cells, type: number, label: Cells, unit: "1", decimals: 0}
          - {id: weight, type: number, label: Weight, unit: kg, decimals: 1}
          - id: per_kg
            type: calculated
            label: Cells per kg
            unit: cells/kg
            decimals: 0
            max: 199999
            refuse_outside_limits: true
            expression: cells / weight
"""


def test_nk_formulation_refuses_rather_than_flags_the_per_kg_limits():
    record = parse_definition((RESOURCE_ROOT / "sops" / "nk" / "NK-FORMULATE_v1.yaml").read_text(), "f.yaml")
    fields = {f.id: f for f in step_index(record)["dose_plan"][1].fields}
    assert fields["cd3_per_kg"].refuse_outside_limits and fields["endotoxin_per_kg"].refuse_outside_limits


def test_a_value_over_a_refusing_limit_stores_nothing(session, make_user, sops_dir):
    (sops_dir / "HARD-LIMIT_v1.yaml").write_text(RECORD)
    loader, approver = session.merge(make_user("loader", "qa")), session.merge(make_user("approver", "qa"))
    olivia = session.merge(make_user("olivia", "operator"))
    version = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    sops.approve(session, version, signer=approver, password=PASSWORD, username=None, require_username=False)
    batch = starting.start_batch(session, codes=["HARD-LIMIT"], user=olivia)
    session.commit()

    def submit(cells):
        return steps.perform_step(session, batch, position=0, step_id="formulate", instance=1,
                                    entry=evaluation.StepInput(raw={"cells": cells, "weight": "62.4"},
                                                            field_comments={"per_kg": "noted"}),
                                    signer=olivia, password=PASSWORD, username=None, require_username=False,
                                    tz=ZoneInfo("UTC"))

    with pytest.raises(ValidationFailed, match="REFUSED: .*above the maximum"):
        submit("12480000")  # 12 480 000 / 62.4 = 200 000 cells/kg: at the cap, refused
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(RecordedValue)) == 0
    assert session.scalar(sa.select(sa.func.count()).select_from(Deviation)) == 0
    ex = submit("12479900")  # 199 998.4 -> 199 998 cells/kg: accepted
    session.commit()
    assert ex.current_values()["per_kg"].text == "199998"


CHAIN = """\
kind: master_batch_record
code: HARD-CHAIN
version: 1
title: Hard limit through a correction
stages:
  - id: only
    title: Only
    steps:
      - id: count
        title: Count
        fields:
          - {id: cells, type: number, label: Cells, unit: "1", decimals: 0}
      - id: plan
        title: Plan
        fields:
          - {id: note, type: text, label: Note, required: false}
          - id: per_kg
            type: calculated
            label: Cells per kg
            unit: cells/kg
            decimals: 0
            max: 199999
            refuse_outside_limits: true
            expression: count.cells / 62.4
"""


def test_a_correction_that_would_break_a_refusing_limit_downstream_is_refused(session, make_user, sops_dir):
    (sops_dir / "HARD-CHAIN_v1.yaml").write_text(CHAIN)
    loader, approver = session.merge(make_user("loader", "qa")), session.merge(make_user("approver", "qa"))
    olivia = session.merge(make_user("olivia", "operator"))
    version = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    sops.approve(session, version, signer=approver, password=PASSWORD, username=None, require_username=False)
    batch = starting.start_batch(session, codes=["HARD-CHAIN"], user=olivia)
    sign = dict(signer=olivia, password=PASSWORD, username=None, require_username=False, tz=ZoneInfo("UTC"))
    count = steps.perform_step(session, batch, position=0, step_id="count", instance=1,
                                 entry=evaluation.StepInput(raw={"cells": "1000000"}), **sign)
    steps.perform_step(session, batch, position=0, step_id="plan", instance=1,
                         entry=evaluation.StepInput(raw={"note": ""}), **sign)
    session.commit()
    before = session.scalar(sa.select(sa.func.count()).select_from(RecordedValue))
    with pytest.raises(ValidationFailed, match="REFUSED: this correction would make Plan"):
        steps.correct_value(session, count, field_id="cells", raw="12480000", reason="recount",
                              field_comment="", **sign)
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(RecordedValue)) == before
