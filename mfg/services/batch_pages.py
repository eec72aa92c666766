"""Read models of the batch screens: the work queue and batch lists, the batch page, the countdowns.

Each loads what its screen shows in a fixed number of queries however many batches, steps and values
there are (``tests/web/test_query_counts.py``); nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.orm import Session

from ..domain import guards, lifecycle, sequence, words
from ..domain.signing import Meaning
from ..domain.sop_schema import MasterRecord, step_index
from ..models import (
    BagBlock,
    Base,
    Batch,
    BatchDecision,
    BatchMasterRecord,
    ClinicalAlert,
    CustodyEvent,
    Deviation,
    DocumentJob,
    DocumentRevision,
    PendingResult,
    ProductBag,
    Signature,
    SignatureInvalidation,
    StepExecution,
    Subject,
    User,
    utcnow,
)
from . import bags, batches, custody, deviations, document_jobs, evaluation, growth
from . import lifecycle as batch_lifecycle


@dataclass(frozen=True)
class Deadline:
    """An open step whose time window is running: what the batch page counts down to."""

    step_title: str
    window: str
    due_at: datetime  # aware UTC
    overdue: bool
    remaining_minutes: int


def deadlines(session: Session, batch: Batch) -> list[Deadline]:
    """Countdowns for every open step with a time window whose reference time is recorded (the hold
    time from end of collection, for example), soonest first. Derived from the master records only."""
    now = utcnow()
    found = []
    records = batches.records(batch)
    for item in batches.open_steps(session, batch):
        window = item.step.time_window
        if window is None:
            continue
        reference = evaluation.window_reference(session, batch, item.ref.position, item.step)
        hours = evaluation.window_hours(session, batch, window.max_hours)
        if reference is None or hours is None:
            continue
        due = reference + timedelta(hours=float(hours))
        found.append(Deadline(item.step.title, f"at most {float(hours):g} h after "
                              f"{words.reference(window.after, records)}", due,
                              due < now, int((due - now).total_seconds() // 60)))
    if batch.status not in lifecycle.NOT_TO_BE_USED:
        made = bags.of_batch(session, batch)
        if made:
            due = min(bag.expires_at for bag in made)
            found.append(Deadline("Product expiry", f"{len(made)} bag{'s' if len(made) != 1 else ''}, shelf life "
                                  "from formulation (trial configuration)", due, due < now,
                                  int((due - now).total_seconds() // 60)))
    return sorted(found, key=lambda d: d.due_at)


ACTIVE = lifecycle.IN_WORK  # on the work queue; a cancelled batch leaves it and stays in the record


def active_batches(session: Session) -> list[Batch]:
    """Batches not yet decided, with what their screens show loaded up front (a fixed number of queries
    however many batches there are)."""
    return list(session.scalars(
        sa.select(Batch).where(Batch.status.in_(ACTIVE)).order_by(Batch.id)
        .options(so.selectinload(Batch.master_records).selectinload(BatchMasterRecord.sop_version),
                 so.joinedload(Batch.subject), so.joinedload(Batch.created_by))))


def decided_batches(session: Session, *, before_id: int | None = None,
                    limit: int = 50) -> tuple[list[Batch], int | None]:
    """Batches off the work queue (decided, under investigation, cancelled), newest first, keyset-paginated on the
    id: the page (with subjects and starters, in the same query) and the cursor of the next one."""
    query = sa.select(Batch).where(Batch.status.not_in(ACTIVE))
    if before_id is not None:
        query = query.where(Batch.id < before_id)
    found = list(session.scalars(query.order_by(Batch.id.desc()).limit(limit + 1)
                                 .options(so.joinedload(Batch.subject), so.joinedload(Batch.created_by))))
    return found[:limit], (found[limit - 1].id if len(found) > limit else None)


def _counted_steps(batches_: list[Batch]) -> set[tuple[int, str]]:
    """(master record version, step id) of the steps whose recorded value sets how often another step
    repeats (``repeat.count``): the only values ``_progress`` reads."""
    counted = set()
    for batch in batches_:
        for pin, record in zip(batch.master_records, batches.records(batch), strict=False):
            for _stage, step in step_index(record).values():
                if step.repeat is not None and step.repeat.count is not None:
                    counted.add((pin.sop_version_id, step.repeat.count.split(".")[0]))
    return counted


def _executions_of(session: Session, batches_: list[Batch], *,
                   all_values: bool = False) -> dict[int, list[StepExecution | sa.Row]]:
    """The executions of these batches, by batch, in id order.

    With ``all_values``: every execution with every value (two queries), for a page that shows them. Without:
    for lists of batches, plain rows (id, batch_id, sop_version_id, step_id, instance, status: what the
    queue and ``_progress`` read), except the executions of steps that set how often another step repeats
    (``repeat.count``), loaded with their values because ``_progress`` reads them; two queries, and no ORM
    object per execution (thousands of them for a few dozen active batches, each request).
    """
    found: dict[int, list[StepExecution | sa.Row]] = {batch.id: [] for batch in batches_}
    if not batches_:
        return found
    of_batches = StepExecution.batch_id.in_(list(found))
    if all_values:
        for ex in session.scalars(sa.select(StepExecution).where(of_batches).order_by(StepExecution.id)
                                  .options(so.selectinload(StepExecution.values))):
            found[ex.batch_id].append(ex)
        return found
    rows = session.execute(sa.select(StepExecution.id, StepExecution.batch_id, StepExecution.sop_version_id,
                                     StepExecution.step_id, StepExecution.instance, StepExecution.status)
                           .where(of_batches).order_by(StepExecution.id)).all()
    counted = _counted_steps(batches_)
    needed = [row.id for row in rows if (row.sop_version_id, row.step_id) in counted]
    loaded = {ex.id: ex for ex in session.scalars(
        sa.select(StepExecution).where(StepExecution.id.in_(needed))
        .options(so.joinedload(StepExecution.values))).unique()} if needed else {}
    for row in rows:
        found[row.batch_id].append(loaded.get(row.id, row))
    return found


def _performers_of(session: Session, executions_: list[StepExecution | sa.Row]) -> dict[int, set[int]]:
    """``performers`` of many executions in one query."""
    found: dict[int, set[int]] = {ex.id: set() for ex in executions_}
    if executions_:
        for record_id, user_id in session.execute(sa.select(Signature.record_id, Signature.user_id).where(
                Signature.record_type == StepExecution.__tablename__, Signature.meaning == Meaning.PERFORMED.value,
                Signature.record_id.in_([str(ex.id) for ex in executions_]))):
            found[int(record_id)].add(user_id)
    return found


def _furthest_stage(batch: Batch, opened: list[sequence.Open]) -> str:
    """The stage a batch has reached: its furthest open step's, or its status."""
    return opened[-1].stage.title if opened else batch.status.replace("_", " ")


