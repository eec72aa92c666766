from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import login_required

from ..extensions import db
from ..services import results
from .actions import may_open

bp = Blueprint("main", __name__)


@bp.route("/")
@login_required
def index():
    """Home: whoever enters QC results sees the results due, overdue ones highlighted."""
    owed = results.due(db.session) if may_open("results.index") else []
    return render_template("index.html", owed=owed)
