"""Guards: for every user action, the one function that says whether it may happen now, and every reason
why not (SENAITE's ``workflow/*/guards.py`` is the model).

Pure: plain facts in (who acts, statuses, what was recorded), a list of :class:`Refusal` out; empty means
allowed. The service enforces its guard before its first write (:func:`enforce` raises with every reason);
the screens ask the same guard, through ``services.permissions`` and ``web.actions``, whether to offer the
action at all. No template, view or service restates a condition written here.

A refusal is ``role`` (the person lacks the role), ``duty`` (segregation of duties: the performer does not
verify, the releaser did no step), ``sequence`` (not yet, or no longer, in the master record's order or the
record's transitions), ``done`` (someone already did it: the service reports who, as a conflict) or
``state`` (the record is not in a state that allows it). :func:`enforce` raises PermissionDenied for role
and duty refusals, InvalidTransition when every other refusal is about the sequence, else ValidationFailed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .errors import InvalidTransition, PermissionDenied, ValidationFailed

OPERATOR, QA, CLINICAL, ADMIN = "operator", "qa", "clinical", "admin"

CUSTODY_ROLES = (OPERATOR, CLINICAL)

# Batch statuses, by what they allow.
STEPS_OPEN = ("created", "in_progress")  # steps may be performed
RECORD_OPEN = ("created", "in_progress", "awaiting_review")  # any recorded value may be corrected
INFUSIBLE = ("released", "conditionally_released")  # a bag may be infused
# A batch in one of these statuses is finished: nothing more is made, decided or infused under its dose, so
# the subject's dose level may be reassigned (for later batches only). Every other status is open: created,
# in progress, awaiting review, conditionally released (results pending) and under investigation. The one
# definition of "finished" and "open" for the rules that need it (assign_dose_level); keep it in step with
# domain.sequence.BATCH_STATUS when a status is added.
BATCH_FINISHED = ("released", "rejected", "recalled", "cancelled")
# A batch in one of these statuses made no product that was infused: it does not count toward the trial's
# infusions per subject (a recalled product may have been infused, so it counts).
NEVER_INFUSED = ("rejected", "cancelled")
# QA's possible decisions and the transition each makes (domain.sequence.BATCH_STATUS).
DECISIONS = ("released", "conditionally_released", "rejected")
CLASSIFICATIONS = ("minor", "major", "critical")


@dataclass(frozen=True)
class Refusal:
    kind: str  # "role", "duty", "sequence", "done" or "state"
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Person:
    """Who acts, as a guard needs to know them."""

    id: int
    roles: frozenset[str]
    name: str

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


class UserLike(Protocol):
    """What :func:`person` reads from the one who acts (the User model)."""

    @property
    def id(self) -> int: ...
    @property
    def role_list(self) -> Iterable[str]: ...
    @property
    def full_name(self) -> str: ...


def person(user: UserLike) -> Person:
    """A :class:`Person` from anything with ``id``, ``role_list`` and ``full_name`` (the User model)."""
    return Person(user.id, frozenset(user.role_list), user.full_name)


def texts(refusals: Iterable[Refusal]) -> list[str]:
    return [r.text for r in refusals]


def enforce(refusals: list[Refusal]) -> None:
    """Raise with every reason when the guard refused: PermissionDenied when any refusal is about the person
    (role, segregation of duties), InvalidTransition when all are about the sequence, else ValidationFailed."""
    if not refusals:
        return
    if any(r.kind in ("role", "duty") for r in refusals):
        raise PermissionDenied(*texts(refusals))
    if all(r.kind in ("sequence", "done") for r in refusals):
        raise InvalidTransition(*texts(refusals))
    raise ValidationFailed(*texts(refusals))


def only_done(refusals: list[Refusal]) -> bool:
    """The only refusal is that someone already did it: the service reports the conflict (who, when)."""
    return bool(refusals) and all(r.kind == "done" for r in refusals)


# Who may do what: the roles of each action, and how a refusal names the action. Each guard of the same name
# checks them first; the web edge reads them (``role_refusals``) to refuse a POST before loading anything.
ROLES: dict[str, tuple[tuple[str, ...], str]] = {
    "start_batch": ((OPERATOR,), "starting a batch"),
    "start_product_batch": ((OPERATOR,), "opening a batch record"),
    "assign_dose_level": ((CLINICAL,), "assigning a dose level"),
    "perform_step": ((OPERATOR,), "performing a step"),
    "verify_step": ((OPERATOR,), "verifying a step"),
    "resign_step": ((OPERATOR,), "signing a step"),
    "correct_value": ((OPERATOR,), "correcting a step"),
    "open_deviation": ((OPERATOR, QA), "opening a deviation"),
    "investigate_deviation": ((QA,), "investigating a deviation"),
    "review_batch": ((QA,), "reviewing a batch"),
    "decide": ((QA,), "deciding on a batch"),
    "print_labels": ((OPERATOR,), "printing labels"),
    "hand_off": ((OPERATOR, CLINICAL), "recording a hand-off"),
    "bedside_check": ((OPERATOR, CLINICAL), "recording a bedside check"),
    "load_master_records": ((QA,), "loading master records"),
    "approve_master_record": ((QA,), "approving a master record"),
    "manage_master_data": ((QA,), "changing equipment and material lots"),
    "manage_subjects": ((CLINICAL,), "recording subjects and donors"),
    "manage_accounts": ((ADMIN,), "managing user accounts"),
}


def role_refusals(action: str, actor: Person) -> list[Refusal]:
    """The role part of guard ``action`` alone (no facts needed)."""
    roles, what = ROLES[action]
    if actor.has(*roles):
        return []
    names = " or ".join("QA" if r == QA else r for r in roles)
    return [Refusal("role", f"{what} needs the {names} role")]


def _role(actor: Person, action: str) -> list[Refusal]:
    return role_refusals(action, actor)


def _status(status: str) -> str:
    return status.replace("_", " ")


# --- batches and steps ---------------------------------------------------------------------------------------

def start_batch(actor: Person) -> list[Refusal]:
    return _role(actor, "start_batch")


def start_product_batch(actor: Person, *, subject_code: str, donor_problems: list[str], dose_signed: bool,
                        batches: Sequence[tuple[str, str]] = (),
                        infusions_per_subject: int | None = None) -> list[Refusal]:
    """Open the batch record for a subject's expected collection: the donor determined eligible, the
    subject's dose level signed, and fewer batches that count as infusions (every batch of the subject,
    ``batches`` as (lot, status), except the rejected and cancelled: ``NEVER_INFUSED``) than the trial
    configuration's ``infusions_per_subject`` (None: no effective configuration, which the service refuses)."""
    refusals = _role(actor, "start_product_batch")
    refusals += [Refusal("state", problem) for problem in donor_problems]
    if not dose_signed:
        refusals.append(Refusal("state", f"subject {subject_code} has no signed dose level"))
    counted = [f"{lot} ({_status(status)})" for lot, status in batches if status not in NEVER_INFUSED]
    if infusions_per_subject is not None and len(counted) >= infusions_per_subject:
        allowed = f"{infusions_per_subject} infusion{'s' if infusions_per_subject != 1 else ''}"
        refusals.append(Refusal("state", f"subject {subject_code} already has batch{'es' if len(counted) > 1 else ''} "
                                         f"{', '.join(counted)}: the trial allows {allowed} per subject "
                                         "(infusions_per_subject); another batch is refused"))
    return refusals


