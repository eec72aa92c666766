"""The batch lifecycle on a real NK batch, on SQLite and PostgreSQL: what a failed result after a conditional
release does, every refusal on the way (each one a guard's), and cancellation. Every action runs in the unit
of work of every edge (``mfg.unit_of_work``), as the demo person who does it, so the hard stops are recorded
exactly as the screens and the command line record them."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from mfg.config import RESOURCE_ROOT
from mfg.demo import scenarios
from mfg.demo.seed import DEMO_PASSWORD
from mfg.domain import isbt128
from mfg.domain.errors import (
    AuthenticationFailed,
    IdentityMismatch,
    InvalidTransition,
    PermissionDenied,
    ProductBlocked,
    ValidationFailed,
)
from mfg.extensions import db
from mfg.models import AuditEntry, BagBlock, Batch, CustodyEvent, Deviation, User
from mfg.reports.pdf import load_site_signer
from mfg.services import accounts, audit, bags, batch_pages, custody, lifecycle, results, review, signatures, starting
from mfg.unit_of_work import unit_of_work
from tests.support import app_refusal, assert_audit_intact, make_documents

UTC = ZoneInfo("UTC")


@pytest.fixture
def demo_site(app, site_certificate):
    """A demo instance as `flask --app mfg init --demo` makes it: users, master records, master data."""
    app.config["SOPS_DIR"] = str(RESOURCE_ROOT / "sops")
    assert app.test_cli_runner().invoke(args=["init", "--demo"]).exit_code == 0
    with app.app_context():
        site = load_site_signer(app.config, Path(app.instance_path))
        yield scenarios.Setting(site=site, tz=UTC, password=DEMO_PASSWORD,
                                make_documents=lambda: make_documents(app, site))


def _user(name: str) -> User:
    return db.session.scalars(sa.select(User).where(User.username == name)).one()


def act(username, action):
    """One unit of work acting as ``username``: what the CLI's demo-batch and every screen do."""
    session = db.session
    person = _user(username)
    audit.set_actor(session, person)
    with unit_of_work(session, actor=person, policy=accounts.Policy()):
        return action(session)


def _sign(name: str) -> dict:
    return {"signer": _user(name), "password": DEMO_PASSWORD, "username": name, "require_username": True}


def _scan(batch, bag, name: str, **override) -> custody.BedsideScan:
    values = dict(user=_user(name), username=name, password=DEMO_PASSWORD,
                  scanned_din=isbt128.din_from_text(batch.din).barcode("00"),
                  scanned_coi=isbt128.parse_coi(isbt128.COI_PREFIX + batch.subject.coi).barcode(),
                  scanned_bag=isbt128.PRODUCT_CODE_PREFIX + bag.product_code)
    values.update(override)
    return custody.BedsideScan(**values)


def _bedside(batch, bag, **override):
    return act("clinical1", lambda s: custody.bedside_check(
        s, batch, first=_scan(batch, bag, "clinical1"), second=_scan(batch, bag, "clinical2", **override), tz=UTC))


