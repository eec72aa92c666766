"""Subjects and donors (clinical coordinator): enrolment, eligibility, signed dose level."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from ..domain import isbt128
from ..domain.eligibility import limit_text, number_text
from ..domain.errors import DomainError
from ..domain.signing import Meaning
from ..extensions import db
from ..services import clinical, signatures, sops, trial
from .forms import (
    DonorTestForm,
    EligibilityForm,
    ScreeningForm,
    SignForm,
    SubjectForm,
    donor_form,
    donor_panel_form,
    subject_form,
)
from .security import signed_action, signing_needs_username, transaction

bp = Blueprint("clinical", __name__, url_prefix="/clinical")


def _criteria():  # noqa: ANN202 - the effective configuration's SubjectEligibility, or None
    try:
        return sops.trial_configuration(db.session).subject_eligibility
    except DomainError:
        return None


def _subject_form() -> SubjectForm:
    form = subject_form(_criteria(), prefix="subject")
    form.donor_id.choices = [(d.id, f"{d.code} ({d.eligibility})") for d in clinical.list_donors(db.session)]
    return form


def _index(subject_form=None, donor_form=None, status=200):
    from flask import request

    from ..services import batch_pages

    text, state = (request.args.get("q") or "").strip(), (request.args.get("state") or "").strip()
    states = batch_pages.batch_states()
    state = state if state in states else ""
    subjects = (batch_pages.search_subjects(db.session, text=text, status=state) if text or state
                else clinical.list_subjects(db.session))
    return render_template("clinical/index.html", subjects=subjects, q=text, state=state, states=states,
                           batches_of=clinical.batches_by_subject(db.session, subjects),
                           donors=clinical.list_donors(db.session), subject_form=subject_form or _subject_form(),
                           relationships=dict(clinical.donor_relationships(db.session)),
                           donor_form=donor_form or _donor_form(), needs_username=signing_needs_username(),
                           limit_text=limit_text, meaning=Meaning.APPROVED), status


def _donor_form():
    return donor_form(clinical.donor_relationships(db.session), prefix="donor")


@bp.route("/")
@login_required
def index():
    return _index()


def _run(action, form):
    try:
        with transaction():
            return action()
    except DomainError as exc:
        form.form_errors.extend(exc.problems)
        return None


@bp.route("/donors", methods=["POST"])
@login_required
def add_donor():
    form = _donor_form()
    if form.validate_on_submit():
        donor = _run(lambda: clinical.register_donor(db.session, code=form.code.data, abo_rh=form.abo_rh.data,
                                                     relationship=form.relationship.data or None,
                                                     user=current_user._get_current_object()), form)
        if donor is not None:
            return redirect(url_for("clinical.donor", donor_id=donor.id))
    return _index(donor_form=form, status=400)


@bp.route("/subjects", methods=["POST"])
@login_required
def add_subject():
    form = _subject_form()
    if form.validate_on_submit():
        user = current_user._get_current_object()

        def enrol():  # noqa: ANN202 - the Subject
            return clinical.enrol_subject(
                db.session, code=form.code.data, donor=clinical.get_donor(db.session, form.donor_id.data),
                weight_kg=form.weight_kg.data, measured_on=form.measured_on.data, user=user,
                **({"screening": form.screening(), "password": form.password.data, "username": form.username.data,
                    "require_username": signing_needs_username()} if isinstance(form, ScreeningForm) else {}))

        if isinstance(form, ScreeningForm):  # signed: a wrong password is counted, a lock-out signs out
            outcome = signed_action(enrol)
            if outcome.locked_out:
                return redirect(url_for("auth.login"))
            subject = outcome.value
            form.form_errors.extend(outcome.problems)
        else:
            subject = _run(enrol, form)
        if subject is not None:
            flash(f"Subject {subject.code} enrolled with chain-of-identity id {subject.coi}.", "success")
            return redirect(url_for("clinical.subject", subject_id=subject.id))
    return _index(subject_form=form, status=400)


def _panel_form():
    return donor_panel_form(clinical.donor_panel(db.session), prefix="panel")


def _donor_page(donor, test_form=None, eligibility_form=None, panel_form=None, status=200):
    panel = panel_form or _panel_form()
    tests = clinical.donor_panel(db.session)
    return render_template("clinical/donor.html", donor=donor,
                           relationship=clinical.relationship_label(db.session, donor),
                           blocking=clinical.eligible_problems(db.session, donor) if donor.eligibility == "pending"
                           else [],
                           test_form=test_form or DonorTestForm(prefix="test"), panel_form=panel,
                           panel_fields=[getattr(panel, f"result_{n}") for n in range(len(tests))],
                           eligibility_form=eligibility_form or EligibilityForm(prefix="elig")), status


@bp.route("/donors/<int:donor_id>")
@login_required
def donor(donor_id: int):
    return _donor_page(clinical.get_donor(db.session, donor_id))


@bp.route("/donors/<int:donor_id>/tests", methods=["POST"])
@login_required
def add_test(donor_id: int):
    donor = clinical.get_donor(db.session, donor_id)
    form = DonorTestForm(prefix="test")
    if form.validate_on_submit() and _run(lambda: clinical.record_donor_test(
            db.session, donor, test=form.test.data, result=form.result.data, specimen_date=form.specimen_date.data,
            user=current_user._get_current_object()), form) is not None:
        return redirect(url_for("clinical.donor", donor_id=donor_id))
    return _donor_page(clinical.get_donor(db.session, donor_id), test_form=form, status=400)


@bp.route("/donors/<int:donor_id>/panel", methods=["POST"])
@login_required
def add_panel(donor_id: int):
    """The whole infectious-disease panel of one specimen, in one form."""
    donor = clinical.get_donor(db.session, donor_id)
    form = _panel_form()
    tests = clinical.donor_panel(db.session)
    if form.validate_on_submit() and _run(lambda: clinical.record_donor_panel(
            db.session, donor, specimen_date=form.specimen_date.data,
            results={test: getattr(form, f"result_{n}").data for n, test in enumerate(tests)},
            user=current_user._get_current_object()), form) is not None:
        flash(f"Panel of {len(tests)} tests recorded for donor {donor.code}.", "success")
        return redirect(url_for("clinical.donor", donor_id=donor_id))
    return _donor_page(clinical.get_donor(db.session, donor_id), panel_form=form, status=400)


@bp.route("/donors/<int:donor_id>/eligibility", methods=["POST"])
@login_required
def eligibility(donor_id: int):
    donor = clinical.get_donor(db.session, donor_id)
    form = EligibilityForm(prefix="elig")
    if form.validate_on_submit():
        done = _run(lambda: clinical.determine_eligibility(  # type: ignore[func-returns-value]  # None; "or True" = ran
            db.session, donor, eligible=form.eligible.data == "eligible", summary=form.summary.data,
            user=current_user._get_current_object()) or True, form)
        if done:
            return redirect(url_for("clinical.donor", donor_id=donor_id))
    return _donor_page(clinical.get_donor(db.session, donor_id), eligibility_form=form, status=400)


def _subject_page(subject, form=None, problems=(), status=200, chosen_level: str | None = None):
    try:
        levels = sops.trial_configuration(db.session).dose_levels
    except DomainError:
        levels = []
    coi = isbt128.parse_coi(isbt128.COI_PREFIX + subject.coi)
    user = current_user._get_current_object()
    # the levels this subject may be given now, each asked of the guard (under an escalation design: the open one)
    levels = [level for level in levels
              if not clinical.guard_assign_dose_level(db.session, user, subject, level.code)] if levels else []
    opened = trial.get_decision(db.session, subject.escalation_decision_id)
    screening = clinical.screening_of(db.session, subject)
    return render_template("clinical/subject.html", subject=subject, coi=coi, levels=levels, screening=screening,
                           screening_signatures=signatures.for_record(db.session, screening) if screening else [],
                           number_text=number_text,
                           opened=trial.decision_name(*opened) if opened else None,
                           relationship=clinical.relationship_label(db.session, subject.donor),
                           batches=clinical.batches_of(db.session, subject),
                           signatures=signatures.for_record(db.session, subject), form=form or SignForm(),
                           problems=list(problems), needs_username=signing_needs_username(),
                           chosen_level=chosen_level,
                           meaning=Meaning.APPROVED), status


@bp.route("/subjects/<int:subject_id>")
@login_required
def subject(subject_id: int):
    return _subject_page(clinical.get_subject(db.session, subject_id))


@bp.route("/subjects/<int:subject_id>/dose", methods=["POST"])
@login_required
def assign_dose(subject_id: int):
    from flask import request

    subject = clinical.get_subject(db.session, subject_id)
    form = SignForm()
    problems: list[str] = []
    if form.validate_on_submit():
        outcome = signed_action(lambda: clinical.assign_dose_level(
            db.session, subject, level=request.form.get("level", ""), signer=current_user._get_current_object(),
            password=form.password.data, username=form.username.data, require_username=signing_needs_username()))
        if outcome.locked_out:
            return redirect(url_for("auth.login"))
        if outcome.ok:
            flash(f"Dose level {subject.dose_level} assigned and signed.", "success")
            return redirect(url_for("clinical.subject", subject_id=subject_id))
        problems = outcome.problems
    # every value kept after any error (the level chosen); only the password is cleared
    return _subject_page(clinical.get_subject(db.session, subject_id), form, problems, 400,
                         chosen_level=request.form.get("level") or None)