@dataclass(frozen=True)
class QueueItem:
    batch: Batch
    kind: str  # "perform", "verify" or "sign"
    title: str
    url_args: dict
    stage: str = ""


@dataclass(frozen=True)
class Overview:
    """The work queue screen: the user's next steps and the active batches with the stage each has reached."""

    queue: list[QueueItem]
    active: list[Batch]  # NK batches by subject, then the rest
    stages: dict[int, str]  # batch id -> stage reached


def overview(session: Session, user: User) -> Overview:
    """The user's next steps across the active batches (steps open to perform, steps to sign again, steps
    waiting for a verification this user may give), each as its guard allows it to this user, and those
    batches with their stages, in a fixed number of queries however many batches there are, decided ones
    never read."""
    active = sorted(active_batches(session), key=lambda b: (b.subject is None, b.subject.code if b.subject else "",
                                                            b.id))
    found = _executions_of(session, active)
    opened = {batch.id: batches.open_from(batch, found[batch.id]) for batch in active}
    waiting = [ex for batch in active for ex in found[batch.id] if ex.status == "awaiting_verification"]
    performed_by = _performers_of(session, waiting)
    person = guards.person(user)
    items: list[QueueItem] = []
    for batch in sorted(active, key=lambda b: b.id):
        for item in opened[batch.id]:
            if guards.perform_step(person, lot=batch.lot, batch_status=batch.status, step_id=item.ref.step_id,
                                   instance=item.instance, performed=False, not_open=None):
                continue
            title = item.step.title + (f" ({item.step.repeat.label} {item.instance})" if item.step.repeat else "")
            items.append(QueueItem(batch, "perform", title, {"batch_id": batch.id, "position": item.ref.position,
                                                             "step_id": item.ref.step_id,
                                                             "instance": item.instance}, item.stage.title))
        for ex in found[batch.id]:
            if ex.status == "needs_signature" and not guards.resign_step(person, step_status=ex.status):
                kind, label = "sign", "Sign again"
            elif ex.status == "awaiting_verification" and not guards.verify_step(
                    person, step_status=ex.status, performer_ids=performed_by[ex.id]):
                kind, label = "verify", "Verify"
            else:
                continue
            step = step_index(batches.records(batch)[batches.position_of(batch, ex.sop_version_id)])[ex.step_id][1]
            title = step.title + (f" ({step.repeat.label} {ex.instance})" if step.repeat else "")
            items.append(QueueItem(batch, kind, f"{label}: {title}", {"batch_id": batch.id, "execution_id": ex.id}))
    return Overview(items, active, {batch.id: _furthest_stage(batch, opened[batch.id]) for batch in active})


