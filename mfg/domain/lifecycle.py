"""The batch lifecycle: its statuses, the one transition table, and the guards of every move.

    in process (created, in_progress) -> in review (awaiting_review) -> released
                                                                     -> conditionally released -> released
    conditionally released, released -> under investigation (a result failed, or a complaint arrived)
    under investigation -> released | rejected | recalled
    in process or in review -> rejected;  created -> cancelled

NK products are infused before the 14-day sterility result exists, so a conditional release is the normal
case: the batch is finished only when every pending result is entered, verified and within specification and
QA releases it ("final release"). A failed result after a conditional release puts the batch under
investigation at once (``services.lifecycle.protect_patients``): every bag not yet infused is blocked, the
clinic is alerted, and QA then rejects or recalls (or, if the investigation clears the product, releases).

Cancelled: a batch started by mistake, before any starting material was received. The first step of a
product's master records receives and identifies the starting material, so a batch may be cancelled only
while no step has been performed (``created``), by an operator or QA, with a reason and a signature; it
leaves the work queue and stays in the record. A batch with recorded work is rejected instead.

Pure: the service gathers the facts (``services.review.decision_facts``) and enforces; the screens ask the
same guards through ``web.actions``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .errors import HardStop
from .refusal import Person, Refusal, role_refusals
from .status import TransitionTable

BATCH_STATUS = TransitionTable("A batch", {
    "created": {"in_progress": "perform the first step", "rejected": "reject", "cancelled": "cancel"},
    "in_progress": {"awaiting_review": "complete the last step", "rejected": "reject"},
    "awaiting_review": {"released": "release", "conditionally_released": "release conditionally",
                        "rejected": "reject", "in_progress": "correct a value"},
    "conditionally_released": {"released": "release on the final results",
                               "under_investigation": "a result failed or a complaint arrived"},
    "released": {"under_investigation": "a result failed or a complaint arrived"},
    "under_investigation": {"released": "release after the investigation", "rejected": "reject",
                            "recalled": "recall"},
    "rejected": {},
    "recalled": {},
    "cancelled": {},
})

# Batch statuses, by what they allow (every other module asks these, never a list of its own).
STEPS_OPEN = ("created", "in_progress")  # steps may be performed
RECORD_OPEN = ("created", "in_progress", "awaiting_review")  # any recorded value may be corrected
INFUSIBLE = ("released", "conditionally_released")  # a bag not blocked and not expired may be infused
RESULTS_OPEN = ("conditionally_released", "under_investigation")  # pending results may be entered
# Finished: nothing more is made, decided or infused under the batch's dose, so the subject's dose level may be
# reassigned (for later batches only); every other status is open (guards.assign_dose_level).
FINISHED = ("released", "rejected", "recalled", "cancelled")
# Made no product that was infused: does not count toward the trial's infusions per subject (a recalled product
# may have been infused, so it counts).
NEVER_INFUSED = ("rejected", "cancelled")
NOT_TO_BE_USED = ("rejected", "recalled", "cancelled")  # its product is not to be used (expiry no longer matters)
IN_WORK = ("created", "in_progress", "awaiting_review")  # on the operators' work queue
QA_WORK = ("awaiting_review", "conditionally_released", "under_investigation")  # on QA's queue

# QA's decisions (each a move of BATCH_STATUS, signed by QA), and the moves that need a reason.
DECISIONS = ("released", "conditionally_released", "rejected", "under_investigation", "recalled")
NEEDS_REASON = ("rejected", "under_investigation", "recalled", "cancelled")
# Moves that protect patients are never held back by segregation of duties.
PROTECTIVE = ("under_investigation",)


def _status(status: str) -> str:
    return status.replace("_", " ")


@dataclass(frozen=True)
class DecisionFacts:
    """What QA's decision on a batch depends on."""

    lot: str
    status: str
    participant: bool  # the deciding person performed or verified a step or a result entry of the batch
    open_deviations: tuple[str, ...]
    unreviewed: int
    all_complete: bool
    pending: tuple[str, ...]  # results still pending (not entered and verified), by title
    failed: tuple[str, ...] = ()  # results entered after the conditional release outside specification


