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


class AuthenticationFailed(DomainError):
    """Wrong credentials (login or e-signature). Carries who tried, so the edge can record the failure.

    The failure is recorded in a fresh transaction after the action's own changes are rolled back:
    see ``services.accounts.record_authentication_failure``.
    """

    http_status = 401

    def __init__(self, username: str, *, context: str, message: str = "Invalid user name or password.") -> None:
        super().__init__(message)
        self.username = username
        self.context = context
