"""The identity hard stop, in one place: a scanned identifier must be the one the batch expects.

:func:`check` is the only function that decides whether a scan matches (a step's scan fields, every
hand-off, both people at the bedside). A malformed identifier is a misread (``ValidationFailed``, scan
again); a well-formed identifier of another bag or subject is an ``IdentityMismatch``: nothing of the action
is stored, and the unit of work (``mfg.unit_of_work``) records the event and opens its deviation
(``deviations.record_identity_mismatch``). There is no override.

DINs may be scanned (``=`` + DIN + flags) or typed with their check character; COI identifiers likewise.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..domain import isbt128
from ..domain.errors import IdentityMismatch, ValidationFailed
from ..models import Batch
from . import bags

# How a mismatch names what was expected, where the expected name alone would not say it.
_EXPECTED_NAMES = {"bag.product_code": "bags (product code and division)"}


def normalise(expected: str, scanned: str) -> str:
    """``scanned`` normalised as the batch stores what ``expected`` names; a misread raises ValidationFailed."""
    if expected == "batch.din":
        din = isbt128.parse_din_barcode(scanned)[0] if scanned.startswith(isbt128.DIN_PREFIX) \
            else isbt128.parse_din_keyboard(scanned)
        return din.text
    if expected == "subject.coi":
        return isbt128.parse_coi(scanned).text
    if expected == "bag.product_code":
        return bags.normalise_scan(scanned)
    return scanned


def expected_values(session: Session, batch: Batch, expected: str) -> set[str]:
    """What a scan of ``expected`` may match in this batch (empty when the batch has none)."""
    if expected == "batch.din":
        return {batch.din} if batch.din else set()
    if expected == "subject.coi":
        return {batch.subject.coi} if batch.subject else set()
    if expected == "batch.lot":
        return {batch.lot}
    if expected == "bag.product_code":
        return set(bags.expected_codes(session, batch))
    return set()


def subject_text(batch: Batch) -> str:
    """The subject a batch is for, as a stop names it: code and chain-of-identity identifier (as printed)."""
    if batch.subject is None:
        return "none (this batch is for no subject)"
    return f"{batch.subject.code}, COI {isbt128.parse_coi(isbt128.COI_PREFIX + batch.subject.coi).eye_readable()}"


def expected_text(session: Session, batch: Batch, expected: str) -> str:
    """What a scan of ``expected`` must read in this batch, as printed on its labels (the stop shows it)."""
    if expected == "batch.din" and batch.din:
        return f"DIN {isbt128.din_from_text(batch.din).eye_readable()} (batch {batch.lot})"
    if expected == "subject.coi" and batch.subject is not None:
        return f"COI {isbt128.parse_coi(isbt128.COI_PREFIX + batch.subject.coi).eye_readable()} " \
               f"(subject {batch.subject.code})"
    if expected == "batch.lot":
        return f"lot {batch.lot}"
    if expected == "bag.product_code":
        codes = bags.expected_codes(session, batch)
        return f"a bag of batch {batch.lot}: " + ", ".join(
            f"{code} (bag {bag.division})" for code, bag in codes.items())
    return f"the {_EXPECTED_NAMES.get(expected, expected)} of batch {batch.lot}"


def check(session: Session, batch: Batch, *, where: str, label: str, expected: str, scanned: str) -> str:
    """The scan, normalised, when it is what the batch expects; else a misread (ValidationFailed) or the
    hard stop (IdentityMismatch, naming ``where``: a step id, "hand-off", "bedside")."""
    raw = (scanned or "").strip()
    try:
        found = normalise(expected, raw)
    except ValidationFailed as exc:
        raise ValidationFailed(*(f"{label}: {problem}" for problem in exc.problems)) from None
    wanted = expected_values(session, batch, expected)
    if not wanted:
        raise ValidationFailed(f"{label}: batch {batch.lot} has no {expected} to check the scan against")
    if found not in wanted:
        raise IdentityMismatch(batch.id, where, label, _EXPECTED_NAMES.get(expected, expected), scanned,
                               expected=expected_text(session, batch, expected), subject=subject_text(batch))
    return found


def misread(expected: str, scanned: str) -> list[str]:
    """Why ``scanned`` cannot be an identifier of the kind ``expected`` names (a check character that does
    not match, a malformed code): the scan was misread, scan again. Empty when well formed. It says nothing
    about whether the scan matches the batch: that is decided on signing, by :func:`check`."""
    try:
        normalise(expected, (scanned or "").strip())
    except ValidationFailed as exc:
        return exc.problems
    return []
