"""Guards: for every user action, the one function that says whether it may happen now, and every reason
why not (SENAITE's ``workflow/*/guards.py`` is the model).

Pure: plain facts in (who acts, statuses, what was recorded), a list of :class:`Refusal` out; empty means
allowed. The service enforces its guard before its first write (:func:`enforce` raises with every reason);
the screens ask the same guard, through ``services.permissions`` and ``web.actions``, whether to offer the
action at all. No template, view or service restates a condition written here.

A refusal is ``role`` (the person lacks the role), ``duty`` (segregation of duties: the performer does not
verify, the releaser did no step), ``sequence`` (not yet, or no longer, in the master record's order or the
record's transitions), ``done`` (someone already did it: the service reports who, as a conflict) or
``state`` (the record is not in a state that allows it). :func:`enforce` raises PermissionDenied for role
and duty refusals, InvalidTransition when every other refusal is about the sequence, else ValidationFailed.
"""

from __future__ import annotations

from collections.abc import Sequence

from .accounts import combination_problems
from .escalation import OpenLevel
from .lifecycle import FINISHED, NEVER_INFUSED, RECORD_OPEN, RESULTS_OPEN, STEPS_OPEN

# re-exported: every guard's caller writes guards.Refusal, guards.person, guards.enforce
from .refusal import ADMIN as ADMIN
from .refusal import CLINICAL as CLINICAL
from .refusal import CUSTODY_ROLES as CUSTODY_ROLES
from .refusal import OPERATOR as OPERATOR
from .refusal import QA as QA
from .refusal import ROLES as ROLES
from .refusal import Person as Person
from .refusal import Refusal as Refusal
from .refusal import UserLike as UserLike
from .refusal import enforce as enforce
from .refusal import only_done as only_done
from .refusal import person as person
from .refusal import role_refusals as role_refusals
from .refusal import texts as texts

CLASSIFICATIONS = ("minor", "major", "critical")


def _role(actor: Person, action: str) -> list[Refusal]:
    return role_refusals(action, actor)


def _status(status: str) -> str:
    return status.replace("_", " ")


# --- batches and steps ---------------------------------------------------------------------------------------

def start_batch(actor: Person, *, code: str | None = None, subject_records: Sequence[str] = ()) -> list[Refusal]:
    """Start a stand-alone batch of master record ``code`` (None: any; the work queue asks per code). A record
    that is made for a subject (``subject_records``: the trial configuration's ``product_master_records``) is
    opened only from that subject's page (:func:`start_product_batch`), never stand-alone: without a subject
    its identity checks could never pass."""
    refusals = _role(actor, "start_batch")
    if code is not None and code in subject_records:
        refusals.append(Refusal("state", f"{code} is made for a subject: open the batch record from the subject's "
                                         "page (Subjects), not here"))
    return refusals


def start_product_batch(actor: Person, *, subject_code: str, donor_problems: list[str], dose_signed: bool,
                        batches: Sequence[tuple[str, str]] = (),
                        infusions_per_subject: int | None = None) -> list[Refusal]:
    """Open the batch record for a subject's expected collection: the donor determined eligible, the
    subject's dose level signed, no batch of the subject open (status not ``FINISHED``: a double tap or a
    second visit does not open a second one), and fewer batches that count as infusions (every batch of the
    subject, ``batches`` as (lot, status), except the rejected and cancelled: ``NEVER_INFUSED``) than the trial
    configuration's ``infusions_per_subject`` (None: no effective configuration, which the service refuses)."""
    refusals = _role(actor, "start_product_batch")
    refusals += [Refusal("state", problem) for problem in donor_problems]
    if not dose_signed:
        refusals.append(Refusal("state", f"subject {subject_code} has no signed dose level"))
    refusals += [Refusal("state", f"subject {subject_code} already has batch {lot}, open ({_status(status)}): "
                                  "a second batch is not opened while one is")
                 for lot, status in batches if status not in FINISHED]
    counted = [f"{lot} ({_status(status)})" for lot, status in batches if status not in NEVER_INFUSED]
    if infusions_per_subject is not None and len(counted) >= infusions_per_subject:
        allowed = f"{infusions_per_subject} infusion{'s' if infusions_per_subject != 1 else ''}"
        refusals.append(Refusal("state", f"subject {subject_code} already has batch{'es' if len(counted) > 1 else ''} "
                                         f"{', '.join(counted)}: the trial allows {allowed} per subject "
                                         "(infusions_per_subject); another batch is refused"))
    return refusals


