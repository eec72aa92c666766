"""Demo accounts and master records for a DEMO instance (``flask --app mfg init --demo``).

Demo accounts share one documented password and are not asked to change it; real accounts are
created by an administrator with a temporary password. They are made through the set-up path
(``accounts.create_user_at_setup``): the demo password counts as each account's own (a password an
administrator sets signs nothing until its owner replaces it) and their roles count at once, as if a second
person had confirmed them (the two-person rule); no screen or command reaches that path. The demo master
records are loaded by one QA user and approved with a real e-signature by another, exactly as a site would
do it.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..models import SopVersion
from ..services import accounts, audit, sops
from . import nk_batch as demo_nk

DEMO_PASSWORD = "demo-pass-2026"
DEMO_USERS: tuple[tuple[str, str, str], ...] = (
    ("operator1", "Olivia Operator", "operator"),
    ("operator2", "Oscar Verifier", "operator"),
    ("qa1", "Quinn Quality", "qa"),
    ("qa2", "Quentin Reviewer", "qa"),
    ("clinical1", "Clara Coordinator", "clinical"),
    ("clinical2", "Chris Nurse", "clinical"),  # the second person of the bedside check
    ("admin1", "Adam Administrator", "admin"),
)
SOP_LOADER, SOP_APPROVER = "qa2", "qa1"


def seed_users(session: Session, policy: accounts.Policy) -> list[str]:
    """Create the demo accounts that do not exist yet; returns the names created."""
    created = []
    for username, full_name, roles in DEMO_USERS:
        if accounts.get_by_username(session, username) is None:
            audit.set_actor(session, name="init --demo")
            accounts.create_user_at_setup(session, username=username, full_name=full_name, roles=roles,
                                          password=DEMO_PASSWORD, policy=policy)
            created.append(username)
    return created


def seed_master_data(session: Session) -> list[str]:
    """Equipment and released material lots the demo processes can use (created once): the demo
    process's cabinets and buffer, and everything the effective NK master records name
    (``demo_nk.seed_nk_master_data``; load and approve the master records first)."""
    from datetime import date, timedelta

    from ..models import Equipment, MaterialLot
    from ..services import masterdata

    created = []
    audit.set_actor(session, accounts.get_by_username(session, SOP_APPROVER))
    today = date.today()
    for identifier, kind in (("BSC-01", "biosafety cabinet"), ("BSC-02", "biosafety cabinet")):
        if session.scalar(sa.select(Equipment).where(Equipment.identifier == identifier)) is None:
            masterdata.add_equipment(session, identifier=identifier, equipment_type=kind,
                                     calibration_due=today + timedelta(days=365), description="demo")
            created.append(identifier)
    for material, lot in (("Phosphate-buffered saline", "PBS-DEMO-1"), ("Phosphate-buffered saline", "PBS-DEMO-2")):
        if session.scalar(sa.select(MaterialLot).where(MaterialLot.material == material,
                                                       MaterialLot.lot_number == lot)) is None:
            masterdata.receive_lot(session, material=material, lot_number=lot,
                                   expiry=today + timedelta(days=365), qc_status="released")
            created.append(lot)
    created += demo_nk.seed_nk_master_data(session)
    return created


DEMO_CLINICAL = "clinical1"


DEMO_FIRST_COHORT = ("NK-011", "NK-012", "NK-013")
"""The demo's first cohort, at the start level (issue [3.7] item 8): enrolled and assigned, never manufactured."""


def seed_subjects(session: Session) -> list[str]:
    """The demo NK donor and subjects, doses signed by the demo clinical coordinator after the escalation decisions
    that open their levels (``demo_nk.seed_demo_subject``): under a configuration with an escalation design, a
    first cohort at the start level (:data:`DEMO_FIRST_COHORT`), then the demo subject NK-001 at DL2 in the
    second cohort. Nothing when the NK trial configuration is not effective or the demo subject exists. Returns
    what was created, for the command's output. The DLT and the decision that follows it are the ``cohorts``
    scenario's (``flask --app mfg demo-batch --scenario cohorts``): an infusion needs a manufactured batch."""
    from ..models import Subject
    from ..services import trial

    clinical_user = accounts.get_by_username(session, DEMO_CLINICAL)
    if clinical_user is None or sops.effective(session, "NK-TRIAL") is None:
        return []
    if session.scalar(sa.select(Subject.id).where(Subject.code == demo_nk.DEMO_SUBJECT)) is not None:
        return []
    made = []
    book = trial.ledger(session)
    if book is not None:
        for code in DEMO_FIRST_COHORT:
            made.append(demo_nk.seed_demo_subject(session, clinical_user, DEMO_PASSWORD, code=code,
                                                  dose_level=book.design.start_level))
    made.append(demo_nk.seed_demo_subject(session, clinical_user, DEMO_PASSWORD))
    return [f"{subject.code} ({subject.weight_kg.normalize():f} kg, {subject.dose_level}, donor {subject.donor.code})"
            for subject in made]


def seed_master_records(session: Session, sops_dir: Path, *, site_timezone: str) -> list[SopVersion]:
    """Load new definitions as the demo loader and approve each as the demo approver (``site_timezone``: the
    site's ``SITE_TIMEZONE``, which a trial configuration must state)."""
    loader = accounts.get_by_username(session, SOP_LOADER)
    approver = accounts.get_by_username(session, SOP_APPROVER)
    audit.set_actor(session, loader)
    assert loader is not None  # a demo user (seed_users)
    result = sops.load_directory(session, sops_dir, loader=loader)
    audit.set_actor(session, approver)
    for version in sorted(result.loaded, key=lambda v: (v.code, v.version)):
        assert approver is not None  # a demo user (seed_users)
        sops.approve(session, version, site_timezone=site_timezone,
                     signer=approver, password=DEMO_PASSWORD, username=approver.username,
                     require_username=True, comment="demo instance set-up")
    return result.loaded
