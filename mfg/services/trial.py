"""The trial's cohort ledger (issue [3.7] items 3-5): which dose level is open to new subjects, on whose signed
decision; the DLT events the clinic records; what each subject was assigned and actually received.

* **Open level.** Only a signed escalation decision opens a level (``EscalationDecision`` with an "Approved by"
  signature); the newest signed one is in force. Before the first, no level is open: the safety review's first
  decision opens the start level the configuration names. Each decision opens a cohort (numbered in decision
  order) of at most ``cohort_size`` subjects; dose planning (``clinical.assign_dose_level``) refuses any other
  level and a full cohort (``guards.level_open``), and records the cohort and the decision on the subject; the
  batch pins the decision with the dose (``starting.pinned_dose``).
* **Infusion.** A subject's infusion time is the first two-person bedside check of a bag of their batch
  (``CustodyEvent`` of kind ``bedside``); the DLT window runs ``dlt_window_days`` from it.
* **Evaluable.** A subject is evaluable once the window has closed, or at once with a DLT (an event the clinic
  judged dose-limiting, onset within the window). Until then they count as pending, never as DLT-free; a subject
  assigned and not yet infused is pending too (``domain.escalation``).
* **Recommendation.** ``domain.escalation.recommend`` from the counts at every level; the safety review's
  decision is a separate signed record that may differ with a reason (``guards.decide_escalation``).
* **Assigned and achieved.** NK cells and CD3+ cells per kg infused are the infused bags' cells over the weight the
  batch pinned; an achieved NK dose more than ``dose_tolerance_pct`` from the assigned level, or CD3+ cells at or
  above the limit that applies to the donor's relationship, is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain import display, escalation, guards, inputs
from ..domain.errors import ValidationFailed
from ..domain.signing import Meaning, manifestation
from ..domain.trial_config import Escalation, TrialConfiguration
from ..models import (
    Batch,
    CustodyEvent,
    DltEvent,
    EscalationDecision,
    ProductBag,
    Signature,
    SignatureInvalidation,
    SopVersion,
    Subject,
    User,
    utcnow,
)
from . import audit, rows, signatures, sops

ATTRIBUTIONS = ("unrelated", "unlikely", "possible", "probable", "definite")  # NCI-CTCAE attribution
GRADES = (1, 2, 3, 4, 5)  # NCI-CTCAE v5.0


def design(session: Session) -> tuple[SopVersion, TrialConfiguration, Escalation] | None:
    """The effective trial configuration with its escalation design (None: no configuration, or one without)."""
    try:
        version = sops.trial_configuration_version(session)
    except ValidationFailed:
        return None
    config = sops.definition(version)
    assert isinstance(config, TrialConfiguration)
    if config.escalation is None:
        return None
    return version, config, config.escalation


# --- decisions -------------------------------------------------------------------------------------------

def signed_decisions(session: Session) -> list[tuple[EscalationDecision, Signature]]:
    """Every escalation decision with its "Approved by" signature (a decision without one opens nothing), oldest
    first."""
    invalidated = sa.select(SignatureInvalidation.signature_id)
    found = session.execute(
        sa.select(EscalationDecision, Signature)
        .join(Signature, sa.and_(Signature.record_type == EscalationDecision.__tablename__,
                                 Signature.record_id == sa.cast(EscalationDecision.id, sa.String),
                                 Signature.meaning == Meaning.APPROVED.value))
        .where(Signature.id.not_in(invalidated))
        .order_by(EscalationDecision.id)).all()
    return [(decision, signature) for decision, signature in found]


def decision_name(decision: EscalationDecision, signature: Signature) -> str:
    """How a decision is named to people: ``escalation decision 3 (DL2, Approved by Dr. Li, 2026-12-07 10:00 UTC)``."""
    signed = manifestation(signature.printed_name, display.utc(signature.signed_at).removesuffix(" UTC"),
                           Meaning(signature.meaning))
    return f"escalation decision {decision.id} ({decision.level or 'enrolment stopped'}, {signed})"


def open_level(session: Session, *, excluding: Subject | None = None) -> escalation.OpenLevel | None:
    """What the latest signed decision opened, with its cohort's number and fill (``excluding`` a subject being
    reassigned); None without an escalation design."""
    found = design(session)
    if found is None:
        return None
    cohort_size = found[2].cohort_size
    decisions = signed_decisions(session)
    if not decisions:
        return escalation.OpenLevel(None, None, None, 0, 0, cohort_size)
    decision, signature = decisions[-1]
    assigned = sa.select(sa.func.count()).select_from(Subject).where(Subject.escalation_decision_id == decision.id)
    if excluding is not None:
        assigned = assigned.where(Subject.id != excluding.id)
    return escalation.OpenLevel(decision_name(decision, signature), decision.id, decision.level, len(decisions),
                                session.scalar(assigned) or 0, cohort_size)


def lock_trial(session: Session) -> None:
    """Hold the effective trial configuration's row until the commit: decisions, and assignments to a cohort's
    last place, run one after the other, each seeing what the one before did."""
    rows.lock(session, sops.trial_configuration_version(session))


# --- the ledger ------------------------------------------------------------------------------------------

@dataclass
class SubjectRow:
    subject: Subject
    level: str
    cohort: int | None
    decision_id: int | None
    batch: Batch | None = None
    infused_at: datetime | None = None
    window_closes: datetime | None = None
    events: list[DltEvent] = field(default_factory=list)
    status: str = "assigned"  # assigned (not infused), in window, evaluable, DLT
    assigned_per_kg: int | None = None
    achieved_nk_per_kg: Decimal | None = None
    achieved_cd3_per_kg: Decimal | None = None
    cd3_limit_per_kg: int | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def dlt(self) -> bool:
        return self.status == "DLT"

    @property
    def days_left(self) -> int | None:
        """Days until the DLT window closes, a part of a day counting as a day (the countdown: 30 on the day of the
        infusion, 1 on the last day), None when not infused or when evaluable."""
        if self.window_closes is None or self.status != "in window":
            return None
        return max(0, -(-(self.window_closes - utcnow()) // timedelta(days=1)))


@dataclass
class Ledger:
    config: TrialConfiguration
    version: SopVersion
    design: Escalation
    rows: list[SubjectRow]
    counts: dict[str, escalation.LevelCounts]
    decisions: list[tuple[EscalationDecision, Signature]]
    open: escalation.OpenLevel
    closed: list[str]
    recommendation: escalation.Recommendation
    enrolled: int

    @property
    def levels(self) -> list[str]:
        return [d.code for d in self.config.dose_levels]

    def snapshot(self) -> str:
        """What a decision records of the ledger it was made on, in words (the audit trail shows it as it is):
        ``DL1: 3 evaluable (0 with a DLT), 0 not yet evaluable; ...; open: DL2; closed: none; 4 subjects``."""
        order = {level: i for i, level in enumerate(self.levels)}
        counts = "; ".join(f"{level}: {c.evaluable} evaluable ({c.dlts} with a DLT), {c.pending} not yet evaluable"
                           for level, c in sorted(self.counts.items(), key=lambda item: order.get(item[0], 99)))
        subjects = f"{len(self.rows)} subject{'s' if len(self.rows) != 1 else ''}"
        return (f"{counts or 'no subject assigned'}; open: {self.open.level or 'none'}; "
                f"closed: {', '.join(self.closed) or 'none'}; {subjects}")


def _infusions(session: Session, subject_ids: list[int]) -> dict[int, tuple[Batch, datetime, list[ProductBag]]]:
    """Each subject's infused batch: its first bedside check's time and the bags checked at the bedside."""
    found: dict[int, tuple[Batch, datetime, list[ProductBag]]] = {}
    if not subject_ids:
        return found
    result = session.execute(
        sa.select(Batch, CustodyEvent, ProductBag)
        .join(CustodyEvent, sa.and_(CustodyEvent.batch_id == Batch.id, CustodyEvent.kind == "bedside"))
        .outerjoin(ProductBag, ProductBag.id == CustodyEvent.bag_id)
        .where(Batch.subject_id.in_(subject_ids))
        .order_by(CustodyEvent.occurred_at, CustodyEvent.id))
    for batch, event, bag in result:
        assert batch.subject_id is not None
        if batch.subject_id not in found:
            found[batch.subject_id] = (batch, event.occurred_at, [])
        entry = found[batch.subject_id]
        if entry[0].id == batch.id and bag is not None and bag not in entry[2]:
            entry[2].append(bag)
    return found


def _achieved(row: SubjectRow, batch: Batch, bags: list[ProductBag], config: TrialConfiguration,
              tolerance_pct: float) -> None:
    row.assigned_per_kg = batch.dose_cells_per_kg
    if not bags or not batch.weight_kg:
        return
    weight = Decimal(batch.weight_kg)
    row.achieved_nk_per_kg = Decimal(sum(b.nk_cells for b in bags)) / weight
    if all(b.cd3_cells is not None for b in bags):
        row.achieved_cd3_per_kg = Decimal(sum(b.cd3_cells or 0 for b in bags)) / weight
    row.cd3_limit_per_kg = config.cd3_limit_for(row.subject.donor.relationship)
    if row.assigned_per_kg:
        off = abs(row.achieved_nk_per_kg / row.assigned_per_kg - 1) * 100
        if off > Decimal(str(tolerance_pct)):
            row.flags.append(f"achieved NK dose {off:.0f} % from the assigned level (tolerance "
                             f"{tolerance_pct:g} %)")
    if row.achieved_cd3_per_kg is not None and row.achieved_cd3_per_kg >= row.cd3_limit_per_kg:
        row.flags.append(f"CD3+ cells per kg at or above the limit ({row.cd3_limit_per_kg})")


def ledger(session: Session, *, now: datetime | None = None) -> Ledger | None:
    """The cohort ledger (None without an escalation design)."""
    found = design(session)
    if found is None:
        return None
    version, config, plan = found
    now = now or utcnow()
    subjects = list(session.scalars(sa.select(Subject).where(Subject.cohort.is_not(None))
                                    .order_by(Subject.cohort, Subject.id)))
    infusions = _infusions(session, [s.id for s in subjects])
    events: dict[int, list[DltEvent]] = {}
    for event in session.scalars(sa.select(DltEvent).order_by(DltEvent.id)):
        events.setdefault(event.subject_id, []).append(event)
    rows_: list[SubjectRow] = []
    tallies: dict[str, list[int]] = {}
    for subject in subjects:
        level = subject.dose_level or "?"
        row = SubjectRow(subject, level, subject.cohort, subject.escalation_decision_id,
                         events=events.get(subject.id, []))
        infusion = infusions.get(subject.id)
        evaluable = dlt = False
        if infusion is not None:
            batch, infused_at, bags = infusion
            row.batch, row.infused_at = batch, infused_at
            row.level = batch.dose_level or level
            row.window_closes = infused_at + timedelta(days=plan.dlt_window_days)
            closes_on = row.window_closes.date()
            dlt = any(e.is_dlt and infused_at.date() <= e.onset_on <= closes_on for e in row.events)
            evaluable = dlt or now >= row.window_closes
            row.status = "DLT" if dlt else "evaluable" if evaluable else "in window"
            _achieved(row, batch, bags, config, plan.dose_tolerance_pct)
        tally = tallies.setdefault(row.level, [0, 0, 0])
        tally[0 if evaluable else 2] += 1
        tally[1] += dlt
        rows_.append(row)
    counts = {level: escalation.LevelCounts(e, d, p) for level, (e, d, p) in tallies.items()}
    decisions = signed_decisions(session)
    opened = open_level(session)
    assert opened is not None
    levels = [d.code for d in config.dose_levels]
    closed = escalation.closed_levels(plan.rule, levels, counts, plan.target_dlt_rate)
    recommendation = escalation.recommend(rule=plan.rule, levels=levels, counts=counts, current=opened.level,
                                          start=plan.start_level, target=plan.target_dlt_rate)
    if decisions and opened.level is None:
        recommendation = escalation.Recommendation("stopped", None, "enrolment is stopped")
    enrolled = session.scalar(sa.select(sa.func.count()).select_from(Subject)) or 0
    return Ledger(config, version, plan, rows_, counts, decisions, opened, closed, recommendation, enrolled)


def infused_on(session: Session, subject: Subject) -> date | None:
    """The day of the subject's infusion (first bedside check), None before it."""
    infusion = _infusions(session, [subject.id]).get(subject.id)
    return infusion[1].date() if infusion is not None else None