def assign_dose_level(actor: Person, *, subject_code: str, batches: Sequence[tuple[str, str]]) -> list[Refusal]:
    """Assign (or reassign) a subject's dose level: refused while a batch of the subject is open (``batches``
    as (lot, status); open = not in ``BATCH_FINISHED``), since that batch was pinned the dose in force when it
    started. A later assignment applies to later batches only."""
    refusals = _role(actor, "assign_dose_level")
    refusals += [Refusal("state", f"batch {lot} of subject {subject_code} is open ({_status(status)}): its dose "
                                  "was pinned when it started; the dose level can be reassigned once it is "
                                  f"{', '.join(map(_status, BATCH_FINISHED[:-1]))} or {_status(BATCH_FINISHED[-1])}")
                 for lot, status in batches if status not in BATCH_FINISHED]
    return refusals


def perform_step(actor: Person, *, lot: str, batch_status: str, step_id: str, instance: int, performed: bool,
                 not_open: str | None) -> list[Refusal]:
    """``performed``: this instance was already recorded; ``not_open``: why the instance is not open in the
    master record's sequence (None when it is)."""
    refusals = _role(actor, "perform_step")
    if batch_status not in STEPS_OPEN:
        refusals.append(Refusal("state", f"batch {lot} is {_status(batch_status)}: no step can be performed"))
    elif performed:
        refusals.append(Refusal("done", f"step '{step_id}' #{instance} has already been performed"))
    elif not_open:
        refusals.append(Refusal("sequence", not_open))
    return refusals