def assign_dose_level(actor: Person, *, subject_code: str, batches: Sequence[tuple[str, str]],
                      level: str | None = None, escalation: OpenLevel | None = None) -> list[Refusal]:
    """Assign (or reassign) a subject's dose level: refused while a batch of the subject is open (``batches``
    as (lot, status); open = not in ``FINISHED``), since that batch was pinned the dose in force when it
    started. A later assignment applies to later batches only. Under a trial configuration with an escalation
    design (``escalation``: what the latest signed decision opened), ``level`` must be the open one and its
    cohort not yet full (:func:`level_open`)."""
    refusals = _role(actor, "assign_dose_level")
    if escalation is not None and level is not None:
        refusals += level_open(escalation, level=level)
    refusals += [Refusal("state", f"batch {lot} of subject {subject_code} is open ({_status(status)}): its dose "
                                  "was pinned when it started; the dose level can be reassigned once it is "
                                  f"{', '.join(map(_status, FINISHED[:-1]))} or {_status(FINISHED[-1])}")
                 for lot, status in batches if status not in FINISHED]
    return refusals


def perform_step(actor: Person, *, lot: str, batch_status: str, step_id: str, instance: int, performed: bool,
                 not_open: str | None) -> list[Refusal]:
    """``performed``: this instance was already recorded; ``not_open``: why the instance is not open in the
    master record's sequence (None when it is)."""
    refusals = _role(actor, "perform_step")
    if batch_status not in STEPS_OPEN:
        refusals.append(Refusal("state", f"batch {lot} is {_status(batch_status)}: no step can be performed"))
    elif performed:
        refusals.append(Refusal("done", f"step '{step_id}' #{instance} has already been performed"))
    elif not_open:
        refusals.append(Refusal("sequence", not_open))
    return refusals


def verify_step(actor: Person, *, step_status: str, performer_ids: set[int]) -> list[Refusal]:
    """A second operator verifies: never one who performed (or re-signed) the step."""
    refusals = _role(actor, "verify_step")
    if actor.id in performer_ids:
        refusals.append(Refusal("duty", "You performed this step: a different operator must verify it."))
    if step_status != "awaiting_verification":
        refusals.append(Refusal("sequence", f"this step is {_status(step_status)}: it is not waiting for "
                                            "verification"))
    return refusals


def resign_step(actor: Person, *, step_status: str) -> list[Refusal]:
    refusals = _role(actor, "resign_step")
    if step_status != "needs_signature":
        refusals.append(Refusal("state", "This step does not need a new signature."))
    return refusals


def correct_value(actor: Person, *, lot: str, batch_status: str, field_label: str, calculated: bool,
                  divided_at: str | None, step_id: str) -> list[Refusal]:
    """Correct one recorded value while the record is open; never a calculated value (its inputs are
    corrected) nor a value the bags were made from once the product is divided (``divided_at``: the dividing
    step, or None). After a conditional release nothing is corrected: a pending result is entered as its own
    signed action (:func:`enter_result`), and the "pending" stays in the record."""
    refusals = _role(actor, "correct_value")
    if batch_status in RESULTS_OPEN:
        refusals.append(Refusal("state", f"batch {lot} is {_status(batch_status)}: its record is closed; a pending "
                                         "result is entered through its own result entry, not as a correction"))
    elif batch_status not in RECORD_OPEN:
        refusals.append(Refusal("state", f"batch {lot} is {_status(batch_status)}: its record is closed"))
    if calculated:
        refusals.append(Refusal("state", f"{field_label}: a calculated value is corrected by correcting its inputs."))
    if divided_at is not None:
        refusals.append(Refusal("state", f"The product was divided into bags from the values up to step "
                                         f"'{divided_at}'; correcting '{step_id}' would change bags already filled. "
                                         "Nothing was stored: report it to QA as a deviation."))
    return refusals


# --- deviations --------------------------------------------------------------------------------------------

def open_deviation(actor: Person) -> list[Refusal]:
    """Anyone working on a batch (operator or QA) may record a deviation, whatever the batch's status: an
    event found after release must be recordable too."""
    return _role(actor, "open_deviation")


def investigate_deviation(actor: Person, status: str, number: str = "") -> list[Refusal]:
    refusals = _role(actor, "investigate_deviation")
    if status != "open":
        refusals.append(Refusal("state", f"deviation {number} is closed" if number else "the deviation is closed"))
    return refusals