def _count(model, *where) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def test_a_failed_result_after_the_conditional_release_blocks_the_bags_not_infused_and_alerts_the_clinic(app,
                                                                                                        demo_site):
    outcome = scenarios.conditional(act, demo_site, subject_code="NK-002", dose_level="DL4")
    batch = db.session.scalars(sa.select(Batch).where(Batch.lot == outcome.lot)).one()
    first, second = bags.of_batch(db.session, batch)
    assert batch.status == "conditionally_released"
    owed = results.of_batch(db.session, batch)
    [pending] = [p for p in owed if p.field_id == "result" and "14-day" in p.label]
    assert {p.status for p in owed} == {"pending"} and len(owed) == 2  # the 14-day culture and the preliminary read
    assert {d.result.id for d in results.due(db.session)} == {p.id for p in owed}
    assert pending.due_at == pending.sampled_at + timedelta(hours=336)  # sample time + the method's duration
    # a negative 14-day result cannot exist yet: refused, naming the earliest allowed time
    with pytest.raises(ValidationFailed, match=r"cannot exist before .* \(sampled .* \+ 336 h\)"):
        act("operator1", lambda s: results.enter_result(s, pending, raw="No growth", comment="", tz=UTC,
                                                        **_sign("operator1")))

    # the bedside check scans the bag itself: another bag's label is the identity hard stop
    not_of_this_batch = isbt128.PRODUCT_CODE_PREFIX + first.product_code[:6] + "C0"
    with pytest.raises(IdentityMismatch, match="Bag label"):
        _bedside(batch, first, scanned_bag=not_of_this_batch)
    event = _bedside(batch, first)
    assert event.bag_id == first.id
    with pytest.raises(ValidationFailed, match="was already infused"):
        _bedside(batch, first)
    # QA cannot reject or recall a conditionally released batch without the investigation
    with pytest.raises(ValidationFailed, match="place it under investigation first"):
        act("qa1", lambda s: review.decide(s, batch, decision="rejected", comment="x", **_sign("qa1")))

    # the culture flags growth: stored, flagged, needs a comment, protects patients at once
    with pytest.raises(ValidationFailed, match="needs a comment"):
        act("operator1", lambda s: results.enter_result(s, pending, raw="Growth", comment="", tz=UTC,
                                                        **_sign("operator1")))
    assert pending.status == "pending"
    act("operator1", lambda s: results.enter_result(s, pending, raw="Growth", comment="bottle flagged positive",
                                                    tz=UTC, **_sign("operator1")))
    assert (batch.status, pending.status, pending.in_limits) == ("under_investigation", "awaiting_verification",
                                                                   False)
    [critical] = [d for d in db.session.scalars(sa.select(Deviation).where(Deviation.batch_id == batch.id))
                  if d.origin == "result"]
    assert critical.classification == "critical"
    assert [b.bag_id for b in db.session.scalars(sa.select(BagBlock).where(BagBlock.batch_id == batch.id))] \
        == [second.id]
    [alert] = lifecycle.active_alerts(db.session)
    for fact in (batch.subject.code, batch.din, f"(bag {first.division}): INFUSED", f"(bag {second.division}): not "
                 "infused, BLOCKED", "Growth", critical.number):
        assert fact in alert.finding

    # the blocked bag at the bedside and at a hand-off: a hard stop, audited, with its deviation; nothing stored
    events_before = _count(CustodyEvent)
    with pytest.raises(ProductBlocked, match=f"BAG .*bag {second.division}.* IS BLOCKED"):
        _bedside(batch, second)
    with pytest.raises(ProductBlocked, match="IS BLOCKED"):
        act("operator1", lambda s: custody.hand_off(
            s, batch, scanned_din=isbt128.din_from_text(batch.din).barcode("00"), from_location="Ward",
            to_location="Lab", condition="sealed", tz=UTC, **_sign("operator1")))
    assert _count(CustodyEvent) == events_before
    stops = list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "product.blocked")))
    assert [(e.username, json.loads(e.after)["where"]) for e in stops] == [("clinical1", "bedside"),
                                                                           ("operator1", "hand-off")]
    assert _count(Deviation, Deviation.batch_id == batch.id, Deviation.origin == "product_stop") == 2

    # one clinical user acknowledges the alert for the clinic, with a signature; nobody else can
    with pytest.raises(PermissionDenied, match="acknowledging a product alert needs the clinical role"):
        act("operator1", lambda s: lifecycle.acknowledge(s, alert, **_sign("operator1")))
    act("clinical2", lambda s: lifecycle.acknowledge(s, alert, **_sign("clinical2")))
    assert lifecycle.active_alerts(db.session) == []
    assert [(s.username, s.meaning) for s in signatures.for_record(db.session, alert)] == [
        ("clinical2", "acknowledged")]
    with pytest.raises(InvalidTransition, match="already been acknowledged"):
        act("clinical1", lambda s: lifecycle.acknowledge(s, alert, **_sign("clinical1")))

    # no release of a batch whose result failed; QA rejects it (a reason, a signature)
    with pytest.raises(ValidationFailed, match="outside their specification"):
        act("qa1", lambda s: review.decide(s, batch, decision="released", comment="", **_sign("qa1")))
    with pytest.raises(ValidationFailed, match="needs a reason"):
        act("qa1", lambda s: review.decide(s, batch, decision="rejected", comment=" ", **_sign("qa1")))
    act("qa1", lambda s: review.decide(s, batch, decision="rejected", comment="sterility positive", **_sign("qa1")))
    assert batch.status == "rejected"
    assert signatures.check_all(db.session)[1] == []
    assert_audit_intact(db.session)
    with pytest.raises(sa.exc.DBAPIError, match=app_refusal(app, "DELETE", "bag_block")):  # guard, or grants
        db.session.execute(sa.delete(BagBlock))
    db.session.rollback()


