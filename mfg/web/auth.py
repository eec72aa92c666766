from __future__ import annotations

from flask import Blueprint, current_app, flash, g, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from ..domain.errors import AuthenticationFailed, DomainError
from ..extensions import db
from ..services import accounts, sessions
from .forms import ChangePasswordForm, LoginForm
from .security import begin_session, policy, safe_next, stores_nothing, transaction
from .throttle import throttle

bp = Blueprint("auth", __name__, url_prefix="/auth")

GENERIC_FAILURE = "Invalid user name or password."
THROTTLED = "Too many failed sign-ins. Try again in {minutes} minute(s), or ask an administrator."


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = LoginForm()
    next_url = safe_next(request.args.get("next"))
    if form.validate_on_submit():
        username, address = form.username.data, request.remote_addr or ""
        limits = throttle()
        refused = limits.refused(username, address)
        if refused is not None:  # before the password is checked; the same for every account
            with transaction():
                accounts.record_throttled(db.session, username, refused)
            flash(THROTTLED.format(minutes=limits.retry_minutes(refused, username, address)), "error")
            return render_template("auth/login.html", form=form), 429
        try:
            with transaction():
                result = accounts.authenticate(db.session, username, form.password.data, policy())
                begin_session(result.user)
        except AuthenticationFailed:
            # One message for every failure: unknown user, wrong password, locked or inactive account.
            limits.failed(username, address)
            flash(GENERIC_FAILURE, "error")
            return render_template("auth/login.html", form=form), 401
        login_user(result.user)
        if result.must_change_password or result.password_expired:
            flash("You must set a new password before you continue." if result.must_change_password
                  else "Your password has expired. Please set a new one.", "warning")
            return redirect(url_for("auth.change_password"))
        return redirect(next_url or url_for("main.index"))
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    user = current_user._get_current_object()
    with transaction():
        accounts.record_sign_out(db.session, user)
        sessions.end(g.user_session, "logout")
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/keep-alive", methods=["POST"])
@stores_nothing
@login_required
def keep_alive():
    """"Stay signed in" (mfg/static/session.js): the request itself refreshes the session's last activity
    (``security._before_request``), unless the session has already ended, which redirects to the sign-in
    page instead. Records nothing: it is neither a sign-in nor a change to GMP data."""
    return jsonify(signed_in=True, idle_seconds=float(current_app.config["IDLE_TIMEOUT_MINUTES"]) * 60)


@bp.route("/password", methods=["GET", "POST"])
@login_required
def change_password():
    form = ChangePasswordForm()
    if form.validate_on_submit():
        user = current_user._get_current_object()
        try:
            with transaction():
                accounts.change_password(db.session, user, current=form.current.data, new=form.new.data,
                                         policy=policy())  # ends every session of the account
                begin_session(user)  # this browser goes on under a new one
        except AuthenticationFailed as exc:
            form.current.errors = list(form.current.errors) + exc.problems
            if not current_user.is_authenticated:
                flash("Your account is locked. An administrator must unlock it.", "error")
                return redirect(url_for("auth.login"))
        except DomainError as exc:
            form.new.errors = list(form.new.errors) + exc.problems
        else:
            login_user(user)
            flash("Your password was changed.", "success")
            return redirect(url_for("main.index"))
    return render_template("auth/change_password.html", form=form, min_length=policy().min_length)