def investigation_problems(classification: str, investigation: str, root_cause: str, impact: str,
                           capa_reference: str) -> list[str]:
    """What an investigation must say: a classification, the investigation, root cause and impact, and a
    CAPA reference for a major or critical deviation."""
    problems = []
    if classification not in CLASSIFICATIONS:
        problems.append(f"Classification must be one of {', '.join(CLASSIFICATIONS)}.")
    for label, text in (("Investigation", investigation), ("Root cause", root_cause),
                        ("Impact on this and other batches", impact)):
        if not (text or "").strip():
            problems.append(f"{label} is required.")
    if classification in ("major", "critical") and not (capa_reference or "").strip():
        problems.append(f"A {classification} deviation needs a CAPA reference.")
    return problems


def close_deviation(actor: Person, status: str, number: str, *, classified: bool) -> list[Refusal]:
    refusals = investigate_deviation(actor, status, number)
    if status == "open" and not classified:
        refusals.append(Refusal("state", f"deviation {number} must be classified and investigated before it closes"))
    return refusals


# --- QA review and the batch decision ---------------------------------------------------------------------

def review_batch(actor: Person) -> list[Refusal]:
    return _role(actor, "review_batch")


# --- pending results ---------------------------------------------------------------------------------------

def enter_result(actor: Person, *, lot: str, batch_status: str, label: str, status: str) -> list[Refusal]:
    """The result of a test pending at the conditional release is entered as its own signed action, once,
    while the batch waits for it (conditionally released, or under investigation)."""
    refusals = _role(actor, "enter_result")
    if batch_status not in RESULTS_OPEN:
        refusals.append(Refusal("state", f"batch {lot} is {_status(batch_status)}: no pending result is entered now"))
    if status != "pending":
        refusals.append(Refusal("done", f"{label}: the result has already been entered"))
    return refusals


def verify_result(actor: Person, *, label: str, status: str, entered_by_id: int | None) -> list[Refusal]:
    """A second operator verifies a result entry: never the one who entered it."""
    refusals = _role(actor, "verify_result")
    if actor.id == entered_by_id:
        refusals.append(Refusal("duty", "You entered this result: a different operator must verify it."))
    if status != "awaiting_verification":
        refusals.append(Refusal("sequence", f"{label}: the result is {_status(status)}, not waiting for "
                                            "verification"))
    return refusals


# --- bags and documents ------------------------------------------------------------------------------------

def print_labels(actor: Person, *, lot: str, bag_count: int) -> list[Refusal]:
    refusals = _role(actor, "print_labels")
    if not bag_count:
        refusals.append(Refusal("state", f"batch {lot} has no bags to label yet"))
    return refusals


def documents_ready(*, lot: str, pending: bool) -> list[Refusal]:
    """Nothing is issued to the clinic (hand-off, bedside check) while the signed documents of QA's decision
    are still being prepared (``services.document_jobs``): the product travels with its batch record."""
    if pending:
        return [Refusal("state", f"The documents of QA's decision on batch {lot} are being prepared: nothing may be "
                                 "issued to the clinic until they exist. Try again in a minute; if it lasts, call QA.")]
    return []


def hand_off(actor: Person) -> list[Refusal]:
    return _role(actor, "hand_off")


def bedside_check(actor: Person, *, lot: str, bag_count: int) -> list[Refusal]:
    """The two-person bedside check is recorded from the screen of an operator or clinical user, for a bag of
    a divided product; who the two people are is checked by their signatures. Whether the scanned bag may be
    infused (released, not blocked, not expired) is the hard stop of the scan (``lifecycle.infusion_stop``),
    with its audit entry and deviation, never a hidden button."""
    refusals = _role(actor, "bedside_check")
    if not bag_count:
        refusals.append(Refusal("state", f"batch {lot} has no bags yet: there is nothing to infuse"))
    return refusals


def acknowledge_alert(actor: Person, *, acknowledged: bool) -> list[Refusal]:
    """A clinical user acknowledges a product alert, once, for the whole clinic."""
    refusals = _role(actor, "acknowledge_alert")
    if acknowledged:
        refusals.append(Refusal("done", "this alert has already been acknowledged"))
    return refusals


def two_people(first_id: int, second_id: int) -> list[Refusal]:
    if first_id == second_id:
        return [Refusal("duty", "The bedside check needs two different people.")]
    return []


