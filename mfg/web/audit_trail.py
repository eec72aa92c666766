"""The audit trail screen for QA: filters and keyset pagination, newest first."""

from __future__ import annotations

import csv
import io
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, render_template, request

from ..extensions import db
from ..models import AuditEntry
from ..services import audit, audit_pages
from .forms import AuditFilterForm
from .security import roles_required, transaction

bp = Blueprint("audit_trail", __name__, url_prefix="/audit")


def _filters(form: AuditFilterForm) -> audit.AuditFilter:
    """The filters a person set, the same for the screen and the CSV export. The dates a person types are the
    site's days (from the site's midnight to the next)."""
    tz = ZoneInfo(current_app.config["SITE_TIMEZONE"])
    form.action.choices = [("", "anything")] + audit_pages.action_choices(audit.actions(db.session))
    if not form.validate():
        return audit.AuditFilter()
    return audit.AuditFilter(
        username=form.username.data or None, action=form.action.data or None,
        entity_type=form.entity_type.data or None, entity_id=form.entity_id.data or None,
        since=datetime.combine(form.since.data, time(), tz) if form.since.data else None,
        until=(datetime.combine(form.until.data + timedelta(days=1), time(), tz)
               if form.until.data else None))


# Every column of the trail, in the table's order: the export is the record, not a view of it.
CSV_COLUMNS = [column.key for column in sa.inspect(AuditEntry).columns]
CSV_PAGE = 1000


# A cell that a spreadsheet would run as a formula (OWASP "CSV injection": a comment or reason typed as
# "=HYPERLINK(...)") is written with a leading apostrophe, which spreadsheets show as text. Numbers are left
# as they are. The export is a copy for reading: the trail's hashes verify against the database, not the CSV.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):  # aware UTC: ISO 8601 with its offset written as Z
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    text = str(value)
    if text.startswith(_FORMULA_START) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text and text.lower().lstrip("+-") not in ("inf", "infinity", "nan")


@bp.route("/export.csv")
@roles_required("qa", "admin")
def export_csv():
    """The filtered trail (the same filters as the screen, every page of it) as CSV: every column, times in
    UTC ISO 8601, newest first. The export itself is an audit entry (who took a copy of the trail, with which
    filters and how many entries), written after the rows were read, so it is not in its own file."""
    filters = _filters(AuditFilterForm(request.args))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    before: int | None = None
    rows = 0
    while True:  # page by page through the trail's indexes (``audit.search``), written as it is read
        entries, before = audit.search(db.session, filters, before_seq=before, limit=CSV_PAGE)
        writer.writerows([_csv_cell(getattr(entry, key)) for key in CSV_COLUMNS] for entry in entries)
        rows += len(entries)
        if before is None:
            break
    with transaction() as session:
        audit.record_event(session, "audit_trail.export", details={
            "entries": rows, **{key: _csv_cell(value) for key, value in vars(filters).items() if value is not None}})
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="audit-trail-{stamp}.csv"'})


@bp.route("/")
@roles_required("qa", "admin")
def index():
    form = AuditFilterForm(request.args)
    tz = ZoneInfo(current_app.config["SITE_TIMEZONE"])
    filters = _filters(form)
    before = request.args.get("before", type=int)
    entries, next_cursor = audit.search(db.session, filters, before_seq=before,
                                        limit=int(current_app.config["AUDIT_PAGE_SIZE"]))
    args = {k: v for k, v in request.args.items() if k != "before" and v}
    lines = audit_pages.describe(db.session, entries, tz)
    return render_template("audit/index.html", form=form, lines=lines, next_cursor=next_cursor,
                           args=args, first_page=before is None)
