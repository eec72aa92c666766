"""The validation data sets a site runs in operational qualification (OQ): one NK batch driven through the
services, as the demo people, to one of the lifecycle's ends (``flask --app mfg demo-batch --scenario S``).

* ``conditional``: intake to the conditional release, sterility pending; labels, batch record and
  certificate of analysis revision 1.
* ``final``: on from the conditional release: the 14-day sterility result entered ("No growth") and
  verified by a second operator, QA reviews what changed and releases finally: a supplemental certificate
  (revision 2, superseding revision 1) and batch record revision 2.
* ``sterility-positive``: on from the conditional release: bag A infused after the two-person bedside
  check; the culture flags growth; the batch goes under investigation, bag B is blocked, the clinic is
  alerted and a clinical user acknowledges the alert; a bedside scan of bag B is a hard stop (audited, its
  deviation opened); QA rejects the batch.
* ``cancelled``: a batch opened by mistake and cancelled before any starting material was received.
* ``cohorts``: the cohort ledger's data set (issue [3.7] item 8), on the demo's two cohorts (``seed_subjects``:
  NK-011 to NK-013 at DL1, NK-001 at DL2): NK-001's batch to the conditional release, its bag infused after the
  two-person bedside check, a dose-limiting toxicity recorded and signed by a clinical user, and the safety
  review's signed decision that follows it, as the rule recommends (3+3: one DLT, the level's other subjects not
  yet evaluable: stay at DL2, a new cohort).
* ``in-progress``: a batch for another subject (``--subject``, e.g. NK-002) performed up to a step
  (``--until RECORD:STEP``, not performed), or to the end of its steps (awaiting QA's review): the screens'
  states for training and for ``make screenshots``. It issues no document.

Every action is one unit of work run by the edge's ``Act`` (the CLI: ``mfg.cli``; the tests: the same unit
of work), as the person who acts, so the audit trail attributes each action exactly as the screens would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain import isbt128
from ..domain.errors import ProductBlocked
from ..models import Batch, DocumentRevision, ProductBag, Subject, User, utcnow
from ..services import bags, custody, documents, results, review, starting
from ..services import lifecycle as batch_lifecycle
from . import nk_batch as demo_nk

SCENARIOS = ("conditional", "final", "sterility-positive", "cancelled", "in-progress", "cohorts")

Act = Callable[[str, Callable[[Session], Any]], Any]
"""``act(username, action)``: run ``action(session)`` as one unit of work acting as ``username``."""


@dataclass
class Outcome:
    """What a scenario did: its batch, the documents it issued (in order) and what it observed."""

    lot: str = ""
    documents: list[DocumentRevision] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Setting:
    """What the demo acts with: the site's signing key (labels), the time zone, the people's password, and
    how the edge has the documents of a decision made once it committed (the documents worker, inline)."""

    site: Any
    tz: ZoneInfo
    password: str
    make_documents: Callable[[], list[DocumentRevision]]
    demo: bool = True


def _user(session: Session, username: str) -> User:
    return session.scalars(sa.select(User).where(User.username == username)).one()


def _sign(session: Session, username: str, setting: Setting) -> dict[str, Any]:
    return {"signer": _user(session, username), "password": setting.password, "username": username,
            "require_username": True}


def _subject(session: Session, subject_id: int) -> Subject:
    found = session.get(Subject, subject_id)
    assert found is not None  # created by the scenario's first action
    return found


def _batch(session: Session, lot: str) -> Batch:
    return session.scalars(sa.select(Batch).where(Batch.lot == lot)).one()


def _review_all(session: Session, batch: Batch, qa: User) -> None:
    reviewed = review.marks(session, batch)
    for item in review.exceptions(session, batch):
        if item.key not in reviewed:
            review.mark_reviewed(session, batch, item.key, user=qa, comment="demo review: seen")


def conditional(act: Act, setting: Setting, *, subject_code: str = demo_nk.DEMO_SUBJECT,
                dose_level: str = demo_nk.DEMO_DOSE_LEVEL, days_back: int = 0) -> Outcome:
    """Intake to the conditional release (sterility pending); labels printed by the operator. ``days_back``:
    the recorded process ends that many days before now (signatures carry the real time)."""
    outcome = Outcome()
    ended = utcnow() - timedelta(days=days_back)

    def subject(session: Session) -> int:
        return demo_nk.seed_demo_subject(session, _user(session, "clinical1"), setting.password,
                                         code=subject_code, dose_level=dose_level, today=ended.date()).id

    subject_id = act("clinical1", subject)

    def manufacture(session: Session) -> str:
        batch = demo_nk.run_nk_batch(session, subject=_subject(session, subject_id),
                                     performer=_user(session, "operator1"), verifier=_user(session, "operator2"),
                                     password=setting.password, tz=setting.tz, now=ended)
        return batch.lot

    outcome.lot = act("operator1", manufacture)
    outcome.documents.append(act("operator1", lambda s: documents.print_labels(
        s, _batch(s, outcome.lot), reason="", site=setting.site, demo=setting.demo,
        label_size=(4, 4), **_sign(s, "operator1", setting))))
    outcome.documents += _decide(act, setting, outcome.lot, "conditionally_released", "demo batch: sterility pending")
    outcome.notes.append(f"batch {outcome.lot} conditionally released (sterility pending)")
    return outcome


def _decide(act: Act, setting: Setting, lot: str, decision: str, comment: str) -> list[DocumentRevision]:
    def decide(session: Session) -> None:
        batch = _batch(session, lot)
        _review_all(session, batch, _user(session, "qa1"))
        documents.decide_and_request_documents(session, batch, decision=decision, comment=comment, tz=setting.tz,
                                               **_sign(session, "qa1", setting))

    act("qa1", decide)
    return setting.make_documents()


def _enter_sterility(act: Act, setting: Setting, lot: str, answers: dict[str, str], comment: str = "") -> None:
    """Enter the pending results whose field answers include the given one (by the field's choices), as
    operator1; operator2 verifies them."""
    def enter(session: Session) -> None:
        for pending in results.of_batch(session, _batch(session, lot)):
            field = results.field_of(session, pending)
            answer = next((a for a in answers.values() if a in (results.answers(field) or [])), None)
            if pending.status == "pending" and answer is not None:
                results.enter_result(session, pending, raw=answer, comment=comment, tz=setting.tz,
                                     **_sign(session, "operator1", setting))

    act("operator1", enter)

    def verify(session: Session) -> None:
        for pending in results.of_batch(session, _batch(session, lot)):
            if pending.status == "awaiting_verification":
                results.verify_result(session, pending, **_sign(session, "operator2", setting))

    act("operator2", verify)


# The demo's sterility answers, by the words of the master records' choices (NK-RELEASE v2 and v3).
NEGATIVE = {"culture": "No growth", "preliminary": "No growth at preliminary read"}
POSITIVE = {"culture": "Growth"}  # the culture flags growth (reported as soon as it is found)


def final(act: Act, setting: Setting) -> Outcome:
    """On from the conditional release to the final release, with the supplemental certificate. The batch
    is recorded 15 days back, so that its 14-day culture (and the preliminary read) can be read today."""
    outcome = conditional(act, setting, days_back=15)
    _enter_sterility(act, setting, outcome.lot, NEGATIVE)
    outcome.documents += _decide(act, setting, outcome.lot, "released", "final results within specification")
    outcome.notes.append(f"batch {outcome.lot} released on its final results (supplemental certificate)")
    return outcome


def _scan(session: Session, batch: Batch, bag: ProductBag, username: str, setting: Setting) -> custody.BedsideScan:
    assert batch.din is not None and batch.subject is not None  # an NK batch
    return custody.BedsideScan(
        user=_user(session, username), username=username, password=setting.password,
        scanned_din=isbt128.din_from_text(batch.din).barcode("00"),
        scanned_coi=isbt128.parse_coi(isbt128.COI_PREFIX + batch.subject.coi).barcode(),
        scanned_bag=isbt128.PRODUCT_CODE_PREFIX + bag.product_code)


def _infuse(act: Act, setting: Setting, lot: str, division: str) -> None:
    def bedside(session: Session) -> None:
        batch = _batch(session, lot)
        bag = next(b for b in bags.of_batch(session, batch) if b.division == division)
        custody.bedside_check(session, batch, first=_scan(session, batch, bag, "clinical1", setting),
                              second=_scan(session, batch, bag, "clinical2", setting), tz=setting.tz)

    act("clinical1", bedside)


def sterility_positive(act: Act, setting: Setting) -> Outcome:
    """One bag infused, then the culture flags growth: the batch under investigation, the other bag blocked,
    the clinic alerted and acknowledging, the blocked bag refused at the bedside, QA rejects. The subject
    (NK-002) is at dose level DL4, whose volume fills two bags."""
    outcome = conditional(act, setting, subject_code="NK-002", dose_level="DL4")
    lot = outcome.lot
    divisions = act("clinical1", lambda s: [b.division for b in bags.of_batch(s, _batch(s, lot))])
    if len(divisions) < 2:
        raise RuntimeError(f"the sterility-positive scenario needs two bags; batch {lot} has {len(divisions)}")
    _infuse(act, setting, lot, divisions[0])
    outcome.notes.append(f"bag {divisions[0]} infused after the two-person bedside check")
    _enter_sterility(act, setting, lot, POSITIVE, comment="Aerobic bottle flagged positive; Gram-positive cocci")
    alert = act("clinical2", lambda s: batch_lifecycle.alerts_of(s, _batch(s, lot))[-1].finding)
    outcome.notes.append(f"clinic alerted: {alert}")
    act("clinical2", lambda s: batch_lifecycle.acknowledge(
        s, batch_lifecycle.alerts_of(s, _batch(s, lot))[-1], **_sign(s, "clinical2", setting)))
    try:
        _infuse(act, setting, lot, divisions[1])
    except ProductBlocked as stop:
        outcome.notes.append(f"bag {divisions[1]} refused at the bedside: {stop.problems[0]}")
    else:  # pragma: no cover - the scenario exists to show this never happens
        raise RuntimeError(f"bag {divisions[1]} of batch {lot} was infused although blocked")
    outcome.documents += _decide(act, setting, lot, "rejected",
                                 "Sterility culture positive after the conditional release; bag "
                                 f"{divisions[0]} infused (clinic alerted and acknowledged), bag {divisions[1]} "
                                 "blocked and not infused")
    outcome.notes.append(f"batch {lot} rejected")
    return outcome


def cancelled(act: Act, setting: Setting) -> Outcome:
    """A batch record opened by mistake, cancelled by the operator before any starting material arrived."""
    outcome = Outcome()

    def subject(session: Session) -> int:
        return demo_nk.seed_demo_subject(session, _user(session, "clinical1"), setting.password).id

    subject_id = act("clinical1", subject)
    outcome.lot = act("operator1", lambda s: starting.start_product_batch(
        s, subject=_subject(s, subject_id), user=_user(s, "operator1")).lot)
    act("operator1", lambda s: batch_lifecycle.cancel(
        s, _batch(s, outcome.lot), reason="Opened for the wrong collection date; the collection was rescheduled",
        **_sign(s, "operator1", setting)))
    outcome.notes.append(f"batch {outcome.lot} cancelled before any starting material was received")
    return outcome


def in_progress(act: Act, setting: Setting, *, subject_code: str = demo_nk.DEMO_SUBJECT,
                until: tuple[str, str] | None = None) -> Outcome:
    """The batch of ``subject_code`` (created with the demo donor and dose level when missing) performed by
    operator1 and verified by operator2 up to the step ``until`` = (record code, step id), which stays open,
    or, without ``until``, to the end of its steps (awaiting QA's review)."""
    outcome = Outcome()

    def subject(session: Session) -> int:
        return demo_nk.seed_demo_subject(session, _user(session, "clinical1"), setting.password,
                                         code=subject_code).id

    subject_id = act("clinical1", subject)

    def manufacture(session: Session) -> tuple[str, str]:
        batch = demo_nk.run_nk_batch(session, subject=_subject(session, subject_id),
                                     performer=_user(session, "operator1"), verifier=_user(session, "operator2"),
                                     password=setting.password, tz=setting.tz, until=until)
        return batch.lot, batch.status

    outcome.lot, status = act("operator1", manufacture)
    where = f"open at {until[0]} {until[1]}" if until else "at the end of its steps"
    outcome.notes.append(f"batch {outcome.lot} of subject {subject_code} {where} ({status.replace('_', ' ')})")
    return outcome


def cohorts(act: Act, setting: Setting) -> Outcome:
    """The ledger's data set (module docstring): one DLT at DL2 and the decision that follows."""
    from datetime import date

    from ..services import trial

    outcome = conditional(act, setting)
    divisions = act("clinical1", lambda s: [b.division for b in bags.of_batch(s, _batch(s, outcome.lot))])
    _infuse(act, setting, outcome.lot, divisions[0])
    outcome.notes.append(f"bag {divisions[0]} of batch {outcome.lot} infused after the two-person bedside check")

    def dlt(session: Session) -> str:
        subject = _batch(session, outcome.lot).subject
        assert subject is not None  # an NK batch
        event = trial.record_dlt(session, subject, term="Cytokine release syndrome", grade=3,
                                 attribution="probable", onset_on=date.today(), is_dlt=True,
                                 comment="DEMO: fever and hypotension needing vasopressor support",
                                 **_sign(session, "clinical1", setting))
        return f"DLT recorded for {subject.code}: {event.term}, grade {event.grade}"

    outcome.notes.append(act("clinical1", dlt))

    def decide(session: Session) -> str:
        book = trial.ledger(session)
        assert book is not None  # the demo's trial configuration has an escalation design
        decision = trial.decide(session, level=book.recommendation.level, reason="",
                                based_on=book.decisions[-1][0].id if book.decisions else None,
                                **_sign(session, "clinical2", setting))
        return f"safety review: {decision.action} at {decision.level} (recommended {decision.recommendation})"

    outcome.notes.append(act("clinical2", decide))
    return outcome


RUN: dict[str, Callable[[Act, Setting], Outcome]] = {
    "conditional": conditional, "final": final, "sterility-positive": sterility_positive, "cancelled": cancelled,
    "in-progress": in_progress, "cohorts": cohorts}