@dataclass(frozen=True)
class StepMark:
    """One step on the batch page's progress bar: its title and where it stands."""

    title: str
    state: str  # "done", "current", "open", "attention" (awaiting verification or a new signature), "waiting"

    @property
    def label(self) -> str:
        return {"done": "complete", "current": "current step", "open": "open", "waiting": "not yet open",
                "attention": "waiting for a verification or a new signature"}[self.state]


@dataclass(frozen=True)
class StageMark:
    title: str
    steps: list[StepMark]

    @property
    def done(self) -> int:
        return sum(1 for step in self.steps if step.state == "done")


@dataclass(frozen=True)
class BatchPage:
    """What the batch page shows."""

    records: list[MasterRecord]
    by_step: dict[tuple[int, str], list[StepExecution]]  # (position, step id) -> its executions
    open_refs: dict[tuple[int, str], int]  # (position, step id) -> the instance open now
    progress: dict[tuple[int, str], tuple[int, int]]  # (position, stage id) -> (steps complete, steps)
    deadlines: list[Deadline]
    deviations: list[Deviation]
    bags: list
    charts: list
    opened: list[sequence.Open]  # every step instance open now, in the batch's order
    waiting: list[tuple[str, StepExecution]]  # performed steps (title, execution) waiting for a verification or a
    # new signature
    current: sequence.Open | None  # the step the signed-in person may do next (see ``next_step``)
    stages: list[StageMark]  # the progress bar, stage by stage of every pinned record
    version: PageVersion


def _title(record: MasterRecord, ex: StepExecution) -> str:
    step = step_index(record)[ex.step_id][1]
    return step.title + (f" ({step.repeat.label} {ex.instance})" if step.repeat else "")


def next_step(user: User | None, batch: Batch, opened: list[sequence.Open]) -> sequence.Open | None:
    """The next step ``user`` may perform, in the batch's order (its pinned records, stages and steps), as the
    guard of performing a step allows it (their role, the batch's status); None when there is none. Without a
    user (or for one who may perform none), the first open step."""
    if user is not None:
        person = guards.person(user)
        for item in opened:
            if not guards.perform_step(person, lot=batch.lot, batch_status=batch.status, step_id=item.ref.step_id,
                                       instance=item.instance, performed=False, not_open=None):
                return item
    return opened[0] if opened else None


