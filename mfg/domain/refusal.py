"""What every guard is made of: who acts (:class:`Person`), why not (:class:`Refusal`), the roles of each
action (:data:`ROLES`) and how a refusal is raised (:func:`enforce`). ``domain.guards`` (every action's
guard) and ``domain.lifecycle`` (the batch's lifecycle and its guards) build on it; ``guards`` re-exports
these names, so callers write ``guards.Refusal``, ``guards.person``, ``guards.enforce``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .errors import InvalidTransition, PermissionDenied, ValidationFailed

OPERATOR, QA, CLINICAL, ADMIN = "operator", "qa", "clinical", "admin"

CUSTODY_ROLES = (OPERATOR, CLINICAL)
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
    "cancel_batch": ((OPERATOR, QA), "cancelling a batch"),
    "enter_result": ((OPERATOR,), "entering a pending result"),
    "verify_result": ((OPERATOR,), "verifying a result entry"),
    "acknowledge_alert": ((CLINICAL,), "acknowledging a product alert"),
    "print_labels": ((OPERATOR,), "printing labels"),
    "hand_off": ((OPERATOR, CLINICAL), "recording a hand-off"),
    "bedside_check": ((OPERATOR, CLINICAL), "recording a bedside check"),
    "load_master_records": ((QA,), "loading master records"),
    "approve_master_record": ((QA,), "approving a master record"),
    "manage_master_data": ((QA,), "changing equipment and material lots"),
    "manage_subjects": ((CLINICAL,), "recording subjects and donors"),
    "record_dlt": ((CLINICAL,), "recording an adverse event"),
    "decide_escalation": ((CLINICAL,), "signing an escalation decision"),
    "issue_ledger": ((CLINICAL, QA), "issuing the cohort ledger document"),
    "manage_accounts": ((ADMIN,), "managing user accounts"),
    "confirm_role_grant": ((ADMIN, QA), "confirming a role grant"),
}


def role_refusals(action: str, actor: Person) -> list[Refusal]:
    """The role part of guard ``action`` alone (no facts needed)."""
    roles, what = ROLES[action]
    if actor.has(*roles):
        return []
    names = " or ".join("QA" if r == QA else r for r in roles)
    return [Refusal("role", f"{what} needs the {names} role")]
