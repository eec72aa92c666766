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
    record = parse_definition((RESOURCE_ROOT / "sops" / "nk" / "NK-FORMULATE_v2.yaml").read_text(), "f.yaml")
    fields = {f.id: f for f in step_index(record)["dose_plan"][1].fields}
    assert fields["cd3_per_kg"].refuse_outside_limits and fields["endotoxin_per_kg"].refuse_outside_limits


def test_a_value_over_a_refusing_limit_stores_nothing(session, make_user, sops_dir):
    (sops_dir / "HARD-LIMIT_v1.yaml").write_text(RECORD)
    loader, approver = session.merge(make_user("loader", "qa")), session.merge(make_user("approver", "qa"))
    olivia = session.merge(make_user("olivia", "operator"))
    version = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    sops.approve(session, version, site_timezone="UTC",
                 signer=approver, password=PASSWORD, username=None, require_username=False)
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
    sops.approve(session, version, site_timezone="UTC",
                 signer=approver, password=PASSWORD, username=None, require_username=False)
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


def test_the_nk_records_check_the_limits_of_the_trial_configuration_in_force(session, make_user, sops_dir):
    """A new approved trial configuration with a stricter residual T-cell limit: NK-FORMULATE refuses the same
    product the previous configuration accepted; no master record changed. (In NK-TRIAL v3's order the
    formulation comes before the release record, so a refused formulation never reaches release testing;
    NK-RELEASE v3's flag under a stricter limit is tests/domain/test_final_product_release.py's.)"""
    import shutil

    from mfg.demo import nk_batch as demo_nk
    from mfg.demo import seed as demo
    from mfg.models import utcnow
    from mfg.services import batches

    shutil.copytree(RESOURCE_ROOT / "sops" / "nk", sops_dir / "nk")
    shutil.copytree(RESOURCE_ROOT / "sops" / "trial", sops_dir / "trial")
    v5 = (RESOURCE_ROOT / "sops" / "trial" / "NK-TRIAL_v5.yaml").read_text()
    stricter = v5.replace("version: 5\n", "version: 6\n").replace("cd3_limit_per_kg: 200000", "cd3_limit_per_kg: 5000")
    (sops_dir / "trial" / "NK-TRIAL_v6.yaml").write_text(stricter)
    loader, approver = session.merge(make_user("loader", "qa")), session.merge(make_user("approver", "qa"))
    users = {name: session.merge(make_user(name, roles)) for name, roles in (
        ("clara", "clinical"), ("olivia", "operator"), ("oscar", "operator"))}
    for version in sops.load_directory(session, sops_dir, loader=loader).loaded:
        sops.approve(session, version, site_timezone="UTC",
                     signer=approver, password=PASSWORD, username=None, require_username=False)
    assert sops.trial_configuration(session).cd3_limit_per_kg == 5000  # v6 is in force
    demo.seed_master_data(session)
    subject = demo_nk.seed_demo_subject(session, users["clara"], PASSWORD)  # assigned under v6
    run = dict(performer=users["olivia"], verifier=users["oscar"], password=PASSWORD, tz=ZoneInfo("UTC"))
    batch = demo_nk.run_nk_batch(session, subject=subject, until=("NK-FORMULATE", "dose_plan"), **run)
    sign = dict(signer=users["olivia"], password=PASSWORD, username=None, require_username=False, tz=ZoneInfo("UTC"))
    session.commit()
    item = next(i for i in batches.open_steps(session, batch) if i.step.id == "dose_plan")
    entry = demo_nk.entry_for("NK-FORMULATE", "dose_plan", 1, batch=batch, subject=subject, bags=[],
                              now=utcnow(), tz=ZoneInfo("UTC"))
    with pytest.raises(ValidationFailed, match=r"REFUSED: Residual T cells per kg \d+ CD3\+ cells/kg is not below "
                                               r"5000 CD3\+ cells/kg \(trial.cd3_limit_per_kg\)"):
        steps.perform_step(session, batch, position=item.ref.position, step_id="dose_plan", instance=1,
                           entry=entry, **sign)  # NK-FORMULATE refuses it outright