def decide(actor: Person, decision: str, facts: DecisionFacts) -> list[Refusal]:
    """Every reason why ``actor`` may not record ``decision`` now.

    The decider performed and verified no step of the batch (except to place it under investigation, which
    protects patients); the move is one of BATCH_STATUS; a release needs every step complete, every review
    item marked and no open deviation; a conditional release needs a pending result, a release none (after a
    conditional release: every pending result entered, verified and within specification)."""
    if decision not in DECISIONS:
        return [Refusal("state", f"unknown decision {decision!r}")]
    refusals = role_refusals("decide", actor)
    if refusals:
        refusals = [Refusal("role", "Only QA decides on a batch.")]
    if facts.participant and decision not in PROTECTIVE:
        refusals.append(Refusal("duty", f"{actor.name} performed or verified a step of this batch and may not "
                                        "decide on it."))
    if decision not in BATCH_STATUS.allowed.get(facts.status, {}):
        hint = ""
        if decision in ("rejected", "recalled") and "under_investigation" in BATCH_STATUS.allowed.get(facts.status, {}):
            hint = ": place it under investigation first"
        refusals.append(Refusal("state", f"batch {facts.lot} is {_status(facts.status)}: it cannot be "
                                         f"{_status(decision)}{hint}"))
        return refusals
    if decision not in ("released", "conditionally_released"):
        return refusals
    if facts.open_deviations:
        refusals.append(Refusal("state", f"Deviations still open: {', '.join(facts.open_deviations)}. Close them "
                                         "before release."))
    if facts.unreviewed:
        refusals.append(Refusal("state", f"{facts.unreviewed} review item(s) not yet marked reviewed."))
    if not facts.all_complete:
        refusals.append(Refusal("state", "Not every step is complete and verified."))
    if facts.failed:
        refusals.append(Refusal("state", "Results are outside their specification (" + "; ".join(facts.failed)
                                + "): the batch cannot be released."))
    if decision == "released" and facts.pending:
        then = ("release conditionally, naming them, or wait for the final results"
                if facts.status == "awaiting_review" else "enter each result and have it verified first")
        refusals.append(Refusal("state", "Results are still pending (" + "; ".join(facts.pending) + f"): {then}."))
    if decision == "conditionally_released" and not facts.pending:
        refusals.append(Refusal("state", "Nothing is pending: release the batch without conditions."))
    return refusals


def cancel(actor: Person, *, lot: str, status: str) -> list[Refusal]:
    """An operator or QA cancels a batch started by mistake, before any starting material was received
    (no step performed); later, a batch is rejected."""
    refusals = role_refusals("cancel_batch", actor)
    if "cancelled" not in BATCH_STATUS.allowed.get(status, {}):
        refusals.append(Refusal("state", f"batch {lot} is {_status(status)}: only a batch with no step performed "
                                         "(no starting material received) can be cancelled; QA rejects it instead"))
    return refusals


def results_open(status: str) -> bool:
    return status in RESULTS_OPEN


@dataclass(frozen=True)
class BagState:
    """A bag as the infusion stop needs to know it."""

    code: str  # product code with division, as printed
    blocked: str | None  # why the bag is blocked (its block record), or None
    expires_at: datetime
    infused_at: datetime | None


_INFUSIBLE_BAG = "a bag of a product QA has released (or released conditionally), not blocked, not expired"


def infusion_stop(*, lot: str, status: str, bag: BagState, now: datetime,
                  show: Callable[[datetime], str]) -> HardStop | None:
    """The hard stop at the bedside, or None: a blocked bag, a product QA has not released (or released
    conditionally), an expired bag. No override exists."""
    if bag.blocked:
        return HardStop(title="BAG BLOCKED", headline=f"BAG {bag.code} IS BLOCKED ({bag.blocked}).",
                        expected=_INFUSIBLE_BAG, scanned=f"{bag.code}, blocked: {bag.blocked}",
                        next_action="Do not infuse: keep the bag, call QA. A deviation has been opened.")
    if status not in INFUSIBLE:
        return HardStop(title="PRODUCT NOT RELEASED",
                        headline=(f"Batch {lot} is {_status(status)}: only a product QA has released (or released "
                                  "conditionally) may be infused."),
                        expected=_INFUSIBLE_BAG, scanned=f"{bag.code}, batch {lot} {_status(status)}",
                        next_action="Do not infuse: call QA. A deviation has been opened.")
    if bag.expires_at <= now:
        return HardStop(title="BAG EXPIRED", headline=f"BAG {bag.code} EXPIRED at {show(bag.expires_at)}.",
                        expected=_INFUSIBLE_BAG, scanned=f"{bag.code}, expired at {show(bag.expires_at)}",
                        next_action="Do not infuse: call QA. A deviation has been opened.")
    return None


def handoff_stop(*, lot: str, bags: list[BagState], now: datetime,
                 show: Callable[[datetime], str]) -> HardStop | None:
    """The hard stop at a hand-off of a divided product: a bag not yet infused is blocked, or every bag not yet
    infused has expired. (The return of a blocked product to the lab is recorded in its deviation.)"""
    waiting = [bag for bag in bags if bag.infused_at is None]
    blocked = [bag for bag in waiting if bag.blocked]
    expected = f"product {lot}, not blocked and not expired"
    if blocked:
        codes = ", ".join(b.code for b in blocked)
        return HardStop(title="PRODUCT BLOCKED",
                        headline=f"PRODUCT {lot} IS BLOCKED (bags {codes}: {blocked[0].blocked}).",
                        expected=expected, scanned=f"product {lot}, blocked: {blocked[0].blocked}",
                        next_action="Do not hand it on: keep it, call QA. A deviation has been opened.")
    if waiting and all(bag.expires_at <= now for bag in waiting):
        expired = show(min(b.expires_at for b in waiting))
        return HardStop(title="PRODUCT EXPIRED", headline=f"PRODUCT {lot} EXPIRED at {expired}.",
                        expected=expected, scanned=f"product {lot}, expired at {expired}",
                        next_action="Do not hand it on: call QA. A deviation has been opened.")
    return None
