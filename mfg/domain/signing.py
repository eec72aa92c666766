"""E-signature meanings and who may sign with each (21 CFR 11.50, 11.100, 11.200)."""

from __future__ import annotations

from enum import Enum


class Meaning(str, Enum):
    PERFORMED = "performed"
    VERIFIED = "verified"
    REVIEWED = "reviewed"
    APPROVED = "approved"
    RELEASED = "released"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    INVESTIGATION = "under_investigation"
    RECALLED = "recalled"
    ACKNOWLEDGED = "acknowledged"

    @property
    def label(self) -> str:
        return MEANING_LABELS[self]


MEANING_LABELS = {
    Meaning.PERFORMED: "Performed by",
    Meaning.VERIFIED: "Verified by",
    Meaning.REVIEWED: "Reviewed by",
    Meaning.APPROVED: "Approved by",
    Meaning.RELEASED: "Released by",
    Meaning.REJECTED: "Rejected by",
    Meaning.CANCELLED: "Cancelled by",
    Meaning.INVESTIGATION: "Placed under investigation by",
    Meaning.RECALLED: "Recalled by",
    Meaning.ACKNOWLEDGED: "Acknowledged by",
}

# The roles that may sign with each meaning. Administrators sign nothing (SPEC: who uses it). A
# clinical coordinator approves clinical records (a subject's dose level); each service that takes a
# signature also checks the role its own record needs (only QA approves a master record).
ROLE_FOR_MEANING: dict[Meaning, tuple[str, ...]] = {
    Meaning.PERFORMED: ("operator", "clinical"),  # clinical: hand-offs and the bedside check
    Meaning.VERIFIED: ("operator", "clinical"),
    Meaning.REVIEWED: ("qa",),
    Meaning.APPROVED: ("qa", "clinical"),
    Meaning.RELEASED: ("qa",),
    Meaning.REJECTED: ("qa",),
    Meaning.CANCELLED: ("operator", "qa"),  # a batch started by mistake
    Meaning.INVESTIGATION: ("qa",),
    Meaning.RECALLED: ("qa",),
    Meaning.ACKNOWLEDGED: ("clinical",),  # the clinic acknowledges a product alert
}


def manifestation(printed_name: str, signed_at_iso: str, meaning: Meaning) -> str:
    """The human-readable form of a signature, as screens and printouts show it (11.50)."""
    return f"{meaning.label} {printed_name}, {signed_at_iso} UTC"
