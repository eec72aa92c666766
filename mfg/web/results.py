"""Pending results and product alerts: the results the QC laboratory owes (entered as their own signed
action, verified by a second operator), the cancellation of a batch started by mistake, and the alert every
clinical user sees until one of them acknowledges it. The guards decide; these views ask them."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from wtforms import StringField, TextAreaField
from wtforms.validators import DataRequired, Optional

from ..domain.signing import Meaning
from ..extensions import db
from ..models import PendingResult
from ..services import batches, lifecycle, results
from .forms import SignForm
from .security import roles_required, signed_action, signing_needs_username

bp = Blueprint("results", __name__)


class EntryForm(SignForm):
    result = StringField("Result", validators=[DataRequired("Enter the result.")])
    comment = TextAreaField("Comment (an out-of-specification result needs one)",
                            validators=[Optional()])


class VerifyForm(SignForm):
    comment = None


class CancelForm(SignForm):
    comment = TextAreaField("Reason for the cancellation", validators=[DataRequired("Give the reason.")])


def _user():
    return current_user._get_current_object()


def _tz() -> ZoneInfo:
    return ZoneInfo(current_app.config["SITE_TIMEZONE"])


def _page(*, forms: dict[int, SignForm] | None = None, status: int = 200):
    session = db.session
    owed = results.due(session)
    forms = forms or {}
    return render_template(
        "results/index.html", owed=owed,
        fields={d.result.id: results.field_of(session, d.result) for d in owed},
        answers={d.result.id: results.answers(results.field_of(session, d.result)) for d in owed},
        entry_forms={d.result.id: forms.get(d.result.id) or EntryForm(prefix=f"r{d.result.id}") for d in owed},
        verify_forms={d.result.id: forms.get(d.result.id) or VerifyForm(prefix=f"v{d.result.id}") for d in owed},
        needs_username=signing_needs_username(), performed=Meaning.PERFORMED, verified=Meaning.VERIFIED), status


@bp.route("/results")
@roles_required("operator", "qa")
def index():
    return _page()


@bp.route("/results/<int:result_id>/enter", methods=["POST"])
@login_required
def enter(result_id: int):
    pending = results.get(db.session, result_id)
    form = EntryForm(prefix=f"r{result_id}")
    if not form.validate_on_submit():
        return _page(forms={result_id: form}, status=400)
    outcome = signed_action(lambda: results.enter_result(
        db.session, pending, raw=form.result.data, comment=form.comment.data or "", signer=_user(),
        password=form.password.data, username=form.username.data, require_username=signing_needs_username(),
        tz=_tz()))
    if outcome.locked_out:
        return redirect(url_for("auth.login"))
    if outcome.ok:
        entered: PendingResult = results.get(db.session, result_id)
        flash(f"{entered.label}: {entered.result_text} entered and signed; a second operator verifies it."
              + ("" if entered.in_limits else " OUT OF SPECIFICATION: the batch is under investigation, its bags "
                 "not yet infused are blocked and the clinic is alerted."), "success" if entered.in_limits else "error")
        return redirect(url_for("results.index"))
    form.form_errors.extend(outcome.problems)
    return _page(forms={result_id: form}, status=400)


@bp.route("/results/<int:result_id>/verify", methods=["POST"])
@login_required
def verify(result_id: int):
    pending = results.get(db.session, result_id)
    form = VerifyForm(prefix=f"v{result_id}")
    if not form.validate_on_submit():
        return _page(forms={result_id: form}, status=400)
    outcome = signed_action(lambda: results.verify_result(
        db.session, pending, signer=_user(), password=form.password.data, username=form.username.data,
        require_username=signing_needs_username()))
    if outcome.locked_out:
        return redirect(url_for("auth.login"))
    if outcome.ok:
        flash(f"{pending.label}: result verified and signed.", "success")
        return redirect(url_for("results.index"))
    form.form_errors.extend(outcome.problems)
    return _page(forms={result_id: form}, status=400)


@bp.route("/batches/<int:batch_id>/cancel", methods=["POST"])
@login_required
def cancel(batch_id: int):
    batch = batches.get(db.session, batch_id)
    form = CancelForm(prefix="cancel")
    if form.validate_on_submit():
        outcome = signed_action(lambda: lifecycle.cancel(
            db.session, batch, reason=form.comment.data or "", signer=_user(), password=form.password.data,
            username=form.username.data, require_username=signing_needs_username()))
        if outcome.locked_out:
            return redirect(url_for("auth.login"))
        if outcome.ok:
            flash(f"Batch {batch.lot} cancelled and signed. It stays in the record.", "success")
            return redirect(url_for("batches.show", batch_id=batch_id))
        problems = outcome.problems
    else:
        problems = [e for errors in form.errors.values() for e in errors]
    for problem in problems:
        flash(problem, "error")
    return redirect(url_for("batches.show", batch_id=batch_id))


@bp.route("/alerts/<int:alert_id>/acknowledge", methods=["POST"])
@login_required
def acknowledge(alert_id: int):
    alert = lifecycle.get_alert(db.session, alert_id)
    form = VerifyForm(prefix=f"ack{alert_id}")
    if form.validate_on_submit():
        outcome = signed_action(lambda: lifecycle.acknowledge(
            db.session, alert, signer=_user(), password=form.password.data, username=form.username.data,
            require_username=signing_needs_username()))
        if outcome.locked_out:
            return redirect(url_for("auth.login"))
        if outcome.ok:
            flash("Product alert acknowledged and signed for the clinic.", "success")
            return redirect(url_for("main.index"))
        problems = outcome.problems
    else:
        problems = [e for errors in form.errors.values() for e in errors]
    for problem in problems:
        flash(problem, "error")
    return redirect(url_for("main.index"))


def alert_banner() -> dict:
    """For every page: the unacknowledged product alerts, shown to clinical users until one acknowledges."""
    if not current_user.is_authenticated or not current_user.has_role("clinical"):
        return {"product_alerts": []}
    alerts = lifecycle.active_alerts(db.session)
    return {"product_alerts": alerts, "alert_needs_username": signing_needs_username(),
            "alert_forms": {a.id: VerifyForm(prefix=f"ack{a.id}") for a in alerts}}
