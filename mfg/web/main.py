from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, render_template
from flask_login import current_user, login_required

from ..extensions import db
from ..services import batch_pages, results, review
from .actions import may_open

bp = Blueprint("main", __name__)


@bp.route("/")
@login_required
def index():
    """Home: each person's work. An operator's next steps and verifications (the work queue's, as the step
    guards allow them), the clinic's products awaiting a hand-off or the bedside check (as the custody guards
    allow), QA's batches to review and open deviations, and the results due to whoever enters them."""
    user = current_user._get_current_object()
    queue = batch_pages.overview(db.session, user).queue
    clinic = batch_pages.clinic_work(db.session, user, tz=ZoneInfo(current_app.config["SITE_TIMEZONE"]))
    qa = review.queue(db.session) if may_open("review.index") else None
    owed = results.due(db.session) if may_open("results.index") else []
    return render_template("index.html", queue=queue, clinic=clinic, review=qa, owed=owed)
