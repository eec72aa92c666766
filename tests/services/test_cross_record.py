"""A value named from another record of the batch (NK-FORMULATE v4's dose plan names the harvest's NK and CD3+
fractions in NK-EXPAND) is never left stale: correcting the harvest recalculates the dose plan, which waits
for a new signature; once the bags were made from it, the correction is refused and nothing is stored."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from mfg.demo import nk_batch as demo_nk
from mfg.demo import seed as demo
from mfg.domain.errors import ValidationFailed
from mfg.models import StepExecution
from mfg.services import bags, steps
from tests.services.test_demo_nk import nk_demo  # noqa: F401 - the fixture
from tests.support import PASSWORD

UTC = ZoneInfo("UTC")


def _execution(session, batch, step_id: str) -> StepExecution:  # noqa: ANN001
    return session.scalars(sa.select(StepExecution).where(StepExecution.batch_id == batch.id,
                                                          StepExecution.step_id == step_id)).one()


def _correct_harvest_purity(session, batch, olivia, raw: str) -> None:  # noqa: ANN001
    steps.correct_value(session, _execution(session, batch, "harvest_culture"), field_id="nk_purity", raw=raw,
                        reason="transcription error on the flow report", field_comment="", signer=olivia,
                        password=PASSWORD, username=None, require_username=False, tz=UTC)


def test_correcting_the_harvest_recalculates_the_dose_plan_and_is_refused_once_bags_are_made(
        nk_demo, session) -> None:  # noqa: F811
    olivia, oscar = nk_demo["olivia"], nk_demo["oscar"]
    demo.seed_master_data(session)
    subject = demo_nk.seed_demo_subject(session, nk_demo["clara"], PASSWORD)
    batch = demo_nk.run_nk_batch(session, subject=subject, performer=olivia, verifier=oscar, password=PASSWORD,
                                 tz=UTC, until=("NK-FORMULATE", "bag_preparation"))
    session.commit()
    plan = _execution(session, batch, "dose_plan")
    assert {f: plan.current_values()[f].text for f in ("nk_pct", "volume_ml")} == {"nk_pct": "93.0",
                                                                                    "volume_ml": "13.4"}

    _correct_harvest_purity(session, batch, olivia, "80.0")
    session.commit()
    session.refresh(plan)
    assert plan.current_values()["nk_pct"].text == "80.0"
    assert plan.current_values()["volume_ml"].text == "15.6"  # 187.2 x 10^6 / (15 x 10^6/mL x 80 %)
    assert plan.status == "needs_signature"

    harvest = _execution(session, batch, "harvest_culture")
    if harvest.status == "awaiting_verification":  # a corrected value is verified again
        steps.verify_step(session, harvest, signer=oscar, password=PASSWORD, username=None, require_username=False)
    steps.resign_step(session, plan, signer=olivia, password=PASSWORD, username=None, require_username=False)
    steps.verify_step(session, plan, signer=oscar, password=PASSWORD, username=None, require_username=False)
    demo_nk.continue_nk_batch(session, batch, performer=olivia, verifier=oscar, password=PASSWORD, tz=UTC,
                              until=("NK-FORMULATE", "print_labels"))
    session.commit()
    assert bags.of_batch(session, batch)  # the bags are made from the recalculated dose plan
    with pytest.raises(ValidationFailed, match="from which the bags were made"):
        _correct_harvest_purity(session, batch, olivia, "93.0")
    session.rollback()
    session.refresh(plan)
    assert plan.current_values()["nk_pct"].text == "80.0"
