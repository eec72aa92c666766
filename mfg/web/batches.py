"""Batch execution screens: work queue, batch page, one screen per step, verification, correction."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from markdown_it import MarkdownIt

from ..domain import display, limits, values, words
from ..domain.errors import AuthenticationFailed, DomainError, IdentityMismatch, StepConflict
from ..domain.signing import Meaning
from ..domain.sop_schema import step_index
from ..extensions import db
from ..models import utcnow
from ..services import batch_pages, batches, evaluation, review, signatures, starting, steps, trial
from .forms import ConfirmForm, SignForm
from .security import signed_action, signing_needs_username, stores_nothing, transaction
from .step_fields import WIDGETS, raw_value, step_form_class

bp = Blueprint("batches", __name__, url_prefix="/batches")
_markdown = MarkdownIt("commonmark", {"html": False})  # instructions: Markdown, never raw HTML


def _tz() -> ZoneInfo:
    return ZoneInfo(current_app.config["SITE_TIMEZONE"])


@bp.app_template_filter("markdown")
def markdown_filter(text: str) -> str:
    from markupsafe import Markup

    return Markup(_markdown.render(text or ""))


@bp.app_template_filter("shown")
def shown(value, field) -> str:
    """A recorded value as screens show it: with its unit (``200.0 × 10⁶ cells``); date-times in the site time
    zone."""
    return words.shown(field, value.text, values.display(field, value.text, tz=_tz()))


@bp.app_template_filter("limits")
def limits_filter(field, context=None) -> str:
    """A field's limits in words (named limits with the batch's values, when given): ``≥ 70.1; ≤ 100``,
    ``must match DIN``."""
    return words.limits(field, context)


@bp.app_template_filter("limit_attrs")
def limit_attrs(field, context=None, first: bool = False) -> dict[str, object]:
    """The input's attributes on a step screen: autofocus on the first field, and the limits the screen states,
    as numbers (``data-min``, ``data-max``, ``data-below``), so that ``static/flow.js`` offers the value's comment
    box as soon as an entry is outside them. The server judges the value (``values.limit_problems``)."""
    attrs: dict[str, object] = {"autofocus": True} if first else {}
    if field.type in ("number", "integer"):
        for name in ("min", "max", "below"):
            limit = getattr(field, name, None)
            value = None if limit is None else limits.limit_value(limit, context)
            if value is not None:
                attrs[f"data-{name}"] = str(value)
    return attrs


@bp.app_template_filter("local")
def local_time(moment) -> str:
    if moment is None:
        return ""
    return evaluation.local_text(moment, _tz())


@bp.route("/")
@login_required
def index():
    codes = starting.startable_codes(db.session, current_user._get_current_object())
    page = batch_pages.overview(db.session, current_user)
    before = request.args.get("before", type=int)
    history, next_cursor = batch_pages.decided_batches(db.session, before_id=before)
    clinic = batch_pages.clinic_work(db.session, current_user._get_current_object(), tz=_tz())
    search = _search()
    return render_template("batches/index.html", queue=page.queue, batches=page.active, stages=page.stages,
                           clinic=clinic, search=search, states=batch_pages.batch_states(),
                           history=history, next_cursor=next_cursor, first_page=before is None, codes=codes,
                           form=ConfirmForm())


def _search() -> dict | None:
    """The batch search of the work queue (``?q=`` DIN or subject code, ``?state=``): None when not asked."""
    text, state = (request.args.get("q") or "").strip(), (request.args.get("state") or "").strip()
    if not (text or state):
        return None
    if state not in batch_pages.batch_states():
        state = ""
    return {"q": text, "state": state, "found": batch_pages.search_batches(db.session, text=text, status=state)}


@bp.route("/start", methods=["POST"])
@login_required
def start():
    form = ConfirmForm()
    if form.validate_on_submit():
        try:
            with transaction():
                batch = starting.start_batch(db.session, codes=[request.form.get("code", "")],
                                            user=current_user._get_current_object())
        except DomainError as exc:
            for problem in exc.problems:
                flash(problem, "error")
        else:
            flash(f"Batch {batch.lot} started.", "success")
            return redirect(url_for("batches.show", batch_id=batch.id))
    return redirect(url_for("batches.index"))


@bp.route("/start-product", methods=["POST"])
@login_required
def start_product():
    from ..services import clinical

    form = ConfirmForm()
    if form.validate_on_submit():
        try:
            with transaction():
                batch = starting.start_product_batch(
                    db.session, subject=clinical.get_subject(db.session, request.form.get("subject_id", type=int) or 0),
                    user=current_user._get_current_object())
        except DomainError as exc:
            for problem in exc.problems:
                flash(problem, "error")
        else:
            flash(f"Batch record {batch.lot} opened: the collection bag must carry this DIN.", "success")
            return redirect(url_for("batches.show", batch_id=batch.id))
    return redirect(request.referrer or url_for("clinical.index"))


@bp.route("/<int:batch_id>")
@login_required
def show(batch_id: int):
    batch = batches.get(db.session, batch_id)
    page = batch_pages.batch_page(db.session, batch, current_user._get_current_object())
    opened = trial.get_decision(db.session, batch.escalation_decision_id)  # the decision pinned with the dose
    return render_template("batches/show.html", batch=batch, records=page.records, by_step=page.by_step,
                           dose_decision=trial.decision_name(*opened) if opened else None,
                           open_refs=page.open_refs, progress=page.progress, deadlines=page.deadlines,
                           deviations=page.deviations, bags=page.bags, charts=page.charts, now=utcnow(),
                           next_open=page.current, waiting=page.waiting, stages=page.stages, version=page.version,
                           poll_seconds=current_app.config["BATCH_PAGE_POLL_SECONDS"],
                           decisions=review.decisions(db.session, batch), needs_username=signing_needs_username())


@bp.route("/<int:batch_id>/version.json")
@login_required
def version(batch_id: int):
    """What the open batch page polls (``static/flow.js``): the page's version (``batch_pages.page_version``:
    everything the page shows) and who signed last. When the version changes the page reloads itself, unless
    the person looking at it has typed into a form, has a field focused, or opened a <details> or <dialog>: then
    it says who changed the batch and offers the reload, so nothing typed is lost. A poll is not activity: it
    does not keep an idle session alive (``security.PASSIVE``)."""
    found = batch_pages.page_version(db.session, batches.get(db.session, batch_id))
    return {"version": found.token, "by": found.by, "at": local_time(found.at) if found.at else None}


@bp.route("/<int:batch_id>/growth-<int:number>.svg")
@login_required
def growth_chart(batch_id: int, number: int):
    """The batch's growth chart as an SVG image, drawn on the server from the recorded values."""
    from flask import Response

    from ..reports.growth_chart import growth_chart_svg
    from ..services import growth

    found = growth.charts(db.session, batches.get(db.session, batch_id))
    if not 0 <= number < len(found):
        abort(404)
    chart = found[number]
    svg = growth_chart_svg(chart.points, title=chart.chart.title, y_label=chart.chart.unit)
    response = Response(svg, mimetype="image/svg+xml")
    # An image cannot run scripts; matplotlib styles its SVG inline, which the page's policy would refuse.
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return response


