"""Chain of custody hand-offs and the two-person bedside check."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from mfg.domain import isbt128
from mfg.domain.errors import IdentityMismatch
from mfg.models import CustodyEvent
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


# The bedside check (two people, the bag, the subject) runs on a released NK batch with bags: tests/services/
# test_lifecycle.py.
