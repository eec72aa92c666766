"""Chain-of-custody screens: the batch's custody log, a signed hand-off and the two-person bedside check."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from wtforms import Form, FormField, PasswordField, StringField
from wtforms.validators import DataRequired

from ..domain import isbt128
from ..domain.errors import DomainError, IdentityMismatch, ProductBlocked
from ..domain.signing import Meaning
from ..extensions import db
from ..models import Batch
from ..services import accounts, bags, batches, custody, identity, lifecycle, signatures
from .forms import InputPolicy, PolicyForm
from .security import SignedOutcome, mark_signed, signed_action, signing_needs_username, transaction

bp = Blueprint("custody", __name__, url_prefix="/batches")

# The scanner convention of step screens (step_fields.ScanWidget): app.js moves to the next input when
# the scanner "presses" Enter in an input carrying data-scan.
_SCAN = {"autocomplete": "off", "data-scan": "1", "placeholder": "scan or type"}


class HandOffForm(PolicyForm):
    input_rules = {"scanned_din": "scanned_code", "from_location": "location", "to_location": "location"}
    scanned_din = StringField("Scan bag DIN", validators=[DataRequired("Scan the bag's DIN.")],
                              render_kw=_SCAN | {"autofocus": True})
    from_location = StringField("From", validators=[DataRequired()])
    to_location = StringField("To", validators=[DataRequired()])
    condition = StringField("Condition", validators=[DataRequired()],
                            render_kw={"placeholder": "e.g. sealed, intact, 2-8 °C"})
    username = StringField("User name", validators=[], render_kw={"autocomplete": "username"})
    password = PasswordField("Password", validators=[DataRequired("Re-enter your password to sign.")],
                             render_kw={"autocomplete": "current-password"})


class BedsidePersonForm(InputPolicy, Form):
    """One person's panel: their own credentials (always both) and their own two scans."""

    input_rules = {"scanned_din": "scanned_code", "scanned_bag": "scanned_code", "scanned_coi": "scanned_code"}

    # Two people share one screen: the browser must not fill in the signed-in user's credentials.
    username = StringField("User name", validators=[DataRequired()],
                           render_kw={"autocomplete": "off"})
    password = PasswordField("Password", validators=[DataRequired()], render_kw={"autocomplete": "off"})
    scanned_din = StringField("Scan bag DIN", validators=[DataRequired("Scan the bag's DIN.")],
                              render_kw=_SCAN)
    scanned_bag = StringField("Scan bag label (product code)", validators=[
        DataRequired("Scan the bag's product code.")], render_kw=_SCAN)
    scanned_coi = StringField("Scan subject COI", validators=[DataRequired("Scan the subject's COI.")], render_kw=_SCAN)


class BedsideForm(PolicyForm):
    first = FormField(BedsidePersonForm, "Person 1")
    second = FormField(BedsidePersonForm, "Person 2")


def _tz() -> ZoneInfo:
    return ZoneInfo(current_app.config["SITE_TIMEZONE"])


def _coi(batch: Batch) -> isbt128.CoiId | None:
    return isbt128.parse_coi(isbt128.COI_PREFIX + batch.subject.coi) if batch.subject else None


def _page(batch: Batch, *, handoff_form: HandOffForm | None = None, bedside_form: BedsideForm | None = None,
          hard_stop: IdentityMismatch | ProductBlocked | None = None, status: int = 200):
    session = db.session
    events = custody.events(session, batch)
    names = {uid: accounts.get(session, uid).full_name
             for e in events for uid in (e.performed_by_id, e.verified_by_id) if uid is not None}
    return render_template(
        "custody/show.html", batch=batch, coi=_coi(batch),
        din=isbt128.din_from_text(batch.din) if batch.din else None, events=events, names=names,
        signed={e.id: signatures.for_record(session, e) for e in events},
        bags=bags.of_batch(session, batch), bag_states=lifecycle.bag_states(session, batch),
        bag_stops=lifecycle.bag_stops(session, batch, tz=_tz()),
        handoff_form=handoff_form or HandOffForm(prefix="handoff"),
        bedside_form=bedside_form or BedsideForm(prefix="bedside"),
        stop=hard_stop.stop if hard_stop else None, stop_deviation=hard_stop.deviation if hard_stop else None,
        needs_username=signing_needs_username(), performed=Meaning.PERFORMED, verified=Meaning.VERIFIED), status


def _scan_fields(form: HandOffForm | BedsideForm) -> dict[str, Any]:
    """The form's scans, named as the custody service names a scan that did not match."""
    if isinstance(form, BedsideForm):
        return {f"{n}.{key}": panel[name] for n, panel in ((1, form.first), (2, form.second))
                for key, name in (("din", "scanned_din"), ("bag", "scanned_bag"), ("coi", "scanned_coi"))}
    return {"din": form.scanned_din}


