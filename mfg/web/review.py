"""QA screens: the review queue, review by exception with the signed batch decision, and deviations
(opened by hand, investigated, closed with a signature).

The guards decide everything (who may decide, what blocks a release); these views show their answers
before the user acts (each decision the status allows, with its refusals; only the allowed ones can be
signed) and again after a refusal. A refused signed
action re-renders its page with status 400 and the service's messages, PermissionDenied included
(the releaser who performed or verified a step), as every other signed screen does.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from wtforms import HiddenField, RadioField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Optional

from ..domain import guards, isbt128
from ..domain.errors import DomainError
from ..domain.signing import Meaning
from ..extensions import db
from ..models import Batch, Deviation
from ..services import accounts, batches, deviations, results, review, signatures
from .actions import may_open
from .forms import PolicyForm, SignForm
from .security import roles_required, signed_action, signing_needs_username, transaction

bp = Blueprint("review", __name__, url_prefix="/review")

QA = review.QA
DECISION_LABELS = {"released": "Released", "conditionally_released": "Conditionally released", "rejected": "Rejected",
                   "under_investigation": "Under investigation", "recalled": "Recalled", "cancelled": "Cancelled"}
# How the decision panel names what is refused ("Release is not possible yet: ...").
DECISION_NOUNS = {"released": "Release", "conditionally_released": "Conditional release", "rejected": "Rejection",
                  "under_investigation": "Placing under investigation", "recalled": "Recall"}


class MarkForm(PolicyForm):
    input_rules = {"key": "review_key"}
    key = HiddenField(validators=[DataRequired()])
    comment = StringField("Comment (optional)", validators=[Optional()])


class DecisionForm(SignForm):
    """The decision and its e-signature: released and conditionally released sign "Released by",
    rejected signs "Rejected by"."""

    decision = RadioField("Decision", choices=[SelectChoice(k, v) for k, v in DECISION_LABELS.items()],
                          validators=[DataRequired("Choose a decision.")])
    comment = TextAreaField("Comment (a rejection, investigation or recall needs the reason)",
                            validators=[Optional()])


class OpenDeviationForm(PolicyForm):
    description = TextAreaField("What happened", validators=[DataRequired("Describe the deviation.")])


class InvestigationForm(PolicyForm):
    classification = SelectField("Classification", choices=[SelectChoice("", "choose…")] + [
        SelectChoice(c, c) for c in deviations.CLASSIFICATIONS])
    investigation = TextAreaField("Investigation")
    root_cause = TextAreaField("Root cause")
    impact = TextAreaField("Impact on this and other batches")
    capa_reference = StringField("CAPA reference (required for major and critical)")


class CloseForm(SignForm):
    """Closing signs the findings as they stand: no free comment (the service records "deviation closed")."""

    comment = None


def _user():
    return current_user._get_current_object()


def _names(ids) -> dict[int, str]:
    return {uid: accounts.get(db.session, uid).full_name for uid in set(ids) if uid is not None}


@bp.route("/")
@roles_required(QA)
def index():
    found = review.queue(db.session)
    return render_template("review/index.html", batches=found.batches, counts=found.counts,
                           open_deviations=found.open_deviations, batch_of=found.batch_of,
                           owed=results.due(db.session))


def _decisions(batch: Batch) -> tuple[dict[str, list[str]], list[str]]:
    """The decisions the batch's status still allows, each with the guard's refusals (empty: it may be
    signed now), and those of them that may be signed now, in the order of the radio buttons."""
    refused = {d: review.guard_decide(db.session, _user(), batch, d) for d in DECISION_NOUNS}
    open_now = {d: guards.texts(r) for d, r in refused.items() if not any(x.kind == "sequence" for x in r)}
    return open_now, [d for d, found in open_now.items() if not found]


def _batch_page(batch: Batch, *, decision_form: DecisionForm | None = None,
                open_form: OpenDeviationForm | None = None, problems: list[str] | None = None, status: int = 200):
    session = db.session
    items = review.exceptions(session, batch)
    marks = review.marks(session, batch)
    found = deviations.of_batch(session, batch)
    decisions = review.decisions(session, batch)
    open_now, allowed = _decisions(batch)
    form = decision_form or DecisionForm(prefix="decide")
    form.decision.choices = [SelectChoice(d, DECISION_LABELS[d]) for d in allowed]
    return render_template(
        "review/batch.html", batch=batch,
        coi=isbt128.parse_coi(isbt128.COI_PREFIX + batch.subject.coi) if batch.subject else None,
        din=isbt128.din_from_text(batch.din) if batch.din else None,
        items=items, marks=marks, reviewers=_names(m.reviewed_by_id for m in marks.values()),
        deviation_ids={f"deviation:{d.id}": d.id for d in found}, deviations=found,
        decision_problems=open_now, may_decide=bool(allowed),
        decision_nouns=DECISION_NOUNS, decision_labels=DECISION_LABELS,
        decisions=decisions, decided_signatures={d.id: signatures.for_record(session, d) for d in decisions},
        decision_form=form, mark_form=MarkForm(), open_form=open_form or OpenDeviationForm(prefix="deviation"),
        problems=problems or [], needs_username=signing_needs_username(),
        meanings=review.MEANINGS, pending_results=results.of_batch(session, batch)), status


@bp.route("/batches/<int:batch_id>")
@roles_required(QA)
def batch(batch_id: int):
    return _batch_page(batches.get(db.session, batch_id))


@bp.route("/batches/<int:batch_id>/mark", methods=["POST"])
@login_required
def mark(batch_id: int):
    the_batch = batches.get(db.session, batch_id)
    form = MarkForm()
    if not form.validate_on_submit():
        return _batch_page(the_batch, problems=[e for errors in form.errors.values() for e in errors], status=400)
    try:
        with transaction():
            review.mark_reviewed(db.session, the_batch, form.key.data, user=_user(), comment=form.comment.data or "")
    except DomainError as exc:
        return _batch_page(batches.get(db.session, batch_id), problems=exc.problems, status=400)
    flash("Marked reviewed.", "success")
    return redirect(url_for("review.batch", batch_id=batch_id))


@bp.route("/batches/<int:batch_id>/decide", methods=["POST"])
@login_required
def decide(batch_id: int):
    the_batch = batches.get(db.session, batch_id)
    form = DecisionForm(prefix="decide")
    # any known decision is accepted here: one the guard refuses is refused by the service, with its reasons
    form.decision.choices = [SelectChoice(d, DECISION_LABELS[d]) for d in DECISION_NOUNS]
    if not form.validate_on_submit():
        return _batch_page(the_batch, decision_form=form, status=400)
    from .. import document_worker
    from ..services import documents

    outcome = signed_action(lambda: documents.decide_and_request_documents(
        db.session, the_batch, decision=form.decision.data, comment=form.comment.data or "", signer=_user(),
        password=form.password.data, username=form.username.data, require_username=signing_needs_username(),
        tz=ZoneInfo(current_app.config["SITE_TIMEZONE"])))
    if outcome.locked_out:
        return redirect(url_for("auth.login"))
    if outcome.ok:
        assert outcome.value is not None  # the decision and its documents job
        decision, job = outcome.value
        document_worker.wake()  # committed: this process's worker makes the documents now
        flash(f"Batch {the_batch.lot}: {DECISION_LABELS[decision.decision].lower()}, signed. Documents being "
              f"prepared: " + ", ".join(documents.KINDS[kind].lower() for kind in job.kind_list) + ".", "success")
        return redirect(url_for("review.batch", batch_id=batch_id))
    form.form_errors.extend(outcome.problems)
    return _batch_page(batches.get(db.session, batch_id), decision_form=form, status=400)


@bp.route("/batches/<int:batch_id>/deviations", methods=["POST"])
@login_required
def open_deviation(batch_id: int):
    """Open a deviation by hand: from the QA review page, or (an operator) from the batch page."""
    the_batch = batches.get(db.session, batch_id)
    form = OpenDeviationForm(prefix="deviation")
    problems: list[str] = []
    if form.validate_on_submit():
        try:
            with transaction():
                deviation = deviations.open_by_hand(db.session, the_batch, description=form.description.data,
                                                user=_user())
                deviation_id, number = deviation.id, deviation.number
        except DomainError as exc:
            problems = exc.problems
        else:
            flash(f"Deviation {number} opened.", "warning")
            return redirect(url_for("review.deviation", deviation_id=deviation_id))
    else:
        problems = [e for errors in form.errors.values() for e in errors]
    if may_open("review.batch"):
        form.form_errors.extend(p for p in problems if p not in form.description.errors)
        return _batch_page(batches.get(db.session, batch_id), open_form=form, status=400)
    for problem in problems:  # an operator posts from the batch page, which is not ours to render
        flash(problem, "error")
    return redirect(url_for("batches.show", batch_id=batch_id))


def _deviation_page(deviation: Deviation, *, investigation_form: InvestigationForm | None = None,
                    close_form: CloseForm | None = None, status: int = 200):
    session = db.session
    form = investigation_form
    if form is None:
        form = InvestigationForm(prefix="inv", data={
            "classification": deviation.classification or "", "investigation": deviation.investigation or "",
            "root_cause": deviation.root_cause or "", "impact": deviation.impact or "",
            "capa_reference": deviation.capa_reference or ""})
    batch = batches.get(session, deviation.batch_id)
    return render_template(
        "review/deviation.html", deviation=deviation, batch=batch, records=batches.records(batch),
        names=_names((deviation.opened_by_id, deviation.closed_by_id)),
        signatures=signatures.for_record(session, deviation), investigation_form=form,
        close_form=close_form or CloseForm(prefix="close"), needs_username=signing_needs_username(),
        meaning=Meaning.APPROVED), status


@bp.route("/deviations/<int:deviation_id>")
@login_required
def deviation(deviation_id: int):
    return _deviation_page(deviations.get(db.session, deviation_id))


@bp.route("/deviations/<int:deviation_id>/investigation", methods=["POST"])
@login_required
def investigate(deviation_id: int):
    found = deviations.get(db.session, deviation_id)
    form = InvestigationForm(prefix="inv")
    if form.validate_on_submit():
        try:
            with transaction():
                deviations.investigate(db.session, found, classification=form.classification.data,
                                   investigation=form.investigation.data, root_cause=form.root_cause.data,
                                   impact=form.impact.data, capa_reference=form.capa_reference.data, user=_user())
        except DomainError as exc:
            form.form_errors.extend(exc.problems)
        else:
            flash(f"Investigation of {found.number} recorded.", "success")
            return redirect(url_for("review.deviation", deviation_id=deviation_id))
    return _deviation_page(deviations.get(db.session, deviation_id), investigation_form=form, status=400)


@bp.route("/deviations/<int:deviation_id>/close", methods=["POST"])
@login_required
def close_deviation(deviation_id: int):
    found = deviations.get(db.session, deviation_id)
    form = CloseForm(prefix="close")
    if form.validate_on_submit():
        outcome = signed_action(lambda: deviations.close(
            db.session, found, signer=_user(), password=form.password.data, username=form.username.data,
            require_username=signing_needs_username(),
            expected_row_version=request.form.get("row_version", type=int)))
        if outcome.locked_out:
            return redirect(url_for("auth.login"))
        if outcome.ok:
            assert outcome.value is not None  # close returns the deviation
            flash(f"Deviation {outcome.value.number} closed and signed.", "success")
            return redirect(url_for("review.deviation", deviation_id=deviation_id))
        form.form_errors.extend(outcome.problems)
    return _deviation_page(deviations.get(db.session, deviation_id), close_form=form, status=400)