def _marks(records_: list[MasterRecord], by_step: dict[tuple[int, str], list[StepExecution]],
           opened: list[sequence.Open], current: sequence.Open | None) -> list[StageMark]:
    open_now = {(item.ref.position, item.ref.step_id) for item in opened}
    marks = []
    for position, record in enumerate(records_):
        for stage in record.stages:
            steps = []
            for step in stage.steps:
                key = (position, step.id)
                done = by_step.get(key, [])
                if current is not None and key == (current.ref.position, current.ref.step_id):
                    state = "current"
                elif any(ex.status != "complete" for ex in done):
                    state = "attention"
                elif key in open_now:
                    state = "open"
                elif done:
                    state = "done"
                else:
                    state = "waiting"
                steps.append(StepMark(step.title, state))
            marks.append(StageMark(stage.title, steps))
    return marks


@dataclass(frozen=True)
class PageVersion:
    """What the batch page was drawn from: ``token`` changes whenever anything the page shows or offers may
    change (``page_version``); ``by`` and ``at`` name the newest signature on anything of the batch (who
    changed it, for "updated by ...")."""

    token: str
    by: str | None
    at: datetime | None


# The records of a batch the page's version counts (their number and newest id), with the columns whose sum
# moves when one of them changes (row versions); every one has a ``batch_id``.
_COUNTED: tuple[tuple[type[Base], tuple[str, ...]], ...] = (
    (StepExecution, ("row_version",)), (Deviation, ("row_version",)), (ProductBag, ()), (BagBlock, ()),
    (CustodyEvent, ()), (PendingResult, ("row_version",)), (BatchDecision, ()), (DocumentRevision, ()),
    (ClinicalAlert, ("row_version",)))
# The records of a batch whose signatures are "on the page" (the newest names ``by`` and ``at``).
_SIGNED: tuple[type[Base], ...] = (StepExecution, Deviation, BatchDecision, CustodyEvent, PendingResult,
                                   DocumentRevision, ClinicalAlert)
_OF_BATCH: sa.BindParameter[int] = sa.bindparam("batch_id", type_=sa.Integer)


def _aggregates(model: type[Base], columns: tuple[str, ...]) -> list[sa.ScalarSelect]:
    """Scalar subqueries of ``model``'s rows of the batch: their number, newest id and the sums of ``columns``."""
    of_batch = model.batch_id == _OF_BATCH  # type: ignore[attr-defined]
    return [sa.select(sa.func.count(model.id)).where(of_batch).scalar_subquery(),  # type: ignore[attr-defined]
            sa.select(sa.func.coalesce(sa.func.max(model.id), 0)).where(of_batch)  # type: ignore[attr-defined]
            .scalar_subquery(),
            *(sa.select(sa.func.coalesce(sa.func.sum(getattr(model, column)), 0)).where(of_batch).scalar_subquery()
              for column in columns)]


def _documents_job() -> list[sa.ScalarSelect]:
    """The documents job the page announces (the oldest whose documents do not exist yet): its id, status and
    attempts, as ``documents/_being_prepared.html`` shows them."""
    job = (sa.select(DocumentJob.id).where(DocumentJob.batch_id == _OF_BATCH,
                                           DocumentJob.status.in_(document_jobs.NOT_DONE))
           .order_by(DocumentJob.id).limit(1))
    return [job.with_only_columns(column).scalar_subquery()
            for column in (DocumentJob.id, DocumentJob.status, DocumentJob.attempts)]


