"""Scan first (issue 17, item 3) and the facts of a stop (item 1), on the generic demo process, on both
databases: a code that does not exist is "not found, scan again" with no deviation and nothing stored; an
item that exists but may not be used is refused, audited and opens a deviation (through the unit of work,
as every edge runs it); a misread check character is "scan again"; an identity stop names its facts and
the deviation it opened."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from mfg.domain.errors import IdentityMismatch, ItemRefused, ValidationFailed
from mfg.domain.sop_schema import step_index
from mfg.models import AuditEntry, Deviation, StepExecution
from mfg.services import accounts, batches, evaluation, masterdata
from mfg.unit_of_work import unit_of_work
from tests.services.test_batch_engine import GOOD, perform, plant  # noqa: F401  (the fixture)


def _count(session, model, *where) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def _identify(plant, raw):  # noqa: F811
    """The identify step as an edge runs it: one unit of work acting as Olivia."""
    with unit_of_work(plant["session"], actor=plant["olivia"], policy=accounts.Policy()):
        perform(plant, "identify_material", raw)


@pytest.fixture
def identify(plant):  # noqa: F811
    session = plant["session"]
    perform(plant, "line_clearance", GOOD["line_clearance"]())
    session.commit()
    masterdata.receive_lot(session, material="Phosphate-buffered saline", lot_number="PBS-Q",
                           expiry=date.today() + timedelta(days=100), qc_status="quarantine")
    session.commit()
    return plant


def test_an_unknown_lot_is_not_found_scan_again_with_no_deviation_and_nothing_stored(identify):
    session, lot = identify["session"], identify["batch"].lot
    for typo in ("PBS-8", "PBS7", "pbs-7"):
        with pytest.raises(ValidationFailed, match=rf"lot '{typo}' not found \(not received\): scan again") as info:
            _identify(identify, {"lot_scan": lot, "buffer": typo})
        assert not isinstance(info.value, ItemRefused)
    assert _count(session, Deviation) == 0
    assert _count(session, AuditEntry, AuditEntry.action == "item.refused") == 0
    assert _count(session, StepExecution, StepExecution.step_id == "identify_material") == 0


@pytest.mark.parametrize("buffer,why", [("PBS-OLD", "expired on"), ("PBS-Q", "is quarantine, not released by QC")])
def test_an_existing_lot_that_may_not_be_used_is_refused_and_opens_a_deviation(identify, buffer, why):
    session, lot = identify["session"], identify["batch"].lot
    with pytest.raises(ItemRefused, match=why) as info:
        _identify(identify, {"lot_scan": lot, "buffer": buffer})
    assert "a deviation has been opened" in info.value.problems[0]
    deviation = session.scalars(sa.select(Deviation)).one()
    assert info.value.deviation == deviation.number
    assert deviation.origin == "material" and deviation.step_id == "identify_material"
    assert buffer in deviation.description
    assert _count(session, AuditEntry, AuditEntry.action == "item.refused") == 1
    assert _count(session, StepExecution, StepExecution.step_id == "identify_material") == 0


def test_unknown_equipment_is_not_found_and_equipment_out_of_calibration_is_a_deviation(plant):  # noqa: F811
    session = plant["session"]
    raw = GOOD["line_clearance"]()
    with unit_of_work(session, actor=plant["olivia"], policy=accounts.Policy()), \
            pytest.raises(ValidationFailed, match="equipment 'BSC-09' not found"):
        perform(plant, "line_clearance", raw | {"cabinet": "BSC-09"})
    assert _count(session, Deviation) == 0
    with pytest.raises(ItemRefused, match="out of calibration"), \
            unit_of_work(session, actor=plant["olivia"], policy=accounts.Policy()):
        perform(plant, "line_clearance", raw | {"cabinet": "BSC-02"})
    assert _count(session, Deviation, Deviation.origin == "material") == 1
    assert _count(session, StepExecution) == 0


def test_the_live_check_says_scan_again_for_a_misread_and_not_found_and_never_whether_it_matches(identify):
    session, batch = identify["session"], identify["batch"]
    _stage, step = step_index(batches.records(batch)[0])["identify_material"]
    fields = {f.id: f for f in step.fields}
    assert evaluation.misread(session, fields["buffer"], "PBS-8") == [
        "Buffer lot: Phosphate-buffered saline lot 'PBS-8' not found (not received): scan again"]
    assert evaluation.misread(session, fields["buffer"], "PBS-Q") == []  # exists: judged on signing, a deviation
    assert evaluation.misread(session, fields["lot_scan"], "DEMO-PROC-1999-0001") == []  # a wrong lot: on signing
    assert _count(session, Deviation) == 0


def test_an_identity_stop_names_expected_scanned_subject_next_action_and_its_deviation(identify):
    session, lot = identify["session"], identify["batch"].lot
    with pytest.raises(IdentityMismatch) as info:
        _identify(identify, {"lot_scan": "DEMO-PROC-1999-0001", "buffer": "PBS-7"})
    stop = info.value.stop
    assert stop.title == "IDENTITY MISMATCH" and stop.expected == f"lot {lot}"
    assert stop.scanned == "DEMO-PROC-1999-0001" and stop.subject.startswith("none")
    assert "do not continue with this container" in stop.next_action and "call QA" in stop.next_action
    assert info.value.fields == ("lot_scan",)
    assert info.value.deviation == session.scalars(sa.select(Deviation)).one().number
    assert _count(session, AuditEntry, AuditEntry.action == "identity.mismatch") == 1


def test_a_refused_item_sent_again_with_the_same_claim_opens_one_deviation(identify):
    """The edge's one-time claim (a web form's token) is made in the commit that records the refused item, as for
    a hard stop: the same submission sent again (a reload, a double tap) fails on the claim and records nothing."""
    from sqlalchemy.exc import IntegrityError

    from mfg.models import FormSubmission, utcnow

    session, lot = identify["session"], identify["batch"].lot

    def spend(s):
        s.add(FormSubmission(token="the-same-submission", user_id=None, endpoint="test", created_at=utcnow()))
        s.flush()

    with pytest.raises(ItemRefused):
        with unit_of_work(session, actor=identify["olivia"], policy=accounts.Policy(), spend=spend):
            perform(identify, "identify_material", {"lot_scan": lot, "buffer": "PBS-Q"})
    with pytest.raises(IntegrityError):
        with unit_of_work(session, actor=identify["olivia"], policy=accounts.Policy(), spend=spend):
            perform(identify, "identify_material", {"lot_scan": lot, "buffer": "PBS-Q"})
    assert _count(session, Deviation) == 1
    assert _count(session, AuditEntry, AuditEntry.action == "item.refused") == 1
    assert _count(session, FormSubmission) == 1
