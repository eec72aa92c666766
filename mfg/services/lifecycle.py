"""The batch lifecycle in the database: every status change, cancellation, and what protects patients when a
result fails after a conditional release (the table and the guards: ``domain.lifecycle``).

:func:`move` is the one place a batch's status changes (through ``lifecycle.BATCH_STATUS``).
:func:`protect_patients` runs when a batch goes under investigation (a failed result, or QA after a
complaint): it opens a critical deviation when none is given, blocks every bag not yet infused (a scan of a
blocked bag is a hard stop) and raises the alert every clinical user sees on every page until one of them
acknowledges it with a signature. :func:`infusion_stop` and :func:`handoff_stop` are the hard stops the
custody service raises (``ProductBlocked``: the unit of work audits it and opens its deviation).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from ..domain import guards, inputs, lifecycle
from ..domain.errors import ConflictError, HardStop, NotFound, ProductBlocked
from ..domain.signing import Meaning
from ..models import BagBlock, Batch, BatchDecision, ClinicalAlert, CustodyEvent, Deviation, ProductBag, User, utcnow
from . import audit, bags, deviations, evaluation, identity, signatures


def shown_in(tz: ZoneInfo) -> Callable[[datetime], str]:
    """How a moment is written for a person: the site's local time with its zone (``evaluation.local_text``)."""
    return lambda moment: evaluation.local_text(moment, tz)


def move(batch: Batch, target: str) -> None:
    """Every batch status change goes through the one transition table."""
    if batch.status != target:
        lifecycle.BATCH_STATUS.check(batch.status, target)
        batch.status = target


def claim(session: Session, batch: Batch) -> None:
    """Flush the batch's new status: two people cannot both move it (its row version)."""
    try:
        session.flush()
    except StaleDataError:
        raise ConflictError(f"batch {batch.lot} was changed by someone else; nothing was stored") from None


# --- cancellation ---------------------------------------------------------------------------------------

def guard_cancel(session: Session, user: User, batch: Batch) -> list[guards.Refusal]:
    return lifecycle.cancel(guards.person(user), lot=batch.lot, status=batch.status)


def cancel(session: Session, batch: Batch, *, reason: str, signer: User, password: str, username: str | None,
           require_username: bool) -> BatchDecision:
    """Cancel a batch started by mistake (no step performed): signed "Cancelled by" with the reason. It leaves
    the work queue and stays in the record."""
    guards.enforce(guard_cancel(session, signer, batch))
    reason = inputs.required("reason", reason, "A cancellation needs a reason.")
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)  # before the first write
    move(batch, "cancelled")
    claim(session, batch)
    record = BatchDecision(batch_id=batch.id, decision="cancelled", comment=reason, decided_by_id=signer.id,
                           decided_at=utcnow())
    session.add(record)
    audit.flush(session, reason="batch cancelled")
    signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.CANCELLED, record=record,
                    comment=f"batch cancelled: {reason}")
    return record


# --- bags: infused, blocked ------------------------------------------------------------------------------

def infused(session: Session, batch: Batch) -> dict[int, datetime]:
    """When each bag of the batch was infused (its bedside check), by bag id."""
    return {bag_id: at for bag_id, at in session.execute(  # type: ignore[misc]  # bag_id IS NOT NULL below
        sa.select(CustodyEvent.bag_id, CustodyEvent.occurred_at).where(
            CustodyEvent.batch_id == batch.id, CustodyEvent.kind == "bedside", CustodyEvent.bag_id.is_not(None)))}


def blocks(session: Session, batch: Batch) -> dict[int, BagBlock]:
    return {block.bag_id: block for block in session.scalars(
        sa.select(BagBlock).where(BagBlock.batch_id == batch.id).order_by(BagBlock.id))}


def bag_states(session: Session, batch: Batch) -> dict[int, lifecycle.BagState]:
    """Every bag of the batch as the stops need it, by bag id."""
    given, blocked = infused(session, batch), blocks(session, batch)
    return {bag.id: lifecycle.BagState(code=f"{bag.product_code} (bag {bag.division})",
                                       blocked=blocked[bag.id].reason if bag.id in blocked else None,
                                       expires_at=bag.expires_at, infused_at=given.get(bag.id))
            for bag in bags.of_batch(session, batch)}


def bag_stops(session: Session, batch: Batch, *, tz: ZoneInfo) -> dict[int, HardStop | None]:
    """What a bedside scan of each bag would stop on now (None: the bag may be infused), by bag id: the
    custody screen states it before anyone scans."""
    now, show = utcnow(), shown_in(tz)
    return {bag_id: lifecycle.infusion_stop(lot=batch.lot, status=batch.status, bag=state, now=now, show=show)
            for bag_id, state in bag_states(session, batch).items()}


def infusion_stop(session: Session, batch: Batch, bag: ProductBag, *, where: str, tz: ZoneInfo) -> None:
    """Raise the bedside hard stop (``ProductBlocked``) for a blocked, unreleased or expired bag."""
    stop = lifecycle.infusion_stop(lot=batch.lot, status=batch.status, bag=bag_states(session, batch)[bag.id],
                                   now=utcnow(), show=shown_in(tz))
    if stop:
        raise ProductBlocked(batch.id, where, stop.about(identity.subject_text(batch)), bag.division)