def _step(batch, position: int, step_id: str):
    records = batches.records(batch)
    if not 0 <= position < len(records):
        abort(404)
    found = step_index(records[position]).get(step_id)
    if found is None:
        abort(404)
    return found


@bp.route("/<int:batch_id>/step/<int:position>/<step_id>/<int:instance>", methods=["GET", "POST"])
@login_required
def step(batch_id: int, position: int, step_id: str, instance: int):
    batch = batches.get(db.session, batch_id)
    stage, step_def = _step(batch, position, step_id)
    form = step_form_class(step_def)()
    problems: list[str] = []
    stop, stop_deviation = None, None
    sign_problems: list[str] = []
    if request.method == "POST":
        if form.validate_on_submit():
            entry = _entry(form, step_def)
            outcome = signed_action(lambda: steps.perform_step(
                db.session, batch, position=position, step_id=step_id, instance=instance, entry=entry,
                signer=current_user._get_current_object(), password=form.password.data,
                username=form.username.data, require_username=signing_needs_username(), tz=_tz()))
            if outcome.locked_out:
                return redirect(url_for("auth.login"))
            if isinstance(outcome.error, StepConflict):
                done = batches.find_execution(db.session, batch, position, step_id, instance)
                if done is not None:
                    flash(f"{step_def.title} was already completed by {done.performed_by.full_name} at "
                          f"{done.performed_at:%Y-%m-%d %H:%M:%S} UTC. Nothing you entered was stored.", "error")
                    return redirect(url_for("batches.execution", batch_id=batch.id, execution_id=done.id))
            if outcome.ok:
                assert outcome.value is not None  # perform_step returns the execution it recorded
                flagged = [v for v in outcome.value.values if not v.in_limits]
                flash(f"{step_def.title} recorded and signed." + (
                    f" {len(flagged)} value(s) out of limit: a deviation was opened." if flagged else ""),
                      "warning" if flagged else "success")
                return redirect(url_for("batches.show", batch_id=batch.id))
            problems = outcome.problems
            if isinstance(outcome.error, AuthenticationFailed):  # shown beside the password, the rest kept
                sign_problems, problems = problems, []
            if isinstance(outcome.error, IdentityMismatch):
                # the full-screen stop; the scans that did not match start again from a fresh scan of the
                # container in hand, the correct ones are kept
                stop, stop_deviation = outcome.error.stop, outcome.error.deviation
                for field_id in outcome.error.fields:
                    getattr(form, f"v_{field_id}").data = ""
        status = 400
    else:
        status = 200
    window = step_def.time_window
    window_hours = evaluation.window_hours(db.session, batch, window.max_hours) if window else None
    preview = evaluation.preview(db.session, batch, position, step_def, _entry(form, step_def), _tz(), instance)
    field_problems, problems_elsewhere = _problems_by_field(step_def, problems)
    context = evaluation.context_numbers(db.session, batch)
    needs_comment = {p.field_id for p in preview.fields if p.limit_problems} if problems else set()
    return render_template("batches/step.html", batch=batch, stage=stage, step=step_def, position=position,
                           context=context, needs_comment=needs_comment, preview=preview,
                           shown={p.field_id: p for p in preview.fields},
                           field_problems=field_problems, problems_elsewhere=problems_elsewhere,
                           sign_problems=sign_problems,
                           records=batches.records(batch),
                           instance=instance, form=form, problems=problems, widgets=WIDGETS, window_hours=window_hours,
                           stop=stop, stop_deviation=stop_deviation,
                           needs_username=signing_needs_username(), meaning=Meaning.PERFORMED), status