# --- recording -------------------------------------------------------------------------------------------

def guard_record_dlt(session: Session, user: User, subject: Subject,
                     onset_on: date | None = None) -> list[guards.Refusal]:
    infused = infused_on(session, subject)
    return guards.record_dlt(guards.person(user), subject_code=subject.code,
                             infused_on=infused.isoformat() if infused else None,
                             onset_on=(onset_on or infused or date.max).isoformat())


def record_dlt(session: Session, subject: Subject, *, term: str, grade: int | str, attribution: str,
               onset_on: date | None, is_dlt: bool | None, comment: str, signer: User, password: str,
               username: str | None, require_username: bool) -> DltEvent:
    """Record an adverse event of ``subject`` (CTCAE term, grade, attribution, onset) with the clinic's judgement
    whether it is dose-limiting, signed "Performed by". Every malformed input at once, nothing stored."""
    problems = inputs.problems({"ctcae_term": term, "comment": comment})
    if not (term or "").strip():
        problems.append("CTCAE term: enter the adverse event's term (NCI-CTCAE v5.0).")
    try:
        grade_number = int(str(grade))
    except ValueError:
        grade_number = 0
    if grade_number not in GRADES:
        problems.append("Grade: choose 1 to 5 (NCI-CTCAE v5.0).")
    if attribution not in ATTRIBUTIONS:
        problems.append(f"Attribution: choose one of {', '.join(ATTRIBUTIONS)}.")
    if onset_on is None:
        problems.append("Onset: enter the date the event began.")
    else:
        problems += inputs.problems_of_day("onset_on", onset_on, today=date.today())
    if is_dlt is None:
        problems.append("Dose-limiting: answer yes or no.")
    if problems:
        raise ValidationFailed(*problems)
    assert onset_on is not None and is_dlt is not None
    rows.lock(session, subject)
    guards.enforce(guard_record_dlt(session, signer, subject, onset_on))
    cleaned = inputs.text("ctcae_term", term)
    same = session.scalar(sa.select(DltEvent).where(
        DltEvent.subject_id == subject.id, DltEvent.term == cleaned, DltEvent.grade == grade_number,
        DltEvent.onset_on == onset_on, DltEvent.is_dlt == is_dlt))
    if same is not None:  # the same event sent twice (two tabs, two people)
        raise rows.already_done(session, f"{cleaned} grade {grade_number} from {onset_on.isoformat()} was already "
                                f"recorded for subject {subject.code}", user_id=same.recorded_by_id,
                                at=same.recorded_at)
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)
    event = DltEvent(subject_id=subject.id, term=cleaned, grade=grade_number, attribution=attribution,
                     onset_on=onset_on, is_dlt=is_dlt, comment=inputs.text("comment", comment) or None,
                     recorded_by_id=signer.id)
    session.add(event)
    audit.flush(session, reason=f"adverse event recorded for subject {subject.code}"
                                f"{' (DLT)' if is_dlt else ''}")
    signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.PERFORMED, record=event,
                    comment=f"{cleaned}, grade {grade_number}, {attribution}, "
                            f"{'dose-limiting' if is_dlt else 'not dose-limiting'}")
    return event


