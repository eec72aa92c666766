"""One error hierarchy for every refused action; the web and CLI edges map it to messages."""

from __future__ import annotations


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


class StepConflict(ConflictError):
    """Someone else completed or changed this step first; nothing of this attempt was stored."""

    def __init__(self, batch_id: int, step_id: str, instance: int) -> None:
        super().__init__(f"step '{step_id}' #{instance} was completed or changed by someone else at the same "
                         "moment; nothing was stored")
        self.batch_id, self.step_id, self.instance = batch_id, step_id, instance


class IdentityMismatch(ValidationFailed):
    """A scan that does not match the identity the batch expects: a hard stop. Nothing of the action is
    stored; the unit of work (``mfg.unit_of_work``) rolls it back, then records the event in the audit
    trail and opens a deviation in its own commit. There is no override."""

    def __init__(self, batch_id: int, step_id: str, label: str, expected_name: str, scanned: str) -> None:
        super().__init__(f"IDENTITY MISMATCH: {label}: the scanned identifier does not match the {expected_name} "
                         "of this batch. Stop: do not continue with this container. A deviation has been opened; "
                         "call QA.")
        self.batch_id, self.step_id, self.label = batch_id, step_id, label
        self.expected_name, self.scanned = expected_name, scanned


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
    own commit (``services.lifecycle.record_blocked_scan``). There is no override."""

    def __init__(self, batch_id: int, where: str, stop: str, division: str | None) -> None:
        super().__init__(stop)
        self.batch_id, self.where, self.division = batch_id, where, division