def test_a_batch_started_by_mistake_is_cancelled_with_a_reason_and_leaves_the_work_queue(demo_site):
    subject = act("clinical1", lambda s: scenarios.demo_nk.seed_demo_subject(s, _user("clinical1"), DEMO_PASSWORD))
    batch = act("operator1", lambda s: starting.start_product_batch(s, subject=subject, user=_user("operator1")))
    assert batch in batch_pages.active_batches(db.session)
    with pytest.raises(PermissionDenied, match="cancelling a batch needs the operator or QA role"):
        act("clinical1", lambda s: lifecycle.cancel(s, batch, reason="x", **_sign("clinical1")))
    with pytest.raises(ValidationFailed, match="needs a reason"):
        act("operator1", lambda s: lifecycle.cancel(s, batch, reason="  ", **_sign("operator1")))
    act("operator1", lambda s: lifecycle.cancel(s, batch, reason="wrong collection date", **_sign("operator1")))
    assert batch.status == "cancelled" and batch not in batch_pages.active_batches(db.session)
    [decision] = review.decisions(db.session, batch)
    assert (decision.decision, decision.comment) == ("cancelled", "wrong collection date")
    assert [(s.username, s.meaning) for s in signatures.for_record(db.session, decision)] == [
        ("operator1", "cancelled")]
    with pytest.raises(ValidationFailed, match="only a batch with no step performed"):
        act("qa1", lambda s: lifecycle.cancel(s, batch, reason="again", **_sign("qa1")))


def test_the_bedside_check_needs_two_different_people_the_same_bag_and_the_role_after_the_password(demo_site):
    """The screen is shared: a wrong password for any name reads the same; the role is checked after it."""
    act("qa1", lambda s: accounts.create_user_at_setup(s, username="nina", full_name="Nina Nurse", roles="clinical",
                                                       password=DEMO_PASSWORD, policy=accounts.Policy()))
    outcome = scenarios.conditional(act, demo_site, subject_code="NK-002", dose_level="DL4")
    batch = db.session.scalars(sa.select(Batch).where(Batch.lot == outcome.lot)).one()
    first, second = bags.of_batch(db.session, batch)

    def check(one: str, two: str, bag_two=None, **override):
        return act(one, lambda s: custody.bedside_check(
            s, batch, first=_scan(batch, first, one), second=_scan(batch, bag_two or first, two, **override), tz=UTC))

    with pytest.raises(PermissionDenied, match="two different people"):
        check("clinical1", "clinical1")
    wrong_subject = isbt128.CoiId("X9999", 26, 4242).barcode()
    with pytest.raises(IdentityMismatch, match="Subject COI \\(person 2\\)"):
        check("clinical1", "nina", scanned_coi=wrong_subject)
    with pytest.raises(ValidationFailed, match="scanned different bags"):
        check("clinical1", "nina", bag_two=second)
    with pytest.raises(AuthenticationFailed, match="User name or password is not correct"):
        check("clinical1", "qa1", password="wrong-password")
    with pytest.raises(PermissionDenied, match="needs the operator or clinical role"):
        check("clinical1", "qa1")
    # issue 19: a password an administrator set signs nothing, even with the role in force (two-person rule off)
    act("qa1", lambda s: accounts.create_user(s, username="tara", full_name="Tara Temporary", roles="clinical",
                                              password=DEMO_PASSWORD, temporary=False,
                                              policy=accounts.Policy(two_person_grants=False)))
    with pytest.raises(PermissionDenied, match="set by an administrator"):
        check("clinical1", "tara")
    assert _count(CustodyEvent, CustodyEvent.kind == "bedside") == 0
    event = check("clinical1", "nina")
    assert [(s.username, s.meaning) for s in signatures.for_record(db.session, event)] == [
        ("clinical1", "performed"), ("nina", "verified")]
    assert (event.scanned_coi, event.bag_id) == (batch.subject.coi, first.id)
    assert signatures.check_all(db.session)[1] == []
