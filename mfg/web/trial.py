"""The trial's cohort ledger (issue [3.7] items 4-6): the screen for the clinical and QA roles, the clinic's
adverse events, the safety review's signed decisions and the ledger's signed PDF/A."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from ..domain import escalation
from ..domain.errors import DomainError
from ..domain.signing import Meaning
from ..extensions import db
from ..services import clinical, ledger_documents, trial
from .documents import site_signer
from .forms import CHOOSE, DecisionForm, DltEventForm, LedgerIssueForm
from .security import roles_required, signed_action, signing_needs_username, transaction

bp = Blueprint("trial", __name__, url_prefix="/trial")


def _event_form(book: trial.Ledger | None) -> DltEventForm:
    form = DltEventForm(prefix="event")
    form.subject_id.choices = [CHOOSE] + [(str(row.subject.id), f"{row.subject.code} ({row.level})")
                                          for row in (book.rows if book else []) if row.infused_at is not None]
    return form


def _decision_form(book: trial.Ledger | None) -> DecisionForm:
    form = DecisionForm(prefix="decision")
    levels = book.levels if book else []
    form.level.choices = [("", "No level: stop enrolment")] + [(level, level) for level in levels]
    if not form.is_submitted() and book is not None:
        form.level.data = book.recommendation.level or ""
        form.based_on.data = str(book.decisions[-1][0].id) if book.decisions else ""
    return form


def _page(event_form: DltEventForm | None = None, decision_form: DecisionForm | None = None,
          issue_form: LedgerIssueForm | None = None, status: int = 200):
    book = trial.ledger(db.session)
    boundaries = (escalation.boin_boundaries(book.design.target_dlt_rate)
                  if book is not None and book.design.target_dlt_rate is not None else None)
    return render_template("trial/ledger.html", book=book, boundaries=boundaries,
                           event_form=event_form or _event_form(book),
                           decision_form=decision_form or _decision_form(book),
                           issue_form=issue_form or LedgerIssueForm(prefix="issue"),
                           revisions=ledger_documents.ledger_documents(db.session),
                           needs_username=signing_needs_username(), approved=Meaning.APPROVED,
                           performed=Meaning.PERFORMED), status


@bp.route("/")
@roles_required("clinical", "qa")
def ledger():
    return _page()


@bp.route("/events", methods=["POST"])
@login_required
def record_event():
    book = trial.ledger(db.session)
    form = _event_form(book)
    if form.validate_on_submit():
        subject = clinical.get_subject(db.session, int(form.subject_id.data))
        outcome = signed_action(lambda: trial.record_dlt(
            db.session, subject, term=form.term.data, grade=form.grade.data, attribution=form.attribution.data,
            onset_on=form.onset_on.data, is_dlt={"yes": True, "no": False}.get(form.is_dlt.data),
            comment=form.comment.data or "", signer=current_user._get_current_object(), password=form.password.data,
            username=form.username.data, require_username=signing_needs_username()))
        if outcome.locked_out:
            return redirect(url_for("auth.login"))
        if outcome.ok:
            flash(f"Adverse event recorded for {subject.code} and signed.", "success")
            return redirect(url_for("trial.ledger"))
        form.form_errors.extend(outcome.problems)
    return _page(event_form=form, status=400)


@bp.route("/decisions", methods=["POST"])
@login_required
def decide():
    book = trial.ledger(db.session)
    form = _decision_form(book)
    if form.validate_on_submit():
        based_on = int(form.based_on.data) if (form.based_on.data or "").isdigit() else None
        outcome = signed_action(lambda: trial.decide(
            db.session, level=form.level.data or None, reason=form.reason.data or "", based_on=based_on,
            signer=current_user._get_current_object(), password=form.password.data, username=form.username.data,
            require_username=signing_needs_username()))
        if outcome.locked_out:
            return redirect(url_for("auth.login"))
        if outcome.ok and outcome.value is not None:
            flash(f"Escalation decision signed: {outcome.value.action}, {outcome.value.level or 'no level open'}.",
                  "success")
            return redirect(url_for("trial.ledger"))
        form.form_errors.extend(outcome.problems)
    return _page(decision_form=form, status=400)




@bp.route("/documents", methods=["POST"])
@login_required
def issue():
    """Issue the ledger as it is now as a signed PDF/A revision (the site key signs it; issuer and reason on record)."""
    form = LedgerIssueForm(prefix="issue")
    if form.validate_on_submit():
        try:
            with transaction():
                record, _ = ledger_documents.issue_ledger(
                    db.session, site=site_signer(), demo=bool(current_app.config["DEMO"]),
                    user=current_user._get_current_object(), reason=form.reason.data)
                revision = record.revision
        except DomainError as exc:
            form.form_errors.extend(exc.problems)
        else:
            flash(f"Cohort ledger revision {revision} issued and signed with the site key.", "success")
            return redirect(url_for("trial.ledger"))
    return _page(issue_form=form, status=400)


@bp.route("/documents/<int:document_id>.pdf")
@roles_required("clinical", "qa")
def download(document_id: int):
    document = ledger_documents.get_ledger_document(db.session, document_id)
    return Response(document.content, mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{document.filename}"',
                             "X-Content-SHA256": document.sha256})
