"""A batch's signed documents: every revision listed and downloadable, and label printing (a reprint
needs a reason and a signature)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired

from ..extensions import db
from ..reports.pdf import SiteSigner, load_site_signer
from ..services import batches, document_jobs, documents, signatures
from .forms import PolicyForm
from .security import signed_action, signing_needs_username

bp = Blueprint("documents", __name__, url_prefix="/batches")


class LabelForm(PolicyForm):
    reason = StringField("Reason for a reprint", validators=[])
    username = StringField("User name", validators=[], render_kw={"autocomplete": "username"})
    password = PasswordField("Password", validators=[DataRequired("Re-enter your password to sign.")],
                             render_kw={"autocomplete": "current-password"})


def site_signer() -> SiteSigner:
    """The site's signing key and certificate from instance/ (or the configured PKCS#12)."""
    return load_site_signer(current_app.config, Path(current_app.instance_path))


@bp.app_template_global("documents_job")
def documents_job(batch):
    """The job of QA's decision whose documents do not exist yet, for the "being prepared" notice."""
    return document_jobs.open_job(db.session, batch)


def _page(batch, form=None, status=200):
    found = documents.revisions(db.session, batch)
    return render_template("documents/index.html", batch=batch, documents=found, kinds=documents.KINDS,
                           signed={d.id: signatures.for_record(db.session, d) for d in found},
                           form=form or LabelForm(), needs_username=signing_needs_username(),
                           reprint=any(d.kind == "labels" for d in found)), status


@bp.route("/<int:batch_id>/documents")
@login_required
def index(batch_id: int):
    return _page(batches.get(db.session, batch_id))


@bp.route("/<int:batch_id>/documents/<int:document_id>.pdf")
@login_required
def download(batch_id: int, document_id: int):
    document = documents.get_revision(db.session, batches.get(db.session, batch_id), document_id)
    return Response(document.content, mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{document.filename}"',
                             "X-Content-SHA256": document.sha256})


@bp.route("/<int:batch_id>/documents/<int:document_id>.zpl")
@login_required
def download_zpl(batch_id: int, document_id: int):
    """A labels revision as ZPL for Zebra printers, built from the label data its signed PDF embeds."""
    document = documents.get_revision(db.session, batches.get(db.session, batch_id), document_id)
    if document.kind != "labels":
        abort(404)
    text = documents.labels_zpl(document.content, demo=bool(current_app.config["DEMO"]),
                                label_size=tuple(current_app.config["LABEL_SIZE_IN"]))
    name = document.filename.removesuffix(".pdf") + ".zpl"
    return Response(text.encode("utf-8"), content_type="text/plain; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.route("/<int:batch_id>/labels", methods=["POST"])
@login_required
def print_labels(batch_id: int):
    batch = batches.get(db.session, batch_id)
    form = LabelForm()
    if not form.validate_on_submit():
        return _page(batch, form, 400)
    outcome = signed_action(lambda: documents.print_labels(
        db.session, batch, reason=form.reason.data or "", site=site_signer(), demo=bool(current_app.config["DEMO"]),
        signer=current_user._get_current_object(), password=form.password.data, username=form.username.data,
        require_username=signing_needs_username(), label_size=tuple(current_app.config["LABEL_SIZE_IN"])))
    if outcome.locked_out:
        return redirect(url_for("auth.login"))
    if outcome.ok:
        assert outcome.value is not None  # print_labels returns the revision it issued
        flash(f"Labels printed (revision {outcome.value.revision}) and signed.", "success")
        return redirect(url_for("documents.index", batch_id=batch_id))
    assert outcome.error is not None  # not ok
    form.form_errors.extend(outcome.error.problems)
    return _page(batch, form, 400)