# --- master records, master data, subjects, accounts ------------------------------------------------------

def load_master_records(actor: Person) -> list[Refusal]:
    return _role(actor, "load_master_records")


def approve_master_record(actor: Person, *, status: str, loaded_by_id: int, stated_timezone: str | None = None,
                          site_timezone: str | None = None) -> list[Refusal]:
    """QA approves a draft; the person who loaded it may not (author and approver differ). A trial
    configuration states the time zone its documents print (``stated_timezone``); it must be the site's
    (``site_timezone``, the screens' zone), or screens and documents would give one event two local times."""
    refusals = _role(actor, "approve_master_record")
    if stated_timezone is not None and stated_timezone != site_timezone:
        refusals.append(Refusal("state", f"This trial configuration states the site's time zone as "
                                                 f"{stated_timezone}, but this site runs on {site_timezone} "
                                                 f"(SITE_TIMEZONE): screens and documents must use one zone."))
    if actor.id == loaded_by_id:
        refusals.append(Refusal("duty", "The person who loaded a master record cannot approve it "
                                        "(author and approver must differ)."))
    if status != "draft":
        refusals.append(Refusal("sequence", f"this master record version is {status}: only a draft is approved"))
    return refusals


def manage_master_data(actor: Person) -> list[Refusal]:
    """Equipment and material lots: registered, received and released by QA."""
    return _role(actor, "manage_master_data")


def manage_subjects(actor: Person) -> list[Refusal]:
    """Subjects, donors, donor tests, eligibility and dose levels."""
    return _role(actor, "manage_subjects")


def enrol_subject(actor: Person, *, enrolled: int, max_subjects: int | None,
                  eligibility_problems: Sequence[str] = ()) -> list[Refusal]:
    """Enrol a subject: every reason the screening shows the subject not eligible (``domain.eligibility``,
    each naming its criterion), and the trial's cap on subjects (``escalation.max_subjects``; None: the
    configuration sets none) against every subject ``enrolled`` so far."""
    refusals = _role(actor, "manage_subjects")
    refusals += [Refusal("state", problem) for problem in eligibility_problems]
    if max_subjects is not None and enrolled >= max_subjects:
        refusals.append(Refusal("state", f"the trial enrols at most {max_subjects} subjects "
                                         f"(escalation.max_subjects); {enrolled} are enrolled: subject refused"))
    return refusals


def manage_accounts(actor: Person) -> list[Refusal]:
    return _role(actor, "manage_accounts")


# --- separation of administration and signing (issue 19 item 1) ---------------------------------------------

def own_account(actor_id: int | None, target_id: int) -> list[Refusal]:
    """No one changes the name or roles of their own account: an administrator would make itself a signer."""
    if actor_id == target_id:
        return [Refusal("duty", "You cannot change your own name or roles: another administrator does.")]
    return []


def edit_account(actor: Person, *, target_id: int) -> list[Refusal]:
    """Change an account's printed name and roles (the service also refuses roles that may not be combined:
    ``accounts.combination_problems``)."""
    return _role(actor, "manage_accounts") + own_account(actor.id, target_id)


def confirm_role_grant(actor: Person, *, target_id: int, requested_by_id: int | None, pending: bool,
                       roles_after: Sequence[str]) -> list[Refusal]:
    """The two-person rule: a signing role an administrator granted counts once a second person, an
    administrator or QA who neither asked for it nor receives it, confirms it. ``roles_after``: the account's
    roles once confirmed, which must still be a permitted combination."""
    refusals = _role(actor, "confirm_role_grant")
    if actor.id == requested_by_id:
        refusals.append(Refusal("duty", "You asked for this role: a second administrator or QA confirms it."))
    if actor.id == target_id:
        refusals.append(Refusal("duty", "A role granted to your own account is confirmed by someone else."))
    if not pending:
        refusals.append(Refusal("done", "this role grant is no longer pending"))
    refusals += [Refusal("state", problem) for problem in combination_problems(roles_after)]
    return refusals


def sign(actor: Person, *, roles: Sequence[str], what: str, own_password: bool) -> list[Refusal]:
    """May ``actor`` execute an e-signature whose meaning (``what``) needs one of ``roles``? Never an account
    that holds the admin role (an administrator signs nothing, whatever else it was given), never with a password
    an administrator set (it is the owner's only once the owner has replaced it), and only with a confirmed role
    (a pending grant is not in the account's roles)."""
    refusals = []
    if actor.has(ADMIN):
        refusals.append(Refusal("role", "An administrator signs nothing: this account holds the admin role."))
    elif not actor.has(*roles):
        refusals.append(Refusal("role", f"signing as '{what}' needs the {' or '.join(roles)} role"))
    if not own_password:
        refusals.append(Refusal("duty", "Your password was set by an administrator: change it (Change password) "
                                        "before you sign."))
    return refusals


