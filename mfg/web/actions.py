"""What the screens offer, asked of the guards: no template or view restates a rule.

Every endpoint that changes anything (every POST) names here the guard that decides whether the signed-in
user may do it now, as a function of the URL's arguments. Templates ask ``offers(endpoint, **args)`` before
showing an action, and ``refusals(endpoint, **args)`` to say why not; a POST whose guard refuses the user's
role gets the 403 page before the view runs (the service then enforces the whole guard, with every reason,
before it writes). Pages (GET) are opened by role: ``roles_required`` records its roles on the view, and
``may_open(endpoint)`` reads them for the navigation.

``tests/web/test_actions.py`` walks every page as every role and holds each offered form to its guard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, abort, current_app, request
from flask_login import current_user

from ..domain import guards
from ..domain import lifecycle as lifecycle_rules
from ..domain.guards import Refusal
from ..extensions import db
from ..models import User
from ..services import (
    accounts,
    batches,
    clinical,
    custody,
    deviations,
    documents,
    lifecycle,
    results,
    review,
    sops,
    starting,
    steps,
    trial,
)

Guard = Callable[..., list[Refusal]]


def _user() -> User:
    return current_user._get_current_object()


def _person() -> guards.Person:
    return guards.person(_user())


def _execution(batch_id: int, execution_id: int):  # noqa: ANN202 - a StepExecution
    return batches.get_execution(db.session, batches.get(db.session, batch_id), execution_id)


def _subject_from_form(subject_id: int | None = None) -> list[Refusal]:
    subject_id = subject_id if subject_id is not None else request.form.get("subject_id", type=int)
    if subject_id is None:
        return starting.guard_start_batch(db.session, _user())
    return starting.guard_start_product_batch(db.session, _user(), clinical.get_subject(db.session, subject_id))


def _decide(batch_id: int, decision: str | None = None) -> list[Refusal]:
    """The decision form is offered when at least one decision is allowed; a POST names its decision."""
    batch = batches.get(db.session, batch_id)
    decision = decision or request.form.get("decide-decision")
    if decision:
        return review.guard_decide(db.session, _user(), batch, decision)
    refused = [review.guard_decide(db.session, _user(), batch, d) for d in lifecycle_rules.DECISIONS]
    return [] if any(not r for r in refused) else refused[0]


# endpoint -> (the action whose roles a POST needs, its guard called with the endpoint's URL arguments)
GUARDS: dict[str, tuple[str, Guard]] = {
    "batches.start": ("start_batch", lambda code=None: starting.guard_start_batch(
        db.session, _user(), code if code is not None else request.form.get("code"))),
    "batches.start_product": ("start_product_batch", _subject_from_form),
    "batches.step": ("perform_step", lambda batch_id, position, step_id, instance: steps.guard_perform_step(
        db.session, _user(), batches.get(db.session, batch_id), position, step_id, instance)),
    # the values a step would record, calculated by the server for the one who may perform it (writes nothing)
    "batches.step_preview": ("perform_step", lambda batch_id, position, step_id, instance: steps.guard_perform_step(
        db.session, _user(), batches.get(db.session, batch_id), position, step_id, instance)),
    "batches.verify": ("verify_step", lambda batch_id, execution_id: steps.guard_verify_step(
        db.session, _user(), _execution(batch_id, execution_id))),
    "batches.correct": ("correct_value", lambda batch_id, execution_id: steps.guard_correct_any(
        db.session, _user(), _execution(batch_id, execution_id))),
    "batches.resign": ("resign_step", lambda batch_id, execution_id: steps.guard_resign_step(
        db.session, _user(), _execution(batch_id, execution_id))),
    "review.open_deviation": ("open_deviation", lambda batch_id: deviations.guard_open(
        db.session, _user(), batches.get(db.session, batch_id))),
    "review.investigate": ("investigate_deviation", lambda deviation_id: deviations.guard_investigate(
        db.session, _user(), deviations.get(db.session, deviation_id))),
    "review.close_deviation": ("investigate_deviation", lambda deviation_id: deviations.guard_close(
        db.session, _user(), deviations.get(db.session, deviation_id))),
    "review.mark": ("review_batch", lambda batch_id: review.guard_review(
        db.session, _user(), batches.get(db.session, batch_id))),
    "review.decide": ("decide", _decide),
    "documents.print_labels": ("print_labels", lambda batch_id: documents.guard_print_labels(
        db.session, _user(), batches.get(db.session, batch_id))),
    "results.enter": ("enter_result", lambda result_id: results.guard_enter(
        db.session, _user(), results.get(db.session, result_id))),
    "results.verify": ("verify_result", lambda result_id: results.guard_verify(
        db.session, _user(), results.get(db.session, result_id))),
    "results.cancel": ("cancel_batch", lambda batch_id: lifecycle.guard_cancel(
        db.session, _user(), batches.get(db.session, batch_id))),
    "results.acknowledge": ("acknowledge_alert", lambda alert_id: lifecycle.guard_acknowledge(
        db.session, _user(), lifecycle.get_alert(db.session, alert_id))),
    "custody.handoff": ("hand_off", lambda batch_id: custody.guard_hand_off(
        db.session, _user(), batches.get(db.session, batch_id))),
    "custody.bedside": ("bedside_check", lambda batch_id: custody.guard_bedside_check(
        db.session, _user(), batches.get(db.session, batch_id))),
    "sops.load": ("load_master_records", lambda: guards.load_master_records(_person())),
    "sops.approve": ("approve_master_record", lambda sop_id: sops.guard_approve(
        db.session, _user(), sops.get(db.session, sop_id), site_timezone=current_app.config["SITE_TIMEZONE"])),
    "masterdata.add_equipment": ("manage_master_data", lambda: guards.manage_master_data(_person())),
    "masterdata.receive_lot": ("manage_master_data", lambda: guards.manage_master_data(_person())),
    "masterdata.equipment_status": ("manage_master_data", lambda equipment_id: guards.manage_master_data(_person())),
    "masterdata.lot_status": ("manage_master_data", lambda lot_id: guards.manage_master_data(_person())),
    "clinical.add_donor": ("manage_subjects", lambda: clinical.guard_subjects(db.session, _user())),
    "clinical.add_subject": ("manage_subjects", lambda: clinical.guard_enrol_subject(db.session, _user())),
    "clinical.add_test": ("manage_subjects", lambda donor_id: clinical.guard_subjects(db.session, _user())),
    "clinical.add_panel": ("manage_subjects", lambda donor_id: clinical.guard_subjects(db.session, _user())),
    "clinical.eligibility": ("manage_subjects", lambda donor_id: clinical.guard_subjects(db.session, _user())),
    "clinical.assign_dose": ("assign_dose_level", lambda subject_id: clinical.guard_assign_dose_level(
        db.session, _user(), clinical.get_subject(db.session, subject_id))),
    "trial.record_event": ("record_dlt", lambda: guards.role_refusals("record_dlt", _person())),
    "trial.decide": ("decide_escalation", lambda: trial.guard_decide(db.session, _user())),
    "trial.issue": ("issue_ledger", lambda: guards.issue_ledger(_person())),
    "admin.create_user": ("manage_accounts", lambda: guards.manage_accounts(_person())),
    "admin.user_action": ("manage_accounts", lambda user_id, action: (
        guards.edit_account(_person(), target_id=user_id) if action == "edit" else guards.manage_accounts(_person()))),
    "admin.confirm_grant": ("confirm_role_grant", lambda grant_id: accounts.guard_confirm_grant(
        _user(), accounts.get_grant(db.session, grant_id))),
}
# Endpoints any signed-in (or, for sign-in, any) person may post to: they act on the person's own session.
UNGUARDED = frozenset({"auth.login", "auth.logout", "auth.change_password", "auth.keep_alive"})

# Who may open each page (GET): a page names its roles (``roles_required``), or is listed here as open to every
# signed-in user (the records are readable by everyone who works on them; what a person may *do* on a page is
# its guards'), or is public (the sign-in page and static files). ``tests/web/test_role_matrix.py`` fails on a
# page that does none of these.
OPEN_PAGES = frozenset({
    "auth.change_password", "main.index",
    "batches.index", "batches.show", "batches.step", "batches.execution", "batches.version", "batches.check_scan",
    "batches.growth_chart", "custody.show", "custody.check_scan",
    "documents.index", "documents.download", "documents.download_zpl",
    "clinical.index", "clinical.subject", "clinical.donor", "masterdata.index", "review.deviation",
    "sops.index", "sops.show",
})
PUBLIC = frozenset({"auth.login", "static"})


def refusals(endpoint: str, **args: Any) -> list[Refusal]:
    """Why the signed-in user may not do ``endpoint`` with ``args`` now (empty: they may)."""
    if not current_user.is_authenticated:
        return [Refusal("role", "sign in first")]
    return GUARDS[endpoint][1](**args)


def offers(endpoint: str, **args: Any) -> bool:
    return not refusals(endpoint, **args)


def may_open(endpoint: str) -> bool:
    """Whether the signed-in user may open the page ``endpoint`` (its ``roles_required``, if any)."""
    if not current_user.is_authenticated:
        return False
    roles = getattr(current_app.view_functions[endpoint], "required_roles", ())
    return not roles or current_user.has_role(*roles)


def _refuse_by_role() -> None:
    """A POST the user's role does not allow is refused before its view runs and before anything is loaded
    (403, whether or not the record named exists)."""
    if request.method != "POST" or not current_user.is_authenticated or request.endpoint in UNGUARDED:
        return
    entry = GUARDS.get(request.endpoint or "")
    if entry is not None and guards.role_refusals(entry[0], _person()):
        abort(403)


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(offers=offers, refusals=refusals, may_open=may_open)
    app.before_request(_refuse_by_role)
