"""Who may do what, and the request-level rules: sessions, idle timeout, forced password change,
security headers and the one transaction per request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import wraps
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, flash, redirect, request, session, url_for
from flask_login import current_user, logout_user
from sqlalchemy.orm import Session

from ..domain import accounts as rules
from ..domain.errors import AuthenticationFailed, DomainError
from ..extensions import db, login_manager
from ..models import User, utcnow
from ..services import accounts, audit
from ..unit_of_work import unit_of_work

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                           "form-action 'self'")
# Requests a page makes by itself (the batch page's poll): not activity, so they never keep an idle session alive.
PASSIVE = frozenset({"batches.version"})
# Endpoints a signed-in user may reach while a password change is due.
_PASSWORD_CHANGE_ALLOWED = {"auth.change_password", "auth.logout", "static"}
SIGNED_KEY = "signed_in_session"


def policy() -> accounts.Policy:
    return accounts.Policy.from_config(current_app.config)


def roles_required(*roles: str) -> Callable[[F], F]:
    """The signed-in user must hold one of ``roles`` to open this page; anyone else gets the 403 page.
    The roles are recorded on the view (``required_roles``) for the navigation (``actions.may_open``).
    What a user may *do* is the guards' to say (``web.actions``), not a page's roles."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if not current_user.has_role(*roles):
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_roles = roles  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorator


def safe_next(target: str | None) -> str | None:
    """A redirect target after login: only a path on this site (no scheme, host or '//')."""
    if not target:
        return None
    target = target.strip().replace("\\", "/")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


@contextmanager
def transaction() -> Iterator[Session]:
    """The request's one unit of work (``mfg.unit_of_work``: commit, or roll back and record a wrong password
    or an identity mismatch), acting as the signed-in user. A wrong password that locked the signed-in
    user's own account signs them out."""
    actor = current_user._get_current_object() if current_user.is_authenticated else None
    try:
        with unit_of_work(db.session, actor=actor, policy=policy()) as session:
            yield session
    except AuthenticationFailed as failure:
        if actor is not None and failure.locked_user_id == actor.id:
            logout_user()
            session_clear_signing()
        raise


@dataclass
class SignedOutcome(Generic[T]):
    """What became of an action that executes an e-signature (see ``signed_action``)."""

    value: T | None = None
    error: DomainError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def problems(self) -> list[str]:
        return self.error.problems if self.error else []

    @property
    def locked_out(self) -> bool:
        """The wrong password locked the account: the user has been signed out."""
        return isinstance(self.error, AuthenticationFailed) and not current_user.is_authenticated


def signed_action(action: Callable[[], T]) -> SignedOutcome[T]:
    """Run a service call that signs, as the request's one transaction.

    Success commits and remembers that this session has signed (later signatures then need only the
    password, 21 CFR 11.200); a domain error rolls back (a wrong password is still counted and audited
    by ``transaction``) and comes back as problems for the form.
    """
    try:
        with transaction():
            value = action()
    except DomainError as exc:
        return SignedOutcome(error=exc)
    mark_signed()
    return SignedOutcome(value=value)


def session_clear_signing() -> None:
    session.pop(SIGNED_KEY, None)


def signing_needs_username() -> bool:
    """21 CFR 11.200: the first signature of a continuous session needs user name and password."""
    return not session.get(SIGNED_KEY, False)


def mark_signed() -> None:
    session[SIGNED_KEY] = True


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    try:
        raw_id, stamp = user_id.split(":")
        user = db.session.get(User, int(raw_id))
    except ValueError:
        return None
    if user is None or not user.is_active or user.credential_stamp != stamp:
        return None
    return user


def _resume_target() -> str | None:
    """Where to go after signing in again once the session ended: the page asked for, or, for a form sent
    after the timeout (nothing of it is recorded), the page the form was on, where session.js restores what
    was typed."""
    if request.method == "GET":
        return request.full_path
    referrer = urlsplit(request.referrer or "")
    if referrer.netloc != request.host:
        return None
    return safe_next(referrer.path + (f"?{referrer.query}" if referrer.query else ""))


def _before_request() -> Any:
    if request.endpoint == "static":
        return None
    if current_user.is_authenticated:
        audit.set_actor(db.session, current_user)
        now = utcnow()
        last_seen = session.get("last_seen")
        last = datetime.fromtimestamp(last_seen, timezone.utc) if last_seen else None
        if rules.is_idle(last, now, float(current_app.config["IDLE_TIMEOUT_MINUTES"])):
            user = current_user._get_current_object()
            with transaction():
                accounts.record_sign_out(db.session, user, timeout=True)
            logout_user()
            session.clear()
            flash("Your session ended after a period of inactivity. Please sign in again.", "warning")
            return redirect(url_for("auth.login", next=_resume_target()))
        if request.endpoint not in PASSIVE:
            session["last_seen"] = now.timestamp()
        due = current_user.must_change_password or rules.password_expired(
            current_user.password_changed_at, now, int(current_app.config["PASSWORD_MAX_AGE_DAYS"]))
        if due and request.endpoint not in _PASSWORD_CHANGE_ALLOWED:
            return redirect(url_for("auth.change_password"))
    else:
        audit.set_actor(db.session, name="anonymous")
    return None


def _security_headers(response: Any) -> Any:
    if "Content-Security-Policy" not in response.headers:  # an SVG image sets its own, stricter one
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"
    app.before_request(_before_request)
    app.after_request(_security_headers)