def page_version(session: Session, batch: Batch) -> PageVersion:
    """The batch page's version in two small queries however much the batch holds (polled by the open page
    every few seconds: ``web/batches.version``, ``static/flow.js``, which reloads the page when it changes).

    The token covers everything the page shows or offers, or that changes what it shows: the batch's status
    and row version; its step executions (performed, verified, corrected, signed again: their row versions);
    deviations (opened, moved on); bags (made), bag blocks (a bag blocked), custody events (a hand-off, a
    bedside check: a bag issued or infused); pending results (entered, verified); QA's decisions (release,
    rejection, cancellation: the batch's own signatures); documents issued (batch record, certificate of
    analysis, labels) and the documents job the page announces (its status and attempts); clinical alerts
    (raised, acknowledged); and the newest signature on any of these records. Append-only records count by
    their number and newest id, records that change by their row versions too."""
    of_batch = {"batch_id": batch.id}
    parts = session.execute(sa.select(
        Batch.status, Batch.row_version, *(part for model, columns in _COUNTED for part in _aggregates(model, columns)),
        *_documents_job()).where(Batch.id == _OF_BATCH), of_batch).one()
    # the batch's signatures, record type by record type (each by the index of signed records: as many rows as the
    # batch has signatures, however many the database holds), and the newest of them
    signed = sa.union_all(*(sa.select(Signature.id).where(
        Signature.record_type == model.__tablename__, Signature.record_id.in_(
            sa.select(sa.cast(model.id, sa.String)).where(model.batch_id == _OF_BATCH)))  # type: ignore[attr-defined]
        for model in _SIGNED)).subquery()
    newest = session.execute(
        sa.select(Signature.id, Signature.printed_name, Signature.signed_at)
        .where(Signature.id == sa.select(sa.func.max(signed.c.id)).scalar_subquery()), of_batch).first()
    token = ".".join("" if part is None else str(part) for part in (*parts, newest.id if newest else 0))
    return PageVersion(token, newest.printed_name if newest else None, newest.signed_at if newest else None)


def batch_page(session: Session, batch: Batch, user: User | None = None) -> BatchPage:
    """The batch page in a fixed number of queries however many steps were recorded: the executions and
    all their values are loaded in two queries first, so the readers below find them in the session.
    ``user``: the person looking, whose next step the page puts at its top."""
    # its pinned records (two queries, not one per pinned record), subject and starter (joined)
    session.scalars(sa.select(Batch).where(Batch.id == batch.id).options(
        so.selectinload(Batch.master_records).selectinload(BatchMasterRecord.sop_version),
        so.joinedload(Batch.subject), so.joinedload(Batch.created_by))).one()
    # with all_values, every execution is an ORM object (with its values), never a plain row
    loaded = cast(list[StepExecution], _executions_of(session, [batch], all_values=True)[batch.id])
    records_ = batches.records(batch)
    by_step: dict[tuple[int, str], list[StepExecution]] = {}
    for ex in loaded:
        by_step.setdefault((batches.position_of(batch, ex.sop_version_id), ex.step_id), []).append(ex)
    progress_ = {(position, stage.id): (sum(1 for st in stage.steps if by_step.get((position, st.id)) and all(
        ex.status == "complete" for ex in by_step[(position, st.id)])), len(stage.steps))
        for position, record in enumerate(records_) for stage in record.stages}
    opened = batches.open_from(batch, loaded)
    current = next_step(user, batch, opened)
    return BatchPage(records_, by_step, {(o.ref.position, o.ref.step_id): o.instance for o in opened},
                     progress_, deadlines(session, batch), deviations.of_batch(session, batch),
                     bags.of_batch(session, batch), growth.charts(session, batch), opened,
                     [(_title(records_[batches.position_of(batch, ex.sop_version_id)], ex), ex) for ex in loaded
                      if ex.status in ("awaiting_verification", "needs_signature")], current,
                     _marks(records_, by_step, opened, current), page_version(session, batch))


def invalidated_signature_ids(session: Session, batch: Batch) -> set[int]:
    return set(session.scalars(sa.select(SignatureInvalidation.signature_id).join(
        Signature, Signature.id == SignatureInvalidation.signature_id).join(
        StepExecution, sa.cast(StepExecution.id, sa.String) == Signature.record_id).where(
        Signature.record_type == StepExecution.__tablename__, StepExecution.batch_id == batch.id)))