def guard_decide(session: Session, user: User, level: str | None = None, reason: str = "",
                 book: Ledger | None = None) -> list[guards.Refusal]:
    book = book or ledger(session)
    if book is None:
        return guards.role_refusals("decide_escalation", guards.person(user)) + [
            guards.Refusal("state", "the effective trial configuration has no escalation design")]
    recommended = book.recommendation.level
    return guards.decide_escalation(guards.person(user), levels=book.levels, current=book.open.level,
                                    level=level if level is not None else recommended, closed=book.closed,
                                    recommended=recommended, reason=reason, first=not book.decisions)


def decide(session: Session, *, level: str | None, reason: str, based_on: int | None, signer: User, password: str,
           username: str | None, require_username: bool) -> EscalationDecision:
    """The safety review's decision on the level open to new subjects (``level``; "" or None stops enrolment),
    signed "Approved by", recording the rule's recommendation and the ledger it was made on. ``based_on`` is the
    latest signed decision the ledger showed when the decision was made (None: none): a decision signed since
    refuses this one (two reviewers, two tabs), naming who signed it."""
    reason = inputs.text("reason", reason)
    level = level or None
    lock_trial(session)
    book = ledger(session)
    if book is None:
        raise ValidationFailed("the effective trial configuration has no escalation design")
    latest = book.decisions[-1] if book.decisions else None
    if (latest[0].id if latest else None) != based_on:  # someone signed a decision since the screen was shown
        assert latest is not None
        raise rows.already_done(session, f"{decision_name(*latest)} was signed after the ledger you decided on was "
                                "shown: review the ledger again", user_id=latest[1].user_id, at=latest[1].signed_at)
    guards.enforce(guards.decide_escalation(
        guards.person(signer), levels=book.levels, current=book.open.level, level=level, closed=book.closed,
        recommended=book.recommendation.level, reason=reason, first=not book.decisions))
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)
    current = book.open.level
    if level is None:
        action = "stop"
    elif current is None:
        action = "start"
    else:
        step = book.levels.index(level) - book.levels.index(current)
        action = "escalate" if step > 0 else "stay" if step == 0 else "de-escalate"
    decision = EscalationDecision(trial_config_version_id=book.version.id, from_level=current,
                                  recommendation=book.recommendation.action,
                                  recommended_level=book.recommendation.level, action=action, level=level,
                                  reason=reason or None, ledger=book.snapshot(),
                                  decided_by_id=signer.id)
    session.add(decision)
    audit.flush(session, reason=f"escalation decision: {action} ({level or 'no level open'})")
    signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.APPROVED, record=decision,
                    comment=f"{action}: {level or 'enrolment stopped'}; recommended {book.recommendation.action} "
                            f"({book.recommendation.level or 'no level'})")
    return decision


def get_decision(session: Session, decision_id: int | None) -> tuple[EscalationDecision, Signature] | None:
    """A signed decision by id (None for None or an unsigned one): batch records and certificates name it."""
    if decision_id is None:
        return None
    return next(((d, s) for d, s in signed_decisions(session) if d.id == decision_id), None)
