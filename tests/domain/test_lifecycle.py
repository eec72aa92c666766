"""The batch lifecycle: every pair of statuses, every decision from every status, cancellation, and the
infusion and hand-off stops (domain.lifecycle)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from mfg.domain import lifecycle
from mfg.domain.errors import InvalidTransition
from mfg.domain.lifecycle import BATCH_STATUS, BagState, DecisionFacts
from mfg.domain.refusal import Person

STATUSES = list(BATCH_STATUS.allowed)
QA = Person(1, frozenset({"qa"}), "Quinn Quality")
OPERATOR = Person(2, frozenset({"operator"}), "Olivia Operator")
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

# The lifecycle as the issue states it, written out pair by pair: the table must say exactly this.
EXPECTED = {
    ("created", "in_progress"), ("created", "rejected"), ("created", "cancelled"),
    ("in_progress", "awaiting_review"), ("in_progress", "rejected"),
    ("awaiting_review", "released"), ("awaiting_review", "conditionally_released"), ("awaiting_review", "rejected"),
    ("awaiting_review", "in_progress"),
    ("conditionally_released", "released"), ("conditionally_released", "under_investigation"),
    ("released", "under_investigation"),
    ("under_investigation", "released"), ("under_investigation", "rejected"), ("under_investigation", "recalled"),
}


def test_the_statuses_are_the_lifecycles() -> None:
    assert set(STATUSES) == {"created", "in_progress", "awaiting_review", "conditionally_released", "released",
                             "under_investigation", "rejected", "recalled", "cancelled"}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(STATUSES, STATUSES)))
def test_every_pair_of_statuses_is_allowed_exactly_as_the_lifecycle_says(current: str, target: str) -> None:
    if (current, target) in EXPECTED:
        BATCH_STATUS.check(current, target)
    else:
        with pytest.raises(InvalidTransition, match=f"cannot go from '{current}' to '{target}'"):
            BATCH_STATUS.check(current, target)


def test_rejected_recalled_and_cancelled_are_final() -> None:
    assert all(not BATCH_STATUS.allowed[s] for s in ("rejected", "recalled", "cancelled"))


def _facts(status: str, **override: object) -> DecisionFacts:
    values: dict = dict(lot="L1", status=status, participant=False, open_deviations=(), unreviewed=0,
                        all_complete=True, pending=(), failed=())
    values.update(override)
    return DecisionFacts(**values)


def _clean_facts(status: str, decision: str) -> DecisionFacts:
    """Facts under which ``decision`` is not refused for anything but the move itself."""
    pending = ("Sterility",) if decision == "conditionally_released" else ()
    return _facts(status, pending=pending)


@pytest.mark.parametrize(("status", "decision"), list(itertools.product(STATUSES, lifecycle.DECISIONS)))
def test_every_decision_from_every_status_follows_the_table_and_says_why_not(status: str, decision: str) -> None:
    refusals = lifecycle.decide(QA, decision, _clean_facts(status, decision))
    if (status, decision) in EXPECTED:
        assert refusals == []
    else:
        assert [r.kind for r in refusals] == ["state"]
        assert f"batch L1 is {status.replace('_', ' ')}: it cannot be {decision.replace('_', ' ')}" in refusals[0].text


def test_a_conditionally_released_or_released_batch_is_put_under_investigation_before_rejection_or_recall() -> None:
    for status in ("conditionally_released", "released"):
        for decision in ("rejected", "recalled"):
            [refusal] = lifecycle.decide(QA, decision, _facts(status))
            assert refusal.text.endswith("place it under investigation first")


def test_the_final_release_needs_every_pending_result_entered_verified_and_within_specification() -> None:
    [pending] = lifecycle.decide(QA, "released", _facts("conditionally_released", pending=("Sterility",)))
    assert "Results are still pending (Sterility): enter each result and have it verified first" in pending.text
    failed = lifecycle.decide(QA, "released", _facts("under_investigation", failed=("Sterility = Growth",)))
    assert [r.text for r in failed] == ["Results are outside their specification (Sterility = Growth): the batch "
                                        "cannot be released."]
    assert lifecycle.decide(QA, "released", _facts("conditionally_released")) == []


def test_the_decider_did_no_step_except_to_protect_patients() -> None:
    for decision in ("released", "rejected", "recalled"):
        status = "awaiting_review" if decision != "recalled" else "under_investigation"
        refusals = lifecycle.decide(QA, decision, _facts(status, participant=True))
        assert [r.kind for r in refusals] == ["duty"]
    assert lifecycle.decide(QA, "under_investigation", _facts("released", participant=True)) == []
    assert [r.kind for r in lifecycle.decide(OPERATOR, "under_investigation", _facts("released"))] == ["role"]


@pytest.mark.parametrize("status", STATUSES)
def test_only_a_batch_with_no_step_performed_is_cancelled(status: str) -> None:
    refusals = lifecycle.cancel(OPERATOR, lot="L1", status=status)
    if status == "created":
        assert refusals == []
        assert lifecycle.cancel(QA, lot="L1", status=status) == []
    else:
        assert [r.kind for r in refusals] == ["state"] and "QA rejects it instead" in refusals[0].text
    clinical = Person(3, frozenset({"clinical"}), "Clara")
    assert "role" in [r.kind for r in lifecycle.cancel(clinical, lot="L1", status=status)]


def _bag(**override: object) -> BagState:
    values: dict = dict(code="S1234A00 (bag A0)", blocked=None, expires_at=NOW + timedelta(hours=1), infused_at=None)
    values.update(override)
    return BagState(**values)


def _show(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@pytest.mark.parametrize("status", STATUSES)
def test_only_a_released_bag_neither_blocked_nor_expired_may_be_infused(status: str) -> None:
    stop = lifecycle.infusion_stop(lot="L1", status=status, bag=_bag(), now=NOW, show=_show)
    assert (stop is None) == (status in ("released", "conditionally_released"))
    if stop:
        assert "Do not infuse" in stop.next_action and stop.title == "PRODUCT NOT RELEASED"
        assert stop.expected.startswith("a bag of a product QA has released") and "bag A" in stop.scanned
    blocked = lifecycle.infusion_stop(lot="L1", status=status, bag=_bag(blocked="batch under investigation"),
                                      now=NOW, show=_show)
    assert blocked is not None and "IS BLOCKED (batch under investigation)" in blocked.message


def test_an_expired_bag_is_a_stop_at_its_expiry_to_the_minute() -> None:
    bag = _bag(expires_at=NOW)
    assert "EXPIRED at 2026-12-06 12:00 UTC" in str(lifecycle.infusion_stop(lot="L1", status="released", bag=bag,
                                                                            now=NOW, show=_show) or "")
    assert lifecycle.infusion_stop(lot="L1", status="released", bag=bag, now=NOW - timedelta(seconds=1),
                                   show=_show) is None


def test_a_hand_off_stops_on_a_blocked_bag_or_when_every_bag_left_has_expired() -> None:
    infused = _bag(code="A", infused_at=NOW - timedelta(hours=2), expires_at=NOW - timedelta(hours=1))
    assert lifecycle.handoff_stop(lot="L1", bags=[infused, _bag(code="B")], now=NOW, show=_show) is None
    stop = lifecycle.handoff_stop(lot="L1", bags=[infused, _bag(code="B", blocked="DEV-1")], now=NOW, show=_show)
    assert stop is not None and "PRODUCT L1 IS BLOCKED (bags B: DEV-1)" in stop.message
    expired = lifecycle.handoff_stop(lot="L1", bags=[infused, _bag(code="B", expires_at=NOW)], now=NOW, show=_show)
    assert expired is not None and "EXPIRED" in expired.message
    # a bag already infused is not handed on: its block or expiry stops nothing
    assert lifecycle.handoff_stop(lot="L1", bags=[infused], now=NOW, show=_show) is None
