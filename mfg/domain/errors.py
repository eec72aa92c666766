"""One error hierarchy for every refused action; the web and CLI edges map it to messages."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .runtime_names import runtime_words


class DomainError(Exception):
    """A rule refused the action. ``problems`` lists every failure found, not only the first."""

    http_status = 400

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems) or [self.__class__.__name__]
        super().__init__("; ".join(self.problems))


class ValidationFailed(DomainError):
    """Input is malformed; nothing was stored."""


class PermissionDenied(DomainError):
    """The user lacks the role, or segregation of duties forbids this user."""

    http_status = 403


class NotFound(DomainError):
    http_status = 404


class InvalidTransition(DomainError):
    """A status change the transition table does not allow."""

    http_status = 409


class ConflictError(DomainError):
    """The record changed since it was read, or already exists."""

    http_status = 409


class AlreadyDone(ConflictError):
    """A one-shot action that someone (a colleague, a second tab, a twin submission) did first: ``done`` says what
    ("DEMO-PROC v1 was already approved"), ``by`` the printed name, ``at`` the moment in UTC as shown. Nothing of
    this attempt was stored."""

    def __init__(self, done: str, *, by: str, at: str) -> None:
        super().__init__(f"{done} by {by} at {at}; nothing of this attempt was stored.")
        self.done, self.by, self.at = done, by, at


class StepConflict(ConflictError):
    """Someone else completed or changed this step first; nothing of this attempt was stored."""

    def __init__(self, batch_id: int, step_id: str, instance: int) -> None:
        super().__init__(f"step '{step_id}' #{instance} was completed or changed by someone else at the same "
                         "moment; nothing was stored")
        self.batch_id, self.step_id, self.instance = batch_id, step_id, instance


@dataclass(frozen=True)
class HardStop:
    """The facts of a hard stop, in the words every screen shows them (the full-screen stop of a step screen,
    a hand-off and the bedside) and the message the CLI prints: what it is, what was expected, what was
    scanned, the subject it concerns and what to do next. Built where the stop is decided
    (``services.identity.check``, ``domain.lifecycle.infusion_stop``, ``handoff_stop``); never restated."""

    title: str  # "IDENTITY MISMATCH", "BAG BLOCKED", ...
    headline: str  # the first sentence of the message
    expected: str
    scanned: str
    next_action: str
    subject: str = ""

    @property
    def message(self) -> str:
        return f"{self.headline} {self.next_action}"

    def __str__(self) -> str:
        return self.message

    def about(self, subject: str) -> HardStop:
        """The same stop, naming the subject (which the service knows and a pure rule does not)."""
        return replace(self, subject=subject)


# What to do after an identity mismatch, by where it happened (a step screen when not named).
IDENTITY_NEXT_ACTION = {
    "bedside": "Do not infuse: keep the bag apart and call QA. A deviation has been opened.",
    "hand-off": "Do not hand it on: keep the container apart and call QA. A deviation has been opened.",
}
IDENTITY_NEXT_ACTION_AT_A_STEP = ("Stop: do not continue with this container. Keep it apart and call QA. "
                                  "A deviation has been opened.")


class IdentityMismatch(ValidationFailed):
    """A scan that does not match the identity the batch expects: a hard stop. Nothing of the action is
    stored; the unit of work (``mfg.unit_of_work``) rolls it back, then records the event in the audit
    trail and opens a deviation in its own commit (``deviation`` then names it; at the web edge that commit
    also spends the form's one-time token, so that the stop is recorded once). There is no override.

    ``stop`` holds its facts: the expected identifier (``expected``: what the batch holds, shown as
    printed), what was scanned, the subject and the next action for ``step_id`` (a step, "hand-off",
    "bedside")."""

    def __init__(self, batch_id: int, step_id: str, label: str, expected_name: str, scanned: str, *,
                 expected: str = "", subject: str = "") -> None:
        stop = HardStop(
            title="IDENTITY MISMATCH",
            headline=(f"IDENTITY MISMATCH: {label}: the scanned identifier does not match the "
                      f"{runtime_words(expected_name)} of this batch."),
            expected=expected or f"the {runtime_words(expected_name)} of this batch", scanned=scanned,
            next_action=IDENTITY_NEXT_ACTION.get(step_id, IDENTITY_NEXT_ACTION_AT_A_STEP), subject=subject)
        super().__init__(stop.message)
        self.batch_id, self.step_id, self.label = batch_id, step_id, label
        self.expected_name, self.scanned = expected_name, scanned
        self.stop = stop
        self.deviation: str | None = None
        # which of the action's scans did not match (set by the service that checked them: a step's field ids,
        # custody's "<person>.<scan>"), so that a screen clears only those and keeps the correct ones
        self.fields: tuple[str, ...] = ()


class AuthenticationFailed(DomainError):
    """Wrong credentials (login or e-signature). Carries who tried, so the edge can record the failure.

    The failure is recorded in a fresh transaction after the action's own changes are rolled back, by the
    unit of work (``mfg.unit_of_work``, through ``services.accounts.record_authentication_failure``), which
    sets ``locked_user_id`` to the account's id when that failure locked it.
    """

    http_status = 401

    def __init__(self, username: str, *, context: str, message: str = "Invalid user name or password.") -> None:
        super().__init__(message)
        self.username = username
        self.context = context
        self.locked_user_id: int | None = None


class ProductBlocked(ValidationFailed):
    """A blocked, expired or unreleased product scanned at a hand-off or the bedside: a hard stop. Nothing of
    the action is stored; the unit of work rolls it back, then audits the event and opens a deviation in its
    own commit (``services.lifecycle.record_blocked_scan``; ``deviation`` then names it). There is no
    override. ``stop`` holds its facts (``domain.lifecycle.infusion_stop``, ``handoff_stop``)."""

    def __init__(self, batch_id: int, where: str, stop: HardStop, division: str | None) -> None:
        super().__init__(stop.message)
        self.batch_id, self.where, self.division = batch_id, where, division
        self.stop = stop
        self.deviation: str | None = None


class ItemRefused(ValidationFailed):
    """Equipment or a material lot that exists but may not be used (of another type, out of service or of
    calibration, expired, not released by QC) entered on a step: nothing of the step is stored; the unit of
    work rolls it back, then audits the attempt and opens a deviation in its own commit
    (``deviations.record_refused_item``). ``refused`` lists why; ``problems`` also lists every other problem
    of the entry, so that the operator sees all at once. A code that does not exist is a misread instead
    (``ValidationFailed``: scan again, no deviation)."""

    def __init__(self, batch_id: int, step_id: str, refused: list[str], others: list[str]) -> None:
        super().__init__(*[f"{problem}. Do not use it: a deviation has been opened." for problem in refused],
                         *others)
        self.batch_id, self.step_id, self.refused = batch_id, step_id, refused
        self.deviation: str | None = None