# --- the trial's escalation (issue [3.7] item 4) ------------------------------------------------------------

def level_open(escalation: OpenLevel, *, level: str) -> list[Refusal]:
    """A dose level is planned for a new subject only when the latest signed escalation decision opened it, and
    only while the cohort that decision opened has room (``cohort_size``): the next cohort opens with the safety
    review's next signed decision."""
    if escalation.decision is None:
        return [Refusal("state", "no dose level is open: no escalation decision has been signed (Trial ledger: the "
                                 "safety review's first decision opens the start level)")]
    if escalation.level is None:
        return [Refusal("state", f"no dose level is open: {escalation.decision} stopped enrolment")]
    if level != escalation.level:
        return [Refusal("state", f"dose level {level} is not open: {escalation.decision} opened {escalation.level}; "
                                 "planning refuses any other level")]
    if escalation.assigned >= escalation.cohort_size:
        return [Refusal("state", f"cohort {escalation.cohort} at {escalation.level} is full ({escalation.assigned} of "
                                 f"{escalation.cohort_size}): the next cohort opens with the safety review's next "
                                 "signed decision")]
    return []


def level_closed(*, subject_code: str, level: str | None, closed: Sequence[str]) -> list[Refusal]:
    """A product is not made at a level the ledger has closed (MTD exceeded, or eliminated) since the subject's
    assignment: the subject is reassigned to an open level first."""
    if level is not None and level in closed:
        return [Refusal("state", f"dose level {level} of subject {subject_code} is closed: the cohort ledger shows the "
                                 "MTD exceeded at or below it; reassign the subject to the open level")]
    return []


def record_dlt(actor: Person, *, subject_code: str, infused_on: str | None, onset_on: str) -> list[Refusal]:
    """An adverse event is judged for dose-limiting toxicity only for a subject who was infused (the bedside
    record), with an onset on or after the day of the infusion (ISO dates compare as text)."""
    refusals = _role(actor, "record_dlt")
    if infused_on is None:
        refusals.append(Refusal("state", f"subject {subject_code} has no infusion recorded at the bedside: there is "
                                         "no DLT window to record an event in"))
    elif onset_on < infused_on:
        refusals.append(Refusal("state", f"the onset {onset_on} is before subject {subject_code}'s infusion on "
                                         f"{infused_on}: not an event of the DLT window"))
    return refusals


def decide_escalation(actor: Person, *, levels: Sequence[str], current: str | None, level: str | None,
                      closed: Sequence[str], recommended: str | None, reason: str, first: bool) -> list[Refusal]:
    """The safety review's decision on the level open to new subjects (``level``; None stops enrolment): a level of
    the trial; never one the ledger closed; never more than one level above the one open now (levels are not
    skipped; the first decision opens at most the recommended start level); a reason whenever it differs from
    the rule's recommendation."""
    refusals = _role(actor, "decide_escalation")
    if level is not None and level not in levels:
        return refusals + [Refusal("state", f"{level} is not a dose level of the trial ({', '.join(levels)})")]
    if level is not None and level in closed:
        refusals.append(Refusal("state", f"{level} is closed: the cohort ledger shows the MTD exceeded at "
                                         f"{closed[0]}; no decision opens it or a higher level"))
    ceiling = (levels.index(recommended) if first and recommended in levels
               else levels.index(current) + 1 if current in levels else 0)
    if level is not None and levels.index(level) > ceiling:
        refusals.append(Refusal("state", f"{level} skips a level: at most {levels[min(ceiling, len(levels) - 1)]} "
                                         "may be opened now"))
    if level != recommended and not reason.strip():
        refusals.append(Refusal("state", f"the decision differs from the recommendation ({recommended or 'no level'}):"
                                         " give the reason"))
    return refusals


def issue_ledger(actor: Person) -> list[Refusal]:
    """The cohort ledger's signed PDF/A is issued by a clinical or QA user (the site key signs it; the issuer and the
    reason are on record)."""
    return _role(actor, "issue_ledger")
