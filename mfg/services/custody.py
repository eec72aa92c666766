"""Chain of custody: every hand-off of the product, and the two-person bedside check before infusion.

Each event scans the bag; the bedside check also scans the subject's chain-of-identity identifier,
twice, by two different people, and the bag itself (its product code with the division). A scan that does
not match the batch is the identity hard stop (``services.identity.check``); a blocked, expired or unreleased
bag is the product hard stop (``services.lifecycle.infusion_stop``, ``handoff_stop``). Both are audited and
open a deviation through the unit of work, with no override.
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain import guards, inputs
from ..domain.errors import IdentityMismatch, ValidationFailed
from ..domain.signing import Meaning
from ..models import Batch, CustodyEvent, User, utcnow
from . import audit, bags, document_jobs, identity, lifecycle, signatures

CUSTODY_ROLES = guards.CUSTODY_ROLES


def guard_hand_off(session: Session, user: User, batch: Batch) -> list[guards.Refusal]:
    return guards.hand_off(guards.person(user)) + _documents_ready(session, batch)


def guard_bedside_check(session: Session, user: User, batch: Batch) -> list[guards.Refusal]:
    return (guards.bedside_check(guards.person(user), lot=batch.lot, bag_count=len(bags.of_batch(session, batch)))
            + _documents_ready(session, batch))


def _documents_ready(session: Session, batch: Batch) -> list[guards.Refusal]:
    return guards.documents_ready(lot=batch.lot, pending=document_jobs.documents_pending(session, batch))


def hand_off(session: Session, batch: Batch, *, scanned_din: str, from_location: str, to_location: str,
             condition: str, signer: User, password: str, username: str | None, require_username: bool,
             tz: ZoneInfo | None = None) -> CustodyEvent:
    """Record a hand-off (who, when, from, to, condition) after the bag's DIN is scanned and matches, and the
    product is neither blocked nor expired."""
    guards.enforce(guard_hand_off(session, signer, batch))
    problems = [f"{what} is required." for what, value in
                (("From", from_location), ("To", to_location), ("Condition", condition)) if not (value or "").strip()]
    problems += inputs.problems({"location": from_location}) + inputs.problems({"location": to_location})
    problems += inputs.problems({"condition": condition, "scanned_code": scanned_din})
    if problems:
        raise ValidationFailed(*problems)
    try:
        din = identity.check(session, batch, where="hand-off", label="Bag DIN", expected="batch.din",
                             scanned=scanned_din)
    except IdentityMismatch as mismatch:
        mismatch.fields = ("din",)
        raise
    lifecycle.handoff_stop(session, batch, tz=tz or ZoneInfo("UTC"))
    credentials = signatures.authenticate(signer, password=password, username=username,
                                          require_username=require_username)  # before the first write
    event = CustodyEvent(batch_id=batch.id, kind="handoff", scanned_din=din,
                         from_location=inputs.text("location", from_location),
                         to_location=inputs.text("location", to_location),
                         condition=inputs.text("condition", condition), performed_by_id=signer.id,
                         occurred_at=utcnow())
    session.add(event)
    audit.flush(session, reason=f"hand-off from {event.from_location} to {event.to_location}")
    signatures.sign(session, signer=signer, credentials=credentials, meaning=Meaning.PERFORMED, record=event)
    return event


@dataclass(frozen=True)
class BedsideScan:
    """One person's part of the bedside check: their credentials and what they scanned."""

    user: User
    username: str
    password: str
    scanned_din: str
    scanned_coi: str
    scanned_bag: str = ""


def bedside_check(session: Session, batch: Batch, *, first: BedsideScan, second: BedsideScan,
                  recorded_by: User | None = None, tz: ZoneInfo | None = None) -> CustodyEvent:
    """Two different people each scan the bag's DIN, the bag (product code with division) and the subject's
    identifier; all must match the batch and both must scan the same bag, which must be infusible: released
    (or released conditionally), not blocked, not expired, not infused before.

    The first signs "Performed by", the second "Verified by", each with user name and password, on the
    screen of ``recorded_by`` (the signed-in user; the first person by default).
    """
    recorder = recorded_by if recorded_by is not None else first.user
    guards.enforce(guard_bedside_check(session, recorder, batch))
    guards.enforce(guards.two_people(first.user.id, second.user.id))
    # Each person's role is checked by their signature, after their password: a shared screen must not
    # tell whether a name it was given exists or what role it has.
    scans = []
    for n, person in enumerate((first, second), start=1):
        matched = []
        for key, label, expected, scanned in (
                ("din", f"Bag DIN (person {n})", "batch.din", person.scanned_din),
                ("coi", f"Subject COI (person {n})", "subject.coi", person.scanned_coi),
                ("bag", f"Bag label (person {n})", "bag.product_code", person.scanned_bag)):
            try:
                matched.append(identity.check(session, batch, where="bedside", label=label, expected=expected,
                                              scanned=scanned))
            except IdentityMismatch as mismatch:
                mismatch.fields = (f"{n}.{key}",)  # the screen keeps the other scans
                raise
        din, coi, code = matched
        scans.append((din, coi, code))
    if scans[0][2] != scans[1][2]:
        raise ValidationFailed("The two people scanned different bags: both scan the one bag at the bedside.")
    bag = bags.expected_codes(session, batch)[scans[0][2]]
    lifecycle.infusion_stop(session, batch, bag, where="bedside", tz=tz or ZoneInfo("UTC"))
    given = lifecycle.infused(session, batch).get(bag.id)
    if given is not None:
        raise ValidationFailed(f"Bag {bag.division} of batch {batch.lot} was already infused ({given:%Y-%m-%d %H:%M} "
                               "UTC): do not infuse it again.")
    credentials = [signatures.authenticate(person.user, password=person.password, username=person.username)
                   for person in (first, second)]  # both before the first write
    event = CustodyEvent(batch_id=batch.id, kind="bedside", scanned_din=scans[0][0], scanned_coi=scans[0][1],
                         bag_id=bag.id, performed_by_id=first.user.id, verified_by_id=second.user.id,
                         occurred_at=utcnow())
    session.add(event)
    audit.flush(session, reason="two-person bedside identity check")
    for person, meaning, checked in ((first, Meaning.PERFORMED, credentials[0]),
                                     (second, Meaning.VERIFIED, credentials[1])):
        signatures.sign(session, signer=person.user, credentials=checked, meaning=meaning, record=event)
    return event


def events(session: Session, batch: Batch) -> list[CustodyEvent]:
    return list(session.scalars(sa.select(CustodyEvent).where(CustodyEvent.batch_id == batch.id)
                                .order_by(CustodyEvent.id)))
