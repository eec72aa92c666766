"""The audit trail screen for QA: filters and keyset pagination, newest first."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, render_template, request

from ..extensions import db
from ..services import audit, audit_pages
from .forms import AuditFilterForm
from .security import roles_required

bp = Blueprint("audit_trail", __name__, url_prefix="/audit")


@bp.route("/")
@roles_required("qa", "admin")
def index():
    form = AuditFilterForm(request.args)
    tz = ZoneInfo(current_app.config["SITE_TIMEZONE"])  # the dates a person types are the site's days
    form.action.choices = [("", "anything")] + audit_pages.action_choices(audit.actions(db.session))
    filters = audit.AuditFilter()
    if form.validate():
        filters = audit.AuditFilter(
            username=form.username.data or None, action=form.action.data or None,
            entity_type=form.entity_type.data or None, entity_id=form.entity_id.data or None,
            since=datetime.combine(form.since.data, time(), tz) if form.since.data else None,
            until=(datetime.combine(form.until.data + timedelta(days=1), time(), tz)
                   if form.until.data else None))
    before = request.args.get("before", type=int)
    entries, next_cursor = audit.search(db.session, filters, before_seq=before,
                                        limit=int(current_app.config["AUDIT_PAGE_SIZE"]))
    args = {k: v for k, v in request.args.items() if k != "before" and v}
    lines = audit_pages.describe(db.session, entries, tz)
    return render_template("audit/index.html", form=form, lines=lines, next_cursor=next_cursor,
                           args=args, first_page=before is None)
