"""An NK batch: opened for a subject, the collection bag's DIN and the subject's COI scanned at intake."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from mfg.config import RESOURCE_ROOT
from mfg.demo.nk_batch import eligible_screening
from mfg.domain import isbt128
from mfg.domain.errors import IdentityMismatch, ValidationFailed
from mfg.models import AuditEntry, StepExecution, utcnow
from mfg.services import clinical, evaluation, sops, starting, steps
from tests.support import PASSWORD, open_level

UTC = ZoneInfo("UTC")


@pytest.fixture
def nk(session, make_user, sops_dir):
    shutil.copytree(RESOURCE_ROOT / "sops" / "nk", sops_dir / "nk")
    shutil.copytree(RESOURCE_ROOT / "sops" / "trial", sops_dir / "trial")
    loader, approver = session.merge(make_user("loader", "qa")), session.merge(make_user("approver", "qa"))
    clara = session.merge(make_user("clara", "clinical"))
    olivia = session.merge(make_user("olivia", "operator"))
    for version in sops.load_directory(session, sops_dir, loader=loader).loaded:
        sops.approve(session, version, site_timezone="UTC",
                     signer=approver, password=PASSWORD, username=None, require_username=False)
    donor = clinical.register_donor(session, code="D-001", abo_rh="A+", relationship="transplant_donor", user=clara)
    clinical.record_donor_panel(session, donor,
                                results={test: "non-reactive" for test in clinical.donor_panel(session)},
                                specimen_date=date.today() - timedelta(days=2), user=clara)
    subject = clinical.enrol_subject(
        session, code="S-01", donor=donor, weight_kg="62.4", measured_on=date.today(), user=clara,
        screening=eligible_screening(sops.trial_configuration(session).subject_eligibility, date.today()),
        password=PASSWORD, username=None, require_username=False)
    session.commit()
    return {"session": session, "clara": clara, "olivia": olivia, "donor": donor, "subject": subject,
            "approver": approver}


def _sign_dose(nk):
    open_level(nk["session"], nk["clara"], "DL2")
    clinical.assign_dose_level(nk["session"], nk["subject"], level="DL2", signer=nk["clara"], password=PASSWORD,
                               username=None, require_username=False)


def test_an_nk_batch_needs_an_eligible_donor_and_a_signed_dose(nk):
    session = nk["session"]
    with pytest.raises(ValidationFailed) as info:
        starting.start_product_batch(session, subject=nk["subject"], user=nk["olivia"])
    assert any("not determined eligible" in p for p in info.value.problems)
    assert any("no signed dose level" in p for p in info.value.problems)


def _open(nk):
    session = nk["session"]
    clinical.determine_eligibility(session, nk["donor"], eligible=True, summary="complete", user=nk["clara"])
    _sign_dose(nk)
    batch = starting.start_product_batch(session, subject=nk["subject"], user=nk["olivia"])
    session.commit()
    return batch


def _identify(nk, batch, bag, coi):
    return steps.perform_step(
        nk["session"], batch, position=0, step_id="identify_bag", instance=1,
        entry=evaluation.StepInput(raw={"bag_din": bag, "subject_coi": coi, "donor_code": "D-001",
                                     "product_name": "Apheresis", "collection_facility": "Site A",
                                     "collection_end": (utcnow() - timedelta(hours=3)).strftime("%Y-%m-%d %H:%M")}),
        signer=nk["olivia"], password=PASSWORD, username=None, require_username=False, tz=UTC)


def test_the_batch_inherits_an_allocated_din_and_the_subject_coi(nk):
    batch = _open(nk)
    din = isbt128.din_from_text(batch.din)
    assert din.fin == "X9999" and batch.lot == batch.din and batch.subject.coi == nk["subject"].coi
    # as NK-TRIAL v3 names them: the release record tests the final product, after the formulation's fill
    assert [pin.sop_version.code for pin in batch.master_records] == [
        "NK-INTAKE", "NK-EXPAND", "NK-FORMULATE", "NK-RELEASE"]  # as the trial configuration names them
    assert [pin.sop_version.version for pin in batch.master_records] == [1, 2, 5, 4]  # the effective versions
    # every context name a definition may use has its value for this batch (domain.context, declared once)
    from mfg.domain.context import CONTEXT_NAMES
    from mfg.services import evaluation

    found = evaluation.context_numbers(nk["session"], batch)
    assert set(found) == CONTEXT_NAMES and all(value is not None for value in found.values())


def test_a_trial_configuration_that_names_no_product_records_opens_no_batch(nk, sops_dir, make_user):
    """The product's master records come from the trial configuration, not from code: a new version that
    names none, approved, opens no batch."""
    session = nk["session"]
    text = (sops_dir / "trial" / "NK-TRIAL_v5.yaml").read_text().replace("version: 5\n", "version: 6\n")
    (sops_dir / "trial" / "NK-TRIAL_v6.yaml").write_text(
        text.replace("product_master_records: [NK-INTAKE, NK-EXPAND, NK-FORMULATE, NK-RELEASE]\n", ""))
    version = sops.load_directory(session, sops_dir, loader=session.merge(make_user("lou", "qa"))).loaded[0]
    sops.approve(session, version, site_timezone="UTC",
                 signer=nk["approver"], password=PASSWORD, username=None, require_username=False)
    session.commit()
    with pytest.raises(ValidationFailed, match="NK-TRIAL v6 names no master records for the product"):
        _open(nk)


@pytest.mark.parametrize("form", ["barcode", "keyboard"])
def test_intake_accepts_the_right_bag_scanned_or_typed(nk, form):
    batch = _open(nk)
    din = isbt128.din_from_text(batch.din)
    bag = din.barcode("00") if form == "barcode" else din.keyboard
    coi = isbt128.parse_coi(isbt128.COI_PREFIX + nk["subject"].coi)
    ex = _identify(nk, batch, bag, coi.barcode())
    nk["session"].commit()
    assert ex.status == "awaiting_verification"


def test_a_wrong_bag_or_wrong_subject_is_a_hard_stop(nk):
    session = nk["session"]
    batch = _open(nk)
    other = clinical.allocate_din(session, "X9999")  # a real DIN, of another collection
    coi = isbt128.parse_coi(isbt128.COI_PREFIX + nk["subject"].coi).barcode()
    with pytest.raises(IdentityMismatch, match="Bag DIN"):
        _identify(nk, batch, other.barcode(), coi)
    session.rollback()
    wrong_coi = isbt128.CoiId("X9999", 26, 999).barcode()
    with pytest.raises(IdentityMismatch, match="Subject COI"):
        _identify(nk, batch, isbt128.din_from_text(batch.din).barcode(), wrong_coi)
    session.rollback()
    with pytest.raises(ValidationFailed, match="check character"):  # a misread is refused, not a mismatch
        _identify(nk, batch, batch.din + "Z", coi)
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(StepExecution)) == 0


def test_calculations_get_the_subject_and_trial_context(nk, session):
    batch = _open(nk)
    numbers = evaluation.context_numbers(session, batch)
    assert numbers["subject.weight_kg"] == Decimal("62.4") and numbers["subject.dose_per_kg"] == 3_000_000
    assert numbers["trial.cd3_limit_per_kg"] == 200_000 and str(numbers["trial.max_bag_volume_ml"]) == "100.0"
    assert session.scalar(sa.select(AuditEntry).where(AuditEntry.reason == "batch opened for subject S-01"))
