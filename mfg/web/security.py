"""Who may do what, and the request-level rules: sessions, idle timeout, forced password change,
security headers and the one transaction per request.

Sessions are server-side (``services.sessions``): the signed cookie carries a random token (``TOKEN_KEY``) besides
what only the screens need (flashed messages); the ``user_session`` row the token names is what makes a browser
signed in, and its end (sign-out, idle timeout, the absolute lifetime, a password change or reset, deactivation,
lockout) signs out every copy of the cookie at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Flask, abort, current_app, flash, g, redirect, request, session, url_for
from flask_login import current_user, logout_user
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..domain import accounts as rules
from ..domain import display
from ..domain.errors import AuthenticationFailed, DomainError
from ..extensions import db, login_manager
from ..models import FormSubmission, User, UserSession, utcnow
from ..services import accounts, audit, sessions
from ..unit_of_work import unit_of_work
from . import throttle

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                           "form-action 'self'")
# Requests a page makes by itself (the batch page's poll, the preview of a step's values and the check of a scan
# as the person types or scans): not activity, so they never keep an idle session alive (``static/session.js``
# counts the same way), and they leave the session cookie alone. A passive request does not write the session,
# so its answer carries no cookie: one sent while a form is being signed would otherwise put back the session as
# it was before the signature, dropping the signature's "recorded and signed" message (Flask keeps the session
# in the cookie; the last answer to arrive wins).
PASSIVE = frozenset({"batches.version", "batches.step_preview", "batches.check_scan", "custody.check_scan"})
# Endpoints a signed-in user may reach while a password change is due.
_PASSWORD_CHANGE_ALLOWED = {"auth.change_password", "auth.logout", "static"}
TOKEN_KEY = "session_token"  # the server-side session's token, in the signed cookie
HSTS = "max-age=31536000; includeSubDomains"


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


# --- do once: a form's one-time submission token ------------------------------------------------------
# ``mfg/static/once.js`` puts a fresh token in every POST form a page shows (field ``SUBMISSION_FIELD``); the
# request's transaction claims it before the action writes anything, so that the claim commits or rolls back
# with what the action did. A repeat of a submission that committed (a double tap, a reload that posts again,
# a resubmission) finds its token taken and is answered with the first one's redirect: nothing is done twice.
# A submission that failed (nothing stored) did not claim its token, and may be sent again; one that ended in a
# hard stop claimed it with the stop's record (``_spend``), so that the stop is recorded once.
SUBMISSION_FIELD = "submission_token"
# Sign-in and sign-out act on the browser's own session cookie: a replayed answer would not carry it.
_NOT_CLAIMED = {"auth.login", "auth.logout", "auth.change_password", "static"}
REPLAY_WAIT_SECONDS = 5.0  # how long a twin waits for the first submission's answer to be known


class _AlreadySubmitted(Exception):
    """The submission's token was claimed by an earlier (committed) submission."""


def stores_nothing(view: F) -> F:
    """Marks a POST view that stores nothing and answers a script (a preview, a keep-alive): it takes no part in
    the one-time submission token. The form's token may ride along with such a request (a preview sends the
    form as typed), and must be neither claimed nor answered as a repeat there: a preview that arrives just
    after its form was signed would otherwise be "replayed", and its answer's flash would take the place of
    the signature's own message in the session cookie."""
    view.stores_nothing = True  # type: ignore[attr-defined]
    return view


def _claimed_endpoint() -> bool:
    """Whether this request is a POST whose transaction claims the form's one-time token: every POST but sign-in,
    sign-out, the password change and the views that store nothing (``stores_nothing``)."""
    if request.method != "POST" or request.endpoint in _NOT_CLAIMED:
        return False
    view = current_app.view_functions.get(request.endpoint or "")
    return view is not None and not getattr(view, "stores_nothing", False)


def _submission_token() -> str | None:
    """This request's token, if it is one that the request's transaction claims (once per request)."""
    if not _claimed_endpoint() or g.get("submission_claimed"):
        return None
    token = (request.form.get(SUBMISSION_FIELD) or "").strip()
    return token[:64] or None


def _claim(session: Session, token: str, *, location: str | None = None) -> None:
    """Claim ``token`` in the session's transaction; ``location``: where a repeat is to go, when already known."""
    session.add(FormSubmission(token=token, user_id=current_user.id if current_user.is_authenticated else None,
                               endpoint=request.endpoint or "", created_at=utcnow(), location=location))
    try:
        session.flush()  # the unique token: a twin committed first (or, concurrently, waits for its commit)
    except IntegrityError:
        raise _AlreadySubmitted(token) from None  # the unit of work rolls the whole transaction back


