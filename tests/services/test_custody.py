"""Chain of custody hand-offs and the two-person bedside check."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from mfg.domain import isbt128
from mfg.domain.errors import AuthenticationFailed, IdentityMismatch, PermissionDenied, ValidationFailed
from mfg.models import CustodyEvent, Signature
from mfg.services import custody, signatures
from tests.support import PASSWORD

from .test_nk_batch import _open, nk  # noqa: F401 - the fixture


def _released(session, batch):
    """The precondition of the bedside check: QA's release is tested in test_review.py; here it is set."""
    batch.status = "released"
    session.commit()
    return batch


def _bag(batch):
    return isbt128.din_from_text(batch.din).barcode("00")


def _coi(subject):
    return isbt128.parse_coi(isbt128.COI_PREFIX + subject.coi).barcode()


def test_a_hand_off_records_who_when_where_and_condition(nk):  # noqa: F811
    session = nk["session"]
    batch = _open(nk)
    event = custody.hand_off(session, batch, scanned_din=_bag(batch), from_location="Cleanroom 2",
                             to_location="Courier", condition="sealed, 4 C", signer=nk["olivia"],
                             password=PASSWORD, username="olivia", require_username=True)
    session.commit()
    assert (event.kind, event.from_location, event.to_location) == ("handoff", "Cleanroom 2", "Courier")
    assert signatures.for_record(session, event)[0].meaning == "performed"


def test_a_hand_off_of_the_wrong_bag_is_a_hard_stop(nk):  # noqa: F811
    session = nk["session"]
    batch = _open(nk)
    other = isbt128.make_din("X9999", 26, 999999).barcode("00")
    with pytest.raises(IdentityMismatch, match="Bag DIN"):
        custody.hand_off(session, batch, scanned_din=other, from_location="a", to_location="b", condition="ok",
                         signer=nk["olivia"], password=PASSWORD, username="olivia", require_username=True)
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(CustodyEvent)) == 0


def _scan(user, username, batch, subject, **override):
    values = dict(user=user, username=username, password=PASSWORD, scanned_din=_bag(batch),
                  scanned_coi=_coi(subject))
    values.update(override)
    return custody.BedsideScan(**values)


def test_bedside_check_needs_two_different_people_and_matching_scans(nk, make_user):  # noqa: F811
    session = nk["session"]
    batch = _open(nk)
    subject, clara = nk["subject"], nk["clara"]
    with pytest.raises(ValidationFailed, match="only a product QA has released .* may be infused"):
        custody.bedside_check(session, batch, first=_scan(clara, "clara", batch, subject),
                              second=_scan(clara, "clara", batch, subject))
    session.rollback()
    _released(session, batch)
    nurse = session.merge(make_user("nina", "clinical"))
    clara, subject = nk["clara"], nk["subject"]
    with pytest.raises(PermissionDenied, match="two different people"):
        custody.bedside_check(session, batch, first=_scan(clara, "clara", batch, subject),
                              second=_scan(clara, "clara", batch, subject))
    wrong_subject = isbt128.CoiId("X9999", 26, 4242).barcode()
    with pytest.raises(IdentityMismatch, match="Subject COI \\(person 2\\)"):
        custody.bedside_check(session, batch, first=_scan(clara, "clara", batch, subject),
                              second=_scan(nurse, "nina", batch, subject, scanned_coi=wrong_subject))
    session.rollback()
    with pytest.raises(AuthenticationFailed):
        custody.bedside_check(session, batch, first=_scan(clara, "clara", batch, subject),
                              second=_scan(nurse, "nina", batch, subject, password="wrong-password"))
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(CustodyEvent)) == 0
    event = custody.bedside_check(session, batch, first=_scan(clara, "clara", batch, subject),
                                  second=_scan(nurse, "nina", batch, subject))
    session.commit()
    meanings = [(s.username, s.meaning) for s in signatures.for_record(session, event)]
    assert meanings == [("clara", "performed"), ("nina", "verified")]
    assert event.scanned_coi == subject.coi and signatures.check_all(session)[1] == []
    assert session.scalar(sa.select(sa.func.count()).select_from(Signature).where(
        Signature.record_type == "custody_event")) == 2


def test_a_bedside_signer_without_the_role_is_told_so_only_after_the_password(nk):  # noqa: F811
    """The screen is shared: a wrong password for any name reads the same; the role is checked after it."""
    session = nk["session"]
    batch = _released(session, _open(nk))
    clara, subject, approver = nk["clara"], nk["subject"], nk["approver"]
    with pytest.raises(AuthenticationFailed, match="User name or password is not correct"):
        custody.bedside_check(session, batch, first=_scan(clara, "clara", batch, subject),
                              second=_scan(approver, "approver", batch, subject, password="wrong-password"))
    session.rollback()
    with pytest.raises(AuthenticationFailed, match="User name or password is not correct"):
        signatures.signer_named(session, "nobody-here")
    with pytest.raises(PermissionDenied, match="needs the operator or clinical role"):
        custody.bedside_check(session, batch, first=_scan(clara, "clara", batch, subject),
                              second=_scan(approver, "approver", batch, subject))
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(CustodyEvent)) == 0
