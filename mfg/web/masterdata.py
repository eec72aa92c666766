"""Equipment and material lot screens. Everyone signed in may look; QA registers and receives."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import login_required

from ..domain.errors import DomainError
from ..extensions import db
from ..services import masterdata
from .forms import EquipmentForm, MaterialLotForm
from .security import roles_required, transaction

bp = Blueprint("masterdata", __name__, url_prefix="/masterdata")


def _page(equipment_form=None, lot_form=None, status=200):
    return render_template("masterdata/index.html", equipment=masterdata.list_equipment(db.session),
                           lots=masterdata.list_lots(db.session),
                           equipment_form=equipment_form or EquipmentForm(prefix="eq"),
                           lot_form=lot_form or MaterialLotForm(prefix="lot")), status


@bp.route("/")
@login_required
def index():
    return _page()


@bp.route("/equipment", methods=["POST"])
@roles_required("qa")
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
@roles_required("qa")
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