def _spend(token: str) -> Callable[[Session], None]:
    """The claim of ``token`` for a submission that ended in a hard stop, made by the unit of work in the commit
    that records the stop (its audit entry, its deviation): sending it again (a reload) finds it spent and
    goes back to the form's page; a twin that reached the stop at the same moment fails on it and is answered
    as a repeat, so the stop is recorded once. A new scan is a new submission."""
    return lambda session: _claim(session, token, location=_form_page())


def _replay(token: str) -> Any:
    """The answer to a repeated submission: where the first one led (waiting briefly for a twin that is still
    finishing), or, if that is not known, the page the form was on. Nothing is done again."""
    deadline = time.monotonic() + REPLAY_WAIT_SECONDS
    while True:
        db.session.rollback()
        first = db.session.scalar(sa.select(FormSubmission).where(FormSubmission.token == token))
        if first is None or first.location or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if first is None:
        db.session.rollback()
        abort(409)
    first_user_id, first_at, location = first.user_id, first.created_at, first.location
    who = db.session.get(User, first_user_id) if first_user_id is not None else None
    done = (f"This was already submitted and recorded once: already done by "
            f"{who.full_name if who else 'someone else'} at {display.utc(first_at)}; it was not recorded again.")
    db.session.rollback()
    if current_user.is_authenticated and first_user_id not in (None, current_user.id):
        abort(409, description=done)
    flash(done, "info")
    return redirect(location or _form_page(), code=303)


def _form_page() -> str:
    """The page the submitted form was on (this site's, from the referrer), else home."""
    return safe_next(urlsplit(request.referrer).path if request.referrer else None) or url_for("main.index")


MISSING_TOKEN = ("This form was sent without its one-time submission token, so it could not be told apart from a "
                 "second sending of the same form; nothing was recorded. Reload the page and submit the form again "
                 f"(a script must send a fresh unique value in the field '{SUBMISSION_FIELD}' with each submission).")


def _replay_repeat() -> Any:
    """Before the view: a repeat of a submission that already committed goes where the first one went. A
    signed-in POST that stores something must carry its one-time token (``MISSING_TOKEN``): without it two
    identical submissions (a script, a form without ``once.js``) could not be told apart and both would be
    recorded. Without a session the view itself answers (sign in first)."""
    token = _submission_token()
    if token is None:
        if _claimed_endpoint() and current_user.is_authenticated and not g.get("submission_claimed"):
            abort(400, description=MISSING_TOKEN)
        return None
    if db.session.scalar(sa.select(FormSubmission.id).where(FormSubmission.token == token)) is None:
        return None
    return _replay(token)


def _record_location(response: Any) -> Any:
    """After the view: the claimed submission remembers where it led (for its repeats)."""
    token = g.pop("submission_claimed", None)
    if token:
        redirected = response.status_code in (301, 302, 303) and response.location
        try:
            db.session.rollback()
            db.session.execute(sa.update(FormSubmission).where(FormSubmission.token == token)
                               .values(location=(response.location if redirected else _form_page())[:500]))
            db.session.commit()
        except SQLAlchemyError:  # the action itself committed: its answer stands; a repeat goes to the form's page
            db.session.rollback()
            log.warning("could not record where submission %s led", token, exc_info=True)
    return response


@contextmanager
def transaction(*, claim: bool = True) -> Iterator[Session]:
    """The request's one unit of work (``mfg.unit_of_work``: commit, or roll back and record a wrong password
    or an identity mismatch), acting as the signed-in user. A wrong password that locked the signed-in
    user's own account signs them out.

    ``claim``: the first transaction of a POST claims the form's one-time submission token in the same
    transaction; if an earlier submission already claimed it, nothing is done and the request is answered
    with that submission's redirect (an HTTP exception the view does not catch). A submission that ends in an
    identity or product hard stop, or in a refused item, spends its token in the commit that records it (``_spend``)."""
    actor = current_user._get_current_object() if current_user.is_authenticated else None
    token = _submission_token() if claim else None
    try:
        with unit_of_work(db.session, actor=actor, policy=policy(),
                          spend=_spend(token) if token is not None else None) as work:
            if token is not None:
                _claim(work, token)
            yield work
    except _AlreadySubmitted:
        assert token is not None
        abort(_replay(token))
    except AuthenticationFailed as failure:
        if actor is not None and failure.locked_user_id == actor.id:
            logout_user()  # the lockout ended the server-side session (``accounts.record_authentication_failure``)
            session.pop(TOKEN_KEY, None)
        raise
    if token is not None:
        g.submission_claimed = token


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
            _signed_in_this_session()
    except DomainError as exc:
        return SignedOutcome(error=exc)
    return SignedOutcome(value=value)


