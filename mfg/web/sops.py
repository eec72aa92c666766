"""Master record versions: list, read, load from the sops folder, approve with an e-signature."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from ..domain.errors import AuthenticationFailed, DomainError
from ..domain.signing import Meaning
from ..domain.sop_schema import DefinitionError
from ..extensions import db
from ..services import signatures, sops
from .forms import ConfirmForm, SignForm
from .security import signed_action, signing_needs_username, transaction

bp = Blueprint("sops", __name__, url_prefix="/sops")


@bp.route("/")
@login_required
def index():
    return render_template("sops/index.html", versions=sops.list_versions(db.session), load_form=ConfirmForm(),
                           sops_dir=current_app.config["SOPS_DIR"])


@bp.route("/load", methods=["POST"])
@login_required
def load():
    form = ConfirmForm()
    if form.validate_on_submit():
        try:
            with transaction():
                result = sops.load_directory(db.session, Path(current_app.config["SOPS_DIR"]),
                                             loader=current_user._get_current_object())
        except DomainError as exc:
            for problem in exc.problems:
                flash(problem, "error")
        else:
            for version in result.loaded:
                flash(f"Loaded {version.code} v{version.version} as a draft.", "success")
            if not result.loaded:
                flash("No new master record versions in the definitions folder.", "info")
    return redirect(url_for("sops.index"))


def _show(version, form, status=200):
    try:
        definition, definition_error = sops.definition(version), None
    except DefinitionError as exc:  # a stored version that today's schema no longer reads
        definition, definition_error = None, exc.errors
    return render_template("sops/show.html", version=version, definition=definition,
                           definition_error=definition_error,
                           signatures=signatures.for_record(db.session, version), form=form,
                           meaning=Meaning.APPROVED, needs_username=signing_needs_username()), status


@bp.route("/<int:sop_id>")
@login_required
def show(sop_id: int):
    return _show(sops.get(db.session, sop_id), SignForm())


@bp.route("/<int:sop_id>/approve", methods=["POST"])
@login_required
def approve(sop_id: int):
    version = sops.get(db.session, sop_id)
    form = SignForm()
    if form.validate_on_submit():
        outcome = signed_action(lambda: sops.approve(
            db.session, version, site_timezone=current_app.config["SITE_TIMEZONE"],
            signer=current_user._get_current_object(), password=form.password.data,
            username=form.username.data, require_username=signing_needs_username(), comment=form.comment.data))
        if outcome.locked_out:
            flash("Your account is locked after repeated wrong passwords.", "error")
            return redirect(url_for("auth.login"))
        if outcome.ok:
            flash(f"{version.code} v{version.version} approved: it is now effective.", "success")
            return redirect(url_for("sops.show", sop_id=sop_id))
        if isinstance(outcome.error, AuthenticationFailed):
            form.password.errors = list(form.password.errors) + outcome.problems
        else:
            form.form_errors.extend(outcome.problems)
    return _show(sops.get(db.session, sop_id), form, 400)