@dataclass(frozen=True)
class ClinicItem:
    """A product for the clinic: a released (or conditionally released) batch with bags that may be infused
    now, and what this user may do with it (hand it off, check it at the bedside), as the guards allow."""

    batch: Batch
    bags_waiting: list[str]  # the bags (codes) not yet infused that a bedside scan would not stop on
    hand_off: bool
    bedside_check: bool


def clinic_work(session: Session, user: User, *, tz: ZoneInfo) -> list[ClinicItem]:
    """The clinic's work: every product awaiting a hand-off or the bedside check that this user may do, in the
    order released. A bag is waiting when it is not yet infused and the bedside stop would let it through
    (``lifecycle.bag_stops``: not blocked, released, not expired). One query finds the candidates, released
    products with a bag not yet expired (a shelf life of hours: a handful), however long the history of
    released batches; each candidate is then asked of the stops and the custody guards."""
    found = []
    unexpired = sa.select(ProductBag.id).where(ProductBag.batch_id == Batch.id, ProductBag.expires_at > utcnow())
    for batch in session.scalars(sa.select(Batch).where(Batch.status.in_(lifecycle.INFUSIBLE), unexpired.exists())
                                 .order_by(Batch.id).options(so.joinedload(Batch.subject))):
        states = batch_lifecycle.bag_states(session, batch)
        stops = batch_lifecycle.bag_stops(session, batch, tz=tz)
        waiting = [states[bag_id].code for bag_id, stop in stops.items()
                   if stop is None and states[bag_id].infused_at is None]
        if not waiting:
            continue
        hand_off = not custody.guard_hand_off(session, user, batch)
        bedside = not custody.guard_bedside_check(session, user, batch)
        if hand_off or bedside:
            found.append(ClinicItem(batch, waiting, hand_off, bedside))
    return found


def batch_states() -> list[str]:
    """Every status a batch can be in (the lifecycle's transition table), in the table's order."""
    found: list[str] = []
    for status, moves in lifecycle.BATCH_STATUS.allowed.items():
        for name in (status, *moves):
            if name not in found:
                found.append(name)
    return found


SEARCH_LIMIT = 100


def search_batches(session: Session, *, text: str = "", status: str = "") -> list[Batch]:
    """Batches whose DIN (or lot) or subject code contains ``text`` (case and spaces ignored), in ``status`` if
    given, newest first; at most ``SEARCH_LIMIT``."""
    query = sa.select(Batch).outerjoin(Batch.subject).options(so.joinedload(Batch.subject),
                                                               so.joinedload(Batch.created_by))
    needle = "".join(text.split())
    if needle:
        pattern = f"%{needle}%"
        query = query.where(sa.or_(Batch.din.ilike(pattern), Batch.lot.ilike(pattern), Subject.code.ilike(pattern)))
    if status:
        query = query.where(Batch.status == status)
    return list(session.scalars(query.order_by(Batch.id.desc()).limit(SEARCH_LIMIT)))


def search_subjects(session: Session, *, text: str = "", status: str = "") -> list[Subject]:
    """Subjects whose code or chain-of-identity id, or one of whose batches' DIN, contains ``text``; with
    ``status``, those with a batch in that status; by code."""
    query = sa.select(Subject)
    needle = "".join(text.split())
    if needle:
        pattern = f"%{needle}%"
        query = query.where(sa.or_(Subject.code.ilike(pattern), Subject.coi.ilike(pattern), Subject.id.in_(
            sa.select(Batch.subject_id).where(sa.or_(Batch.din.ilike(pattern), Batch.lot.ilike(pattern))))))
    if status:
        query = query.where(Subject.id.in_(sa.select(Batch.subject_id).where(Batch.status == status)))
    return list(session.scalars(query.order_by(Subject.code).limit(SEARCH_LIMIT)))