def verify_step(actor: Person, *, step_status: str, performer_ids: set[int]) -> list[Refusal]:
    """A second operator verifies: never one who performed (or re-signed) the step."""
    refusals = _role(actor, "verify_step")
    if actor.id in performer_ids:
        refusals.append(Refusal("duty", "You performed this step: a different operator must verify it."))
    if step_status != "awaiting_verification":
        refusals.append(Refusal("sequence", f"this step is {_status(step_status)}: it is not waiting for "
                                            "verification"))
    return refusals


def resign_step(actor: Person, *, step_status: str) -> list[Refusal]:
    refusals = _role(actor, "resign_step")
    if step_status != "needs_signature":
        refusals.append(Refusal("state", "This step does not need a new signature."))
    return refusals


def correct_value(actor: Person, *, lot: str, batch_status: str, field_label: str, calculated: bool,
                  pending: bool, divided_at: str | None, step_id: str) -> list[Refusal]:
    """Correct one recorded value. While the record is open any entered value may be corrected; after a
    conditional release only a value still pending (e.g. sterility "Pending"), whose final result is
    entered as its correction; never a calculated value (its inputs are corrected) nor a value the bags
    were made from once the product is divided (``divided_at``: the dividing step, or None)."""
    refusals = _role(actor, "correct_value")
    if batch_status == "conditionally_released":
        if not pending:
            refusals.append(Refusal("state", f"batch {lot} is conditionally released: only a pending result may be "
                                             f"entered (as a correction of its 'pending' value); {field_label} is "
                                             "not pending"))
    elif batch_status not in RECORD_OPEN:
        refusals.append(Refusal("state", f"batch {lot} is {_status(batch_status)}: its record is closed"))
    if calculated:
        refusals.append(Refusal("state", f"{field_label}: a calculated value is corrected by correcting its inputs."))
    if divided_at is not None:
        refusals.append(Refusal("state", f"The product was divided into bags from the values up to step "
                                         f"'{divided_at}'; correcting '{step_id}' would change bags already filled. "
                                         "Nothing was stored: report it to QA as a deviation."))
    return refusals


# --- deviations --------------------------------------------------------------------------------------------

def open_deviation(actor: Person) -> list[Refusal]:
    """Anyone working on a batch (operator or QA) may record a deviation, whatever the batch's status: an
    event found after release must be recordable too."""
    return _role(actor, "open_deviation")


def investigate_deviation(actor: Person, status: str, number: str = "") -> list[Refusal]:
    refusals = _role(actor, "investigate_deviation")
    if status != "open":
        refusals.append(Refusal("state", f"deviation {number} is closed" if number else "the deviation is closed"))
    return refusals


def investigation_problems(classification: str, investigation: str, root_cause: str, impact: str,
                           capa_reference: str) -> list[str]:
    """What an investigation must say: a classification, the investigation, root cause and impact, and a
    CAPA reference for a major or critical deviation."""
    problems = []
    if classification not in CLASSIFICATIONS:
        problems.append(f"Classification must be one of {', '.join(CLASSIFICATIONS)}.")
    for label, text in (("Investigation", investigation), ("Root cause", root_cause),
                        ("Impact on this and other batches", impact)):
        if not (text or "").strip():
            problems.append(f"{label} is required.")
    if classification in ("major", "critical") and not (capa_reference or "").strip():
        problems.append(f"A {classification} deviation needs a CAPA reference.")
    return problems


def close_deviation(actor: Person, status: str, number: str, *, classified: bool) -> list[Refusal]:
    refusals = investigate_deviation(actor, status, number)
    if status == "open" and not classified:
        refusals.append(Refusal("state", f"deviation {number} must be classified and investigated before it closes"))
    return refusals


# --- QA review and the batch decision ---------------------------------------------------------------------

def review_batch(actor: Person) -> list[Refusal]:
    return _role(actor, "review_batch")


