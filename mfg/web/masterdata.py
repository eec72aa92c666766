"""Equipment and material lot screens. Everyone signed in may look; QA registers and receives."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import login_required

from ..domain.errors import DomainError
from ..extensions import db
from ..services import masterdata
from .forms import EquipmentForm, EquipmentStatusForm, LotStatusForm, MaterialLotForm
from .security import transaction

bp = Blueprint("masterdata", __name__, url_prefix="/masterdata")


def _page(equipment_form=None, lot_form=None, status=200):
    return render_template("masterdata/index.html", equipment=masterdata.list_equipment(db.session),
                           lots=masterdata.list_lots(db.session),
                           equipment_form=equipment_form or EquipmentForm(prefix="eq"),
                           lot_form=lot_form or MaterialLotForm(prefix="lot"),
                           status_form=EquipmentStatusForm(), lot_status_form=LotStatusForm()), status


@bp.route("/")
@login_required
def index():
    return _page()


@bp.route("/equipment", methods=["POST"])
@login_required
def add_equipment():
    form = EquipmentForm(prefix="eq")
    if form.validate_on_submit():
        try:
            with transaction():
                masterdata.add_equipment(db.session, identifier=form.identifier.data,
                                         equipment_type=form.equipment_type.data,
                                         description=form.description.data or "",
                                         calibration_due=form.calibration_due.data)
        except DomainError as exc:
            form.form_errors.extend(exc.problems)
        else:
            flash(f"Equipment {form.identifier.data} registered.", "success")
            return redirect(url_for("masterdata.index"))
    return _page(equipment_form=form, status=400)


@bp.route("/lots", methods=["POST"])
@login_required
def receive_lot():
    form = MaterialLotForm(prefix="lot")
    if form.validate_on_submit():
        try:
            with transaction():
                masterdata.receive_lot(db.session, material=form.material.data, lot_number=form.lot_number.data,
                                       expiry=form.expiry.data, qc_status=form.qc_status.data)
        except DomainError as exc:
            form.form_errors.extend(exc.problems)
        else:
            flash(f"{form.material.data} lot {form.lot_number.data} received.", "success")
            return redirect(url_for("masterdata.index"))
    return _page(lot_form=form, status=400)


@bp.route("/equipment/<int:equipment_id>/status", methods=["POST"])
@login_required
def equipment_status(equipment_id: int):
    form = EquipmentStatusForm()
    if form.validate_on_submit():
        try:
            with transaction():
                masterdata.set_equipment_status(db.session, masterdata.get_equipment(db.session, equipment_id),
                                                status=form.status.data, calibration_due=form.calibration_due.data,
                                                reason=form.reason.data)
        except DomainError as exc:
            for problem in exc.problems:
                flash(problem, "error")
        else:
            flash("Equipment updated.", "success")
    else:
        _flash_errors(form, "Status, calibration date and a reason are required.")
    return redirect(url_for("masterdata.index"))


@bp.route("/lots/<int:lot_id>/status", methods=["POST"])
@login_required
def lot_status(lot_id: int):
    form = LotStatusForm()
    if form.validate_on_submit():
        try:
            with transaction():
                masterdata.set_lot_status(db.session, masterdata.get_lot(db.session, lot_id),
                                          qc_status=form.qc_status.data, reason=form.reason.data)
        except DomainError as exc:
            for problem in exc.problems:
                flash(problem, "error")
        else:
            flash("Lot QC status updated.", "success")
    else:
        _flash_errors(form, "A QC status and a reason are required.")
    return redirect(url_for("masterdata.index"))


def _flash_errors(form, missing: str) -> None:  # noqa: ANN001 - a form
    """The form's errors on the page it returns to: ``missing`` for an empty required field, and the message of
    each input the input policy refused."""
    problems = [problem for errors in form.errors.values() for problem in errors]
    refused = [problem for problem in problems if problem != "This field is required."]
    for problem in ([missing] if len(refused) < len(problems) else []) + refused:
        flash(problem, "error")