def handoff_stop(session: Session, batch: Batch, *, tz: ZoneInfo) -> None:
    """Raise the hand-off hard stop for a divided product whose bags are blocked or expired."""
    states = list(bag_states(session, batch).values())
    stop = lifecycle.handoff_stop(lot=batch.lot, bags=states, now=utcnow(), show=shown_in(tz)) if states else None
    if stop:
        raise ProductBlocked(batch.id, "hand-off", stop.about(identity.subject_text(batch)), None)


def record_blocked_scan(session: Session, stop: ProductBlocked, user: User) -> Deviation:
    """After the refused action was rolled back: the audit entry and the deviation of a product hard stop."""
    batch = session.get(Batch, stop.batch_id)
    if batch is None:
        raise NotFound(f"no batch with id {stop.batch_id}")
    audit.record_event(session, "product.blocked", user=user, entity_type="batch", entity_id=batch.id,
                       details={"where": stop.where, "bag": stop.division, "stop": stop.problems[0][:400]},
                       reason="product hard stop")
    deviation = deviations.open_deviation(session, batch, None, "product_stop",
                                          f"Hard stop at {stop.where}: {stop.problems[0]}", user)
    audit.flush(session, reason="product hard stop")
    return deviation


# --- a failure after a conditional release ----------------------------------------------------------------

def protect_patients(session: Session, batch: Batch, *, finding: str, user: User, tz: ZoneInfo,
                     deviation: Deviation | None = None) -> ClinicalAlert:
    """The batch goes under investigation: a critical deviation (unless given), every bag not yet infused
    blocked, and the alert the clinic must acknowledge. In the caller's transaction."""
    move(batch, "under_investigation")
    claim(session, batch)
    if deviation is None:
        deviation = deviations.open_deviation(session, batch, None, "investigation", finding, user)
    deviation.classification = "critical"
    session.flush()
    now, states = utcnow(), bag_states(session, batch)
    for bag in bags.of_batch(session, batch):
        if states[bag.id].infused_at is None:
            session.add(BagBlock(bag_id=bag.id, batch_id=batch.id, deviation_id=deviation.id,
                                 reason=f"batch under investigation: {deviation.number}", blocked_at=now,
                                 blocked_by_id=user.id))
    audit.flush(session, reason=f"batch {batch.lot} under investigation: bags not yet infused blocked")
    return alert_clinic(session, batch, finding=finding, deviation=deviation, tz=tz)


def alert_clinic(session: Session, batch: Batch, *, finding: str, deviation: Deviation, tz: ZoneInfo) -> ClinicalAlert:
    """Raise the alert every clinical user sees until one acknowledges it: the subject, the DIN, the finding,
    and each bag: when it was infused, or that it is blocked."""
    show, lines = shown_in(tz), []
    for state in bag_states(session, batch).values():
        if state.infused_at is not None:
            lines.append(f"{state.code}: INFUSED {show(state.infused_at)}")
        else:
            lines.append(f"{state.code}: not infused" + (", BLOCKED" if state.blocked else ""))
    subject = batch.subject.code if batch.subject else "no subject"
    alert = ClinicalAlert(batch_id=batch.id, deviation_id=deviation.id, raised_at=utcnow(), finding=(
        f"Subject {subject}, DIN {batch.din or '-'} (batch {batch.lot}): {finding}. "
        + ("; ".join(lines) if lines else "No bags were made") + f". Deviation {deviation.number}."))
    session.add(alert)
    audit.flush(session, reason=f"clinic alerted: batch {batch.lot}")
    return alert


def active_alerts(session: Session) -> list[ClinicalAlert]:
    """Alerts no clinical user has acknowledged yet (the banner on every clinical user's page)."""
    return list(session.scalars(sa.select(ClinicalAlert).where(ClinicalAlert.acknowledged_at.is_(None))
                                .order_by(ClinicalAlert.id)))


def get_alert(session: Session, alert_id: int) -> ClinicalAlert:
    alert = session.get(ClinicalAlert, alert_id)
    if alert is None:
        raise NotFound(f"no alert with id {alert_id}")
    return alert


def guard_acknowledge(session: Session, user: User, alert: ClinicalAlert) -> list[guards.Refusal]:
    return guards.acknowledge_alert(guards.person(user), acknowledged=alert.acknowledged_at is not None)


def acknowledge(session: Session, alert: ClinicalAlert, *, signer: User, password: str, username: str | None,
                require_username: bool) -> ClinicalAlert:
    """A clinical user acknowledges the alert with a signature ("Acknowledged by"), for the whole clinic."""
    guards.enforce(guard_acknowledge(session, signer, alert))
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)  # before the first write
    alert.acknowledged_by_id, alert.acknowledged_at = signer.id, utcnow()
    try:
        session.flush()
    except StaleDataError:
        raise ConflictError("the alert was acknowledged by someone else at the same moment") from None
    signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.ACKNOWLEDGED, record=alert,
                    comment="product alert acknowledged")
    audit.flush(session, reason="product alert acknowledged")
    return alert


def alerts_of(session: Session, batch: Batch) -> list[ClinicalAlert]:
    return list(session.scalars(sa.select(ClinicalAlert).where(ClinicalAlert.batch_id == batch.id)
                                .order_by(ClinicalAlert.id)))