def _refused(batch_id: int, form: HandOffForm | BedsideForm, outcome: SignedOutcome):
    """Re-render after a refused action: a hard stop over the whole page, anything else on the form."""
    forms = {"bedside_form" if isinstance(form, BedsideForm) else "handoff_form": form}
    error = outcome.error
    if isinstance(error, IdentityMismatch | ProductBlocked):
        # The scans that stopped start again from a fresh scan of the container in hand; the correct ones
        # are kept: the scan that did not match, or the bag (or product) that may not be given.
        scans = _scan_fields(form)
        stopped = error.fields if isinstance(error, IdentityMismatch) else \
            [key for key in scans if key.endswith("bag")] or list(scans)
        for key in stopped:
            scans[key].data = ""
        return _page(batches.get(db.session, batch_id), hard_stop=error, status=400, **forms)
    form.form_errors.extend(outcome.problems)
    return _page(batches.get(db.session, batch_id), status=400, **forms)


_CHECKED = {"din": "batch.din", "coi": "subject.coi", "bag": "bag.product_code"}


@bp.route("/<int:batch_id>/custody/check")
@login_required
def check_scan(batch_id: int):
    """Whether a scan just read at a hand-off or the bedside was misread (scan again), asked by scan.js as it
    arrives: the server's own check (``identity.misread``), read only. Never whether it matches the batch."""
    from flask import abort, jsonify, request

    batches.get(db.session, batch_id)
    expected = _CHECKED.get(request.args.get("scan", ""))
    if expected is None:
        abort(404)
    value = request.args.get("value", "")[:200]
    problems = [f"{problem}: scan again" for problem in identity.misread(expected, value)] if value.strip() else []
    return jsonify({"ok": not problems, "problems": problems})


@bp.route("/<int:batch_id>/custody")
@login_required
def show(batch_id: int):
    return _page(batches.get(db.session, batch_id))


@bp.route("/<int:batch_id>/custody/handoff", methods=["POST"])
@login_required
def handoff(batch_id: int):
    batch = batches.get(db.session, batch_id)
    form = HandOffForm(prefix="handoff")
    if not form.validate_on_submit():
        return _page(batch, handoff_form=form, status=400)
    outcome = signed_action(lambda: custody.hand_off(
        db.session, batch, scanned_din=form.scanned_din.data, from_location=form.from_location.data,
        to_location=form.to_location.data, condition=form.condition.data,
        signer=current_user._get_current_object(), password=form.password.data, username=form.username.data,
        require_username=signing_needs_username(), tz=_tz()))
    if outcome.locked_out:
        return redirect(url_for("auth.login"))
    if outcome.ok:
        assert outcome.value is not None  # hand_off returns the event it recorded
        flash(f"Hand-off from {outcome.value.from_location} to {outcome.value.to_location} recorded and signed.",
              "success")
        return redirect(url_for("custody.show", batch_id=batch_id))
    return _refused(batch_id, form, outcome)


def _scan(panel: FormField) -> custody.BedsideScan:
    return custody.BedsideScan(user=signatures.signer_named(db.session, panel.username.data),
                               username=panel.username.data,
                               password=panel.password.data, scanned_din=panel.scanned_din.data,
                               scanned_coi=panel.scanned_coi.data, scanned_bag=panel.scanned_bag.data)


@bp.route("/<int:batch_id>/custody/bedside", methods=["POST"])
@login_required
def bedside(batch_id: int):
    batch = batches.get(db.session, batch_id)
    form = BedsideForm(prefix="bedside")
    if not form.validate_on_submit():
        return _page(batch, bedside_form=form, status=400)
    # Not signed_action: the signed-in user need not be one of the two signers, and only a signer's
    # session may then sign with the password alone (21 CFR 11.200).
    try:
        with transaction():
            event = custody.bedside_check(db.session, batch, first=_scan(form.first), second=_scan(form.second),
                                          recorded_by=current_user._get_current_object(), tz=_tz())
            signers = (event.performed_by_id, event.verified_by_id)
    except DomainError as exc:
        outcome: SignedOutcome = SignedOutcome(error=exc)
        if outcome.locked_out:
            return redirect(url_for("auth.login"))
        return _refused(batch_id, form, outcome)
    if current_user.id in signers:
        mark_signed()
    flash("Bedside identity check recorded: both scans matched, signed by two people.", "success")
    return redirect(url_for("custody.show", batch_id=batch_id))