@bp.route("/<int:batch_id>/step/<int:position>/<step_id>/check")
@login_required
def check_scan(batch_id: int, position: int, step_id: str):
    """What a scan just read into a step's field tells the operator to scan again for (a check character that
    does not match, a malformed code, a lot or equipment code that does not exist), asked by scan.js as the
    scan arrives: the server's own check (``evaluation.misread``), read only. Never whether it matches."""
    from flask import jsonify

    batch = batches.get(db.session, batch_id)
    _stage, step_def = _step(batch, position, step_id)
    found = next((f for f in step_def.fields if f.id == request.args.get("field", "")), None)
    if found is None:
        abort(404)
    problems = evaluation.misread(db.session, found, request.args.get("value", ""))
    return jsonify({"ok": not problems, "problems": problems})
def _entry(form, step_def) -> evaluation.StepInput:
    """What the operator entered on a step screen, as text per field (the service parses it)."""
    return evaluation.StepInput(
        raw={f.id: raw_value(form, f) for f in step_def.fields if f.type != "calculated"},
        field_comments={f.id: getattr(form, f"c_{f.id}").data or "" for f in step_def.fields},
        comment=form.comment.data or "")


def _problems_by_field(step_def, problems: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The problems of a refused entry beside the field each names (every message begins with the field's
    label), and the rest for the top of the form."""
    labels = sorted(((f.label, f.id) for f in step_def.fields), key=lambda pair: -len(pair[0]))
    by_field: dict[str, list[str]] = {}
    rest: list[str] = []
    for problem in problems:
        text = problem.removeprefix("REFUSED: ")
        found = next((field_id for label, field_id in labels
                      if text.startswith(label) and text[len(label):len(label) + 1] in (":", " ", "")), None)
        if found is None:
            rest.append(problem)
        else:
            by_field.setdefault(found, []).append(problem)
    return by_field, rest


def _preview_json(batch, preview: evaluation.Preview) -> dict:
    return {
        "fields": [{"id": p.field_id, "label": p.label, "calculated": p.calculated, "text": p.text,
                    "problems": list(p.problems), "limit_problems": list(p.limit_problems),
                    "inputs": [{"name": i.name, "label": i.label, "text": i.text} for i in p.inputs]}
                   for p in preview.fields],
        "dose": [{"name": d.name, "label": d.label, "text": d.text} for d in preview.dose],
        "bags": [{"index": b.index, "volume": f"{b.volume_ml} mL", "nk_cells": display.cells(b.nk_cells),
                  "viable_cells": display.cells(b.viable_cells),
                  "expires": evaluation.local_text(b.expires_at, _tz()) if b.expires_at else ""}
                 for b in preview.bags],
        "bag_note": preview.bag_note,
    }


@bp.route("/<int:batch_id>/step/<int:position>/<step_id>/<int:instance>/preview", methods=["POST"])
@stores_nothing
@login_required
def step_preview(batch_id: int, position: int, step_id: str, instance: int):
    """The step's values as signing would record them now, calculated by the server (JSON for sign.js):
    the browser never computes a GMP value itself."""
    batch = batches.get(db.session, batch_id)
    _stage, step_def = _step(batch, position, step_id)
    form = step_form_class(step_def)()
    preview = evaluation.preview(db.session, batch, position, step_def, _entry(form, step_def), _tz(), instance)
    return _preview_json(batch, preview)


@bp.route("/<int:batch_id>/execution/<int:execution_id>")
@login_required
def execution(batch_id: int, execution_id: int):
    batch = batches.get(db.session, batch_id)
    return _execution_page(batch, batches.get_execution(db.session, batch, execution_id), None, [])


_DIALOGS = ("verify", "correct", "resign")


def _execution_page(batch, ex, submitted, problems, status=200):
    """The executed step; ``submitted`` is (dialog, form) just posted, shown again with its errors."""
    forms = {name: SignForm(prefix=name) for name in _DIALOGS}
    if submitted is not None:
        dialog, form = submitted
        forms[dialog] = form
    _stage, step_def = _step(batch, batches.position_of(batch, ex.sop_version_id), ex.step_id)
    user = current_user._get_current_object()
    return render_template("batches/execution.html", batch=batch, ex=ex, step=step_def, records=batches.records(batch),
                           next_open=batch_pages.next_step(user, batch, batches.open_steps(db.session, batch)),
                           context=evaluation.context_numbers(db.session, batch),
                           history=sorted(ex.values, key=lambda v: v.id), current=ex.current_values(),
                           signatures=signatures.for_record(db.session, ex),
                           invalidated=batch_pages.invalidated_signature_ids(db.session, batch),
                           verify_form=forms["verify"], correct_form=forms["correct"], resign_form=forms["resign"],
                           correctable=steps.correctable_fields(db.session, current_user._get_current_object(), ex),
                           problems=problems, needs_username=signing_needs_username(),
                           Meaning=Meaning), status


def _execution_action(batch_id: int, execution_id: int, dialog: str, call, done: str, to_execution: bool = False):
    """Run one signed action of the execution page (verify, correct, sign again)."""
    batch = batches.get(db.session, batch_id)
    ex = batches.get_execution(db.session, batch, execution_id)
    form = SignForm(prefix=dialog)
    problems: list[str] = []
    if form.validate_on_submit():
        outcome = signed_action(lambda: call(ex, form, dict(
            signer=current_user._get_current_object(), password=form.password.data, username=form.username.data,
            require_username=signing_needs_username(),
            expected_row_version=request.form.get("row_version", type=int))))
        if outcome.locked_out:
            return redirect(url_for("auth.login"))
        if outcome.ok:
            flash(done, "warning" if dialog == "correct" else "success")
            if to_execution:
                return redirect(url_for("batches.execution", batch_id=batch_id, execution_id=execution_id))
            return redirect(url_for("batches.show", batch_id=batch_id))
        problems = outcome.problems
    batch = batches.get(db.session, batch_id)
    return _execution_page(batch, batches.get_execution(db.session, batch, execution_id), (dialog, form), problems,
                           400)


@bp.route("/<int:batch_id>/execution/<int:execution_id>/verify", methods=["POST"])
@login_required
def verify(batch_id: int, execution_id: int):
    return _execution_action(batch_id, execution_id, "verify",
                             lambda ex, form, sign: steps.verify_step(db.session, ex, **sign), "Step verified.")


@bp.route("/<int:batch_id>/execution/<int:execution_id>/correct", methods=["POST"])
@login_required
def correct(batch_id: int, execution_id: int):
    return _execution_action(
        batch_id, execution_id, "correct",
        lambda ex, form, sign: steps.correct_value(
            db.session, ex, field_id=request.form.get("field_id", ""), raw=request.form.get("new_value", ""),
            reason=request.form.get("reason", ""), field_comment=request.form.get("value_comment", ""), tz=_tz(),
            **sign),
        "Correction recorded; the original value is kept. Earlier signatures no longer stand.", to_execution=True)


@bp.route("/<int:batch_id>/execution/<int:execution_id>/resign", methods=["POST"])
@login_required
def resign(batch_id: int, execution_id: int):
    return _execution_action(batch_id, execution_id, "resign",
                             lambda ex, form, sign: steps.resign_step(db.session, ex, **sign), "Step signed again.")
