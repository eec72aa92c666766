"""QA review by exception, deviation closure and the signed batch decision, on the demo NK batch."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from mfg.demo import nk_batch as demo_nk
from mfg.demo import seed as demo
from mfg.domain.errors import ConflictError, PermissionDenied, ValidationFailed
from mfg.models import BatchDecision, Signature, utcnow
from mfg.services import batches, deviations, results, review, signatures, steps
from tests.support import PASSWORD, app_refusal, assert_audit_intact

from .test_demo_nk import nk_demo  # noqa: F401 - the fixture

UTC = ZoneInfo("UTC")


def _sign(user):
    return {"signer": user, "password": PASSWORD, "username": user.username, "require_username": True}


def test_qa_reviews_by_exception_and_releases_conditionally_then_finally(app, nk_demo, session,  # noqa: F811
                                                                         make_user):
    quinn = session.merge(make_user("quinn", "qa", full_name="Quinn Quality"))
    victor = session.merge(make_user("victor", "operator,qa", full_name="Victor Both"))
    olivia = nk_demo["olivia"]
    demo.seed_master_data(session)
    ended = utcnow() - timedelta(days=15)  # the process recorded 15 days back: its 14-day results can be read today
    subject = demo_nk.seed_demo_subject(session, nk_demo["clara"], PASSWORD, today=ended.date())
    batch = demo_nk.run_nk_batch(session, subject=subject, performer=olivia, verifier=victor, password=PASSWORD,
                                 tz=UTC, now=ended)
    session.commit()
    assert batch.status == "awaiting_review"

    # what QA must look at: the pending sterility results, the 14-day culture and its preliminary read (NK-RELEASE
    # v3); the demo batch has nothing out of limit
    items = review.exceptions(session, batch)
    assert [(i.kind, i.title) for i in items] == [
        ("pending result", "Sterility (14-day culture)"),
        ("pending result", "Sterility (preliminary automated-culture read): Sterility (preliminary read)")]
    deviation = deviations.open_by_hand(session, batch, description="Label printer jammed once; label reprinted",
                                    user=olivia)
    session.commit()

    # the releaser performed or verified no step: victor verified every step, the service refuses him
    with pytest.raises(PermissionDenied, match="Victor Both performed or verified a step"):
        review.decide(session, batch, decision="conditionally_released", comment="", **_sign(victor))
    with pytest.raises(PermissionDenied, match="Only QA"):
        review.decide(session, batch, decision="released", comment="", **_sign(olivia))
    with pytest.raises(ValidationFailed) as refused:
        review.decide(session, batch, decision="released", comment="", **_sign(quinn))
    problems = " ".join(refused.value.problems)
    assert f"Deviations still open: {deviation.number}" in problems and "not yet marked reviewed" in problems
    assert ("Results are still pending (Sterility (14-day culture); Sterility (preliminary automated-culture read): "
            "Sterility (preliminary read))") in problems
    session.rollback()

    # the deviation: classified and investigated, closed with a signature bound to the findings
    with pytest.raises(ValidationFailed, match="must be classified"):
        deviations.close(session, deviation, **_sign(quinn))
    with pytest.raises(ValidationFailed, match="A major deviation needs a CAPA reference"):
        deviations.investigate(session, deviation, classification="major", investigation="jam",
                               root_cause="worn roller",
                           impact="none", capa_reference="", user=quinn)
    deviations.investigate(session, deviation, classification="minor", investigation="Printer log reviewed",
                       root_cause="Worn feed roller", impact="No impact on this or other batches: the reprint was "
                       "checked and scanned back", capa_reference="", user=quinn)
    deviations.close(session, deviation, **_sign(quinn))
    session.commit()
    [closure] = signatures.for_record(session, deviation)
    assert closure.meaning == "approved" and '"root_cause":"Worn feed roller"' in closure.content

    # every exception marked reviewed; full release still refused while sterility is pending
    for item in review.exceptions(session, batch):
        review.mark_reviewed(session, batch, item.key, user=quinn, comment="seen")
    session.commit()
    with pytest.raises(ConflictError, match="already marked reviewed"):
        review.mark_reviewed(session, batch, items[0].key, user=quinn)
    session.rollback()
    with pytest.raises(ValidationFailed, match="Results are still pending"):
        review.decide(session, batch, decision="released", comment="", **_sign(quinn))
    session.rollback()
    decision = review.decide(session, batch, decision="conditionally_released", comment="", **_sign(quinn))
    session.commit()
    assert batch.status == "conditionally_released"
    assert "Sterility (14-day culture) (recorded as Pending)" in decision.pending
    assert signatures.for_record(session, decision)[0].meaning == "released"

    # the 14-day result arrives: no correction of the record any more; its own result entry, verified
    sterility = next(ex for ex in batches.executions(session, batch) if ex.step_id == "sterility")
    with pytest.raises(ValidationFailed, match="result entry, not as a correction"):
        steps.correct_value(session, sterility, field_id="result", raw="No growth", reason="14-day culture read",
                            field_comment="", tz=UTC, **_sign(olivia))
    session.rollback()
    pending, preliminary = results.of_batch(session, batch)
    assert [(p.label, p.status) for p in (pending, preliminary)] == [
        ("Sterility (14-day culture): Sterility (14-day culture)", "pending"),
        ("Sterility (preliminary automated-culture read): Sterility (preliminary read)", "pending")]
    results.enter_result(session, pending, raw="No growth", comment="", tz=UTC, **_sign(olivia))
    results.enter_result(session, preliminary, raw="No growth at preliminary read", comment="", tz=UTC,
                         **_sign(olivia))
    session.commit()
    assert batch.status == "conditionally_released" and pending.status == "awaiting_verification"
    with pytest.raises(ValidationFailed, match="Results are still pending"):
        review.decide(session, batch, decision="released", comment="", **_sign(quinn))
    session.rollback()
    with pytest.raises(PermissionDenied, match="You entered this result"):
        results.verify_result(session, pending, **_sign(olivia))
    session.rollback()
    nora = session.merge(make_user("nora", "operator", full_name="Nora Second"))
    results.verify_result(session, pending, **_sign(nora))
    session.commit()
    with pytest.raises(ValidationFailed, match="Results are still pending .*preliminary"):
        review.decide(session, batch, decision="released", comment="", **_sign(quinn))
    session.rollback()
    results.verify_result(session, preliminary, **_sign(nora))
    session.commit()
    # the pending value stays in the step's record; the result is its own signed record
    assert sterility.current_values()["result"].text == "Pending"
    assert [(s.username, s.meaning) for s in signatures.for_record(session, pending)] == \
        [("olivia", "performed"), ("nora", "verified")]
    new_items = [i for i in review.exceptions(session, batch) if i.key not in review.marks(session, batch)]
    assert [(i.kind, i.detail) for i in new_items] == [("result entry", "Pending → No growth"),
                                                       ("result entry", "Pending → No growth at preliminary read")]
    with pytest.raises(ValidationFailed, match="2 review item"):
        review.decide(session, batch, decision="released", comment="", **_sign(quinn))
    session.rollback()
    for item in new_items:
        review.mark_reviewed(session, batch, item.key, user=quinn)
    review.decide(session, batch, decision="released", comment="final results in specification", **_sign(quinn))
    session.commit()
    assert batch.status == "released"
    assert [d.decision for d in review.decisions(session, batch)] == ["conditionally_released", "released"]
    assert signatures.check_all(session)[1] == []
    assert_audit_intact(session)
    with pytest.raises(sa.exc.DBAPIError, match=app_refusal(app, "UPDATE", "batch_decision")):
        session.execute(sa.update(BatchDecision).values(comment="changed"))
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(Signature).where(
        Signature.record_type == "batch_decision")) == 2
