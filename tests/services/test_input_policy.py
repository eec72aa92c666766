"""The input policy in the services (issue 19, item 4): the command line and any other caller that skips the
web forms meets the same rules of mfg/domain/inputs.py. Each of the auditor's inputs, given to the service
straight, is refused with the rule's message and nothing reaches the database, on both databases."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from mfg.domain.errors import ValidationFailed
from mfg.models import MaterialLot
from mfg.models.base import Base
from mfg.services import accounts, clinical, masterdata
from tests.services.test_clinical import trial  # noqa: F401 - the fixture: trial configuration, clara, a donor
from tests.support import PASSWORD

TODAY = date.today()
LONG_AGO = date(1, 1, 1)

Call = Callable[[Session, dict], object]


def _subject(**changes: object) -> Call:
    def call(s: Session, t: dict) -> object:
        args = {"code": "S-09", "donor": t["donor"], "weight_kg": "62.4", "measured_on": TODAY, "user": t["clara"]}
        return clinical.enrol_subject(s, **(args | changes))
    return call


def _equipment(**changes: object) -> Call:
    def call(s: Session, t: dict) -> object:
        args = {"identifier": "BSC-09", "equipment_type": "Biosafety cabinet", "calibration_due": None}
        return masterdata.add_equipment(s, **(args | changes))
    return call


def _lot(**changes: object) -> Call:
    def call(s: Session, t: dict) -> object:
        return masterdata.receive_lot(s, **({"material": "IL-2", "lot_number": "IL2-9", "expiry": date(2030, 1, 1)}
                                            | changes))
    return call


def _lot_reason(reason: str) -> Call:
    def call(s: Session, t: dict) -> object:
        return masterdata.set_lot_status(s, s.scalars(sa.select(MaterialLot)).one(), qc_status="released",
                                         reason=reason)
    return call


CASES: dict[str, tuple[Call, str]] = {
    "donor code, Cyrillic O": (lambda s, t: clinical.register_donor(s, code="D-\u041e01", abo_rh="A+",
                                                                     user=t["clara"]), "CYRILLIC CAPITAL LETTER O"),
    "subject code, Cyrillic O": (_subject(code="NK-\u041e\u041e1"), "CYRILLIC CAPITAL LETTER O"),
    "weight 1E1": (_subject(weight_kg="1E1"), "exponent"),
    "weight, Arabic-Indic digits": (_subject(weight_kg="\u0666\u0662"), "digits 0-9"),
    "weight, full-width digits": (_subject(weight_kg="\uff16\uff12"), "digits 0-9"),
    "weighed in year 1": (_subject(measured_on=LONG_AGO), "implausibly early"),
    "specimen in year 1": (lambda s, t: clinical.record_donor_test(
        s, t["donor"], test="HBsAg", result="negative", specimen_date=LONG_AGO, user=t["clara"]), "implausibly early"),
    "test name with ESC": (lambda s, t: clinical.record_donor_test(
        s, t["donor"], test="HBs\x1bAg", result="negative", specimen_date=TODAY, user=t["clara"]), "control character"),
    "summary with an override": (lambda s, t: clinical.determine_eligibility(
        s, t["donor"], eligible=False, summary="tested \u202eevitisop", user=t["clara"]), "RIGHT-TO-LEFT OVERRIDE"),
    "equipment, zero-width look-alike": (_equipment(identifier="BSC\u200b-01"), "ZERO WIDTH SPACE"),
    "equipment with ESC": (_equipment(identifier="BSC\x1b01"), "control character"),
    "calibration in year 1": (_equipment(calibration_due=LONG_AGO), "implausibly early"),
    "lot number with ESC": (_lot(lot_number="IL2\x1b9"), "control character"),
    "expiry in year 1": (_lot(expiry=LONG_AGO), "implausibly early"),
    "a 1 MB reason": (_lot_reason("x" * 1_000_000), "at most 500 are allowed"),
    "reason with NUL": (_lot_reason("released\x00"), "control character"),
    "user name, Cyrillic a": (lambda s, t: accounts.create_user(
        s, username="q\u04301", full_name="Q A", roles="qa", password=PASSWORD, policy=accounts.Policy()),
                              "CYRILLIC SMALL LETTER A"),
    "printed name with an isolate": (lambda s, t: accounts.create_user(
        s, username="qa9", full_name="Q \u2067A", roles="qa", password=PASSWORD, policy=accounts.Policy()),
                                     "RIGHT-TO-LEFT ISOLATE"),
}


def _counts(session: Session) -> dict[str, int]:
    return {table.name: session.scalar(sa.select(sa.func.count()).select_from(table))
            for table in Base.metadata.sorted_tables}


def test_the_services_refuse_what_the_policy_refuses(session, trial) -> None:  # noqa: F811
    """Every case on one set of records (its set-up is the slow part), each rolled back before the next."""
    masterdata.receive_lot(session, material="IL-2", lot_number="IL2-1", expiry=date(2030, 1, 1))
    session.commit()
    before = _counts(session)
    for case, (call, words) in CASES.items():
        with pytest.raises(ValidationFailed) as refused:
            call(session, trial)
            session.flush()
        assert words in " ".join(refused.value.problems), case
        session.rollback()
        assert _counts(session) == before, case