def _current_session() -> UserSession | None:
    """The signed-in user's server-side session: the one the user loader found for this request's cookie, else
    (a user set by ``login_user`` in this same context) found again from the cookie's token."""
    if not current_user.is_authenticated:
        return None
    row = g.get("user_session")
    if row is None or row.user_id != current_user.id:
        found = sessions.find(db.session, session.get(TOKEN_KEY), current_user.id)
        row = g.user_session = found[0] if found is not None else None
    return row


def signing_needs_username() -> bool:
    """21 CFR 11.200: the first signature of a continuous session needs user name and password."""
    row = _current_session()
    return row is None or not row.has_signed


def _signed_in_this_session() -> None:
    row = _current_session()
    if row is not None:
        row.has_signed = True


def mark_signed() -> None:
    """This session has signed (its own commit: for an action whose signers are known only after it committed)."""
    row = _current_session()
    if row is not None and not row.has_signed:
        with transaction(claim=False):
            row.has_signed = True


def begin_session(user: User) -> None:
    """Sign ``user`` in on this browser, in the caller's transaction: a new server-side session and a new token
    (the session id rotates at every sign-in and password change); whatever the cookie held before is dropped."""
    token = sessions.start(db.session, user)
    session.clear()
    session[TOKEN_KEY] = token
    g.pop("user_session", None)


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    """The signed-in user: only while the cookie's token names a current session of theirs."""
    try:
        uid = int(user_id)
    except ValueError:
        return None
    found = sessions.find(db.session, session.get(TOKEN_KEY), uid)
    if found is None:
        return None
    row, user = found
    if not user.is_active:
        return None
    g.user_session = row
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
        row = _current_session()
        if row is None:  # its session ended since the user was loaded in this context
            logout_user()
            session.clear()
            return redirect(url_for("auth.login", next=_resume_target()))
        config = current_app.config
        ended = rules.session_end(row.started_at, row.last_seen_at, now,
                                  idle_minutes=float(config["IDLE_TIMEOUT_MINUTES"]),
                                  lifetime_hours=float(config["SESSION_LIFETIME_HOURS"]))
        if ended is not None:
            user = current_user._get_current_object()
            with transaction(claim=False):
                sessions.end(row, ended)
                accounts.record_sign_out(db.session, user, reason=ended)
            logout_user()
            session.clear()
            flash("Your session ended after a period of inactivity. Please sign in again." if ended == "timeout"
                  else "Your session reached its time limit. Please sign in again.", "warning")
            return redirect(url_for("auth.login", next=_resume_target()))
        if request.endpoint not in PASSIVE and sessions.touch(row, now, _touch_seconds(config)):
            with transaction(claim=False):
                pass  # the touched row commits
        due = current_user.must_change_password or rules.password_expired(
            current_user.password_changed_at, now, int(current_app.config["PASSWORD_MAX_AGE_DAYS"]))
        if due and request.endpoint not in _PASSWORD_CHANGE_ALLOWED:
            return redirect(url_for("auth.change_password"))
    else:
        audit.set_actor(db.session, name="anonymous")
    return None


def _touch_seconds(config: Any) -> float:
    """How often activity is written (``SESSION_TOUCH_SECONDS``), never more than a tenth of the idle timeout."""
    return min(float(config["SESSION_TOUCH_SECONDS"]), float(config["IDLE_TIMEOUT_MINUTES"]) * 6)


def _security_headers(response: Any) -> Any:
    if "Content-Security-Policy" not in response.headers:  # an SVG image sets its own, stricter one
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    if current_app.config["SESSION_COOKIE_SECURE"]:
        response.headers["Strict-Transport-Security"] = HSTS
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    throttle.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"
    app.before_request(_before_request)
    app.before_request(_replay_repeat)
    app.after_request(_record_location)
    app.after_request(_security_headers)