@dataclass(frozen=True)
class DecisionFacts:
    """What QA's decision on a batch depends on."""

    lot: str
    status: str
    allowed_moves: frozenset[str]  # the statuses the batch's status may move to (BATCH_STATUS)
    participant: bool  # the deciding person performed or verified a step of the batch
    open_deviations: tuple[str, ...]
    unreviewed: int
    all_complete: bool
    pending: tuple[str, ...]  # the results still pending, by title


def decide(actor: Person, decision: str, facts: DecisionFacts) -> list[Refusal]:
    """Release, conditional release (naming the pending results) or rejection. The releaser performed and
    verified no step; a release needs every step complete, every review item marked and no open deviation;
    a full release needs no pending result, a conditional one at least one. A rejection needs none of that."""
    if decision not in DECISIONS:
        return [Refusal("state", f"unknown decision {decision!r}")]
    refusals = _role(actor, "decide")
    if refusals:
        refusals = [Refusal("role", "Only QA decides on a batch.")]
    if facts.participant:
        refusals.append(Refusal("duty", f"{actor.name} performed or verified a step of this batch and may not "
                                        "decide on it."))
    if decision not in facts.allowed_moves:
        refusals.append(Refusal("state", f"batch {facts.lot} is {_status(facts.status)}: it cannot be "
                                         f"{_status(decision)}"))
    if decision == "rejected":
        return refusals
    if facts.open_deviations:
        refusals.append(Refusal("state", f"Deviations still open: {', '.join(facts.open_deviations)}. Close them "
                                         "before release."))
    if facts.unreviewed:
        refusals.append(Refusal("state", f"{facts.unreviewed} review item(s) not yet marked reviewed."))
    if not facts.all_complete:
        refusals.append(Refusal("state", "Not every step is complete and verified."))
    if decision == "released" and facts.pending:
        refusals.append(Refusal("state", "Results are still pending (" + "; ".join(facts.pending)
                                + "): release conditionally, naming them, or wait for the final results."))
    if decision == "conditionally_released" and not facts.pending:
        refusals.append(Refusal("state", "Nothing is pending: release the batch without conditions."))
    return refusals


# --- bags and documents ------------------------------------------------------------------------------------

def print_labels(actor: Person, *, lot: str, bag_count: int) -> list[Refusal]:
    refusals = _role(actor, "print_labels")
    if not bag_count:
        refusals.append(Refusal("state", f"batch {lot} has no bags to label yet"))
    return refusals


def hand_off(actor: Person) -> list[Refusal]:
    return _role(actor, "hand_off")


def bedside_check(actor: Person, *, lot: str, batch_status: str) -> list[Refusal]:
    """The two-person bedside check is recorded from the screen of an operator or clinical user, for a
    product QA released (or released conditionally); who the two people are is checked by their signatures."""
    refusals = _role(actor, "bedside_check")
    if batch_status not in INFUSIBLE:
        refusals.append(Refusal("state", f"Batch {lot} is {_status(batch_status)}: only a product QA has released "
                                         "(or released conditionally) may be infused. Do not infuse; call QA."))
    return refusals


def two_people(first_id: int, second_id: int) -> list[Refusal]:
    if first_id == second_id:
        return [Refusal("duty", "The bedside check needs two different people.")]
    return []


# --- master records, master data, subjects, accounts ------------------------------------------------------

def load_master_records(actor: Person) -> list[Refusal]:
    return _role(actor, "load_master_records")


def approve_master_record(actor: Person, *, status: str, loaded_by_id: int) -> list[Refusal]:
    """QA approves a draft; the person who loaded it may not (author and approver differ)."""
    refusals = _role(actor, "approve_master_record")
    if actor.id == loaded_by_id:
        refusals.append(Refusal("duty", "The person who loaded a master record cannot approve it "
                                        "(author and approver must differ)."))
    if status != "draft":
        refusals.append(Refusal("sequence", f"this master record version is {status}: only a draft is approved"))
    return refusals


def manage_master_data(actor: Person) -> list[Refusal]:
    """Equipment and material lots: registered, received and released by QA."""
    return _role(actor, "manage_master_data")


def manage_subjects(actor: Person) -> list[Refusal]:
    """Subjects, donors, donor tests, eligibility and dose levels."""
    return _role(actor, "manage_subjects")


def manage_accounts(actor: Person) -> list[Refusal]:
    return _role(actor, "manage_accounts")
