"""Donor eligibility under NK-TRIAL v5 (issue [3.7] item 2): the configured panel, each test from a fresh specimen,
the donor's relationship to the subject, and the residual T-cell limit that applies to the product."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from mfg.config import RESOURCE_ROOT
from mfg.domain import values
from mfg.domain.errors import ValidationFailed
from mfg.domain.sop_schema import parse_definition, step_index
from mfg.models import AuditEntry, Donor, DonorTest
from mfg.services import clinical, evaluation, sops, starting
from tests.support import PASSWORD, eligible_enrolment, open_level

TODAY = date.today()


def _approve_all(session, sops_dir, make_user, *others):
    """Approve every definition in ``sops_dir``; the users (loader, approver and ``others``: (name, role)) are
    made first (each in a transaction of its own)."""
    loader, approver = session.merge(make_user("loader", "qa")), session.merge(make_user("approver", "qa"))
    users = [session.merge(make_user(name, role)) for name, role in others]
    for version in sops.load_directory(session, sops_dir, loader=loader).loaded:
        sops.approve(session, version, site_timezone="UTC",
                     signer=approver, password=PASSWORD, username=None, require_username=False)
    return users


@pytest.fixture
def v5(session, make_user, sops_dir):
    """NK-TRIAL v5 effective (alone, enough for the donor's rules); a clinical coordinator."""
    (sops_dir / "trial").mkdir()
    shutil.copy(RESOURCE_ROOT / "sops" / "trial" / "NK-TRIAL_v5.yaml", sops_dir / "trial")
    (clara,) = _approve_all(session, sops_dir, make_user, ("clara", "clinical"))
    session.commit()
    return clara


def _count(session, model) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(model))


def _panel(session, donor, clara, drawn, result="non-reactive", skip=()):
    for test in clinical.donor_panel(session):
        if test not in skip:
            clinical.record_donor_test(session, donor, test=test, result=result, specimen_date=drawn, user=clara)


def test_the_panel_is_the_configurations(session, v5):
    config = sops.trial_configuration(session)
    assert config.donor_eligibility is not None
    assert clinical.donor_panel(session) == tuple(config.donor_eligibility.panel)
    donor = clinical.register_donor(session, code="D-1", abo_rh="A+", relationship="matched_sibling", user=v5)
    with pytest.raises(ValidationFailed, match="Syphilis: choose the result"):
        clinical.record_donor_panel(session, donor, user=v5, specimen_date=TODAY, results={
            test: "negative" for test in config.donor_eligibility.panel if test != "Syphilis"})


def test_a_stale_test_is_refused_naming_it_nothing_is_stored_and_the_fresh_panel_is_accepted(session, v5):
    clara = v5
    donor = clinical.register_donor(session, code="D-1", abo_rh="A+", relationship="transplant_donor", user=clara)
    stale = TODAY - timedelta(days=31)
    _panel(session, donor, clara, stale)
    _panel(session, donor, clara, TODAY - timedelta(days=30), skip=("HBsAg",))  # 30 days: the oldest allowed
    session.commit()
    entries = _count(session, AuditEntry)
    with pytest.raises(ValidationFailed) as refused:
        clinical.determine_eligibility(session, donor, eligible=True, summary="screening complete", user=clara)
    assert refused.value.problems == [f"HBsAg: specimen of {stale.isoformat()} is 31 days old; the panel needs a "
                                      "specimen at most 30 days old"]
    session.rollback()
    assert donor.eligibility == "pending" and donor.determined_at is None and _count(session, AuditEntry) == entries
    # the page asks the same rule
    assert clinical.eligible_problems(session, donor) == refused.value.problems

    clinical.record_donor_test(session, donor, test="HBsAg", result="negative", specimen_date=TODAY, user=clara)
    clinical.determine_eligibility(session, donor, eligible=True, summary="screening complete", user=clara)
    session.commit()
    assert donor.eligibility == "eligible" and clinical.eligibility_problems(donor) == []
    assert session.scalar(sa.select(AuditEntry.reason).order_by(AuditEntry.seq.desc()).limit(1)) == \
        "donor eligibility determined"


def test_a_missing_or_reactive_test_blocks_naming_it(session, v5):
    clara = v5
    donor = clinical.register_donor(session, code="D-1", abo_rh="A+", relationship="transplant_donor", user=clara)
    _panel(session, donor, clara, TODAY - timedelta(days=2), skip=("anti-HBc", "WNV NAT"))
    clinical.record_donor_test(session, donor, test="WNV NAT", result="reactive", specimen_date=TODAY, user=clara)
    session.commit()
    with pytest.raises(ValidationFailed) as refused:
        clinical.determine_eligibility(session, donor, eligible=True, summary="screening complete", user=clara)
    assert [p.split(":")[0] for p in refused.value.problems] == ["anti-HBc", "WNV NAT"]
    assert refused.value.problems[0] == "anti-HBc: no result recorded"
    session.rollback()
    # "ineligible" needs no complete panel
    clinical.determine_eligibility(session, donor, eligible=False, summary="WNV NAT reactive", user=clara)
    assert donor.eligibility == "ineligible"


def test_the_relationship_is_required_and_one_of_the_configurations(session, v5):
    clara = v5
    for relationship, message in ((None, "Choose the donor's relationship to the subject: one of transplant_donor"),
                                  ("cousin", "'cousin' is not a donor relationship of the trial configuration: one "
                                             "of transplant_donor \\(Original transplant donor\\), matched_sibling")):
        with pytest.raises(ValidationFailed, match=message):
            clinical.register_donor(session, code="D-1", abo_rh="A+", relationship=relationship, user=clara)
        session.rollback()
    assert _count(session, Donor) == 0
    donor = clinical.register_donor(session, code="D-1", abo_rh="A+", relationship="haploidentical", user=clara)
    session.commit()
    assert donor.relationship == "haploidentical" and clinical.relationship_label(session, donor) == "Haploidentical"


def test_a_configuration_without_donor_rules_keeps_the_rules_of_before(session, make_user, sops_dir):
    (sops_dir / "trial").mkdir()
    shutil.copy(RESOURCE_ROOT / "sops" / "trial" / "NK-TRIAL_v4.yaml", sops_dir / "trial")
    (clara,) = _approve_all(session, sops_dir, make_user, ("clara", "clinical"))
    session.commit()
    with pytest.raises(ValidationFailed, match="lists no donor relationships"):
        clinical.register_donor(session, code="D-1", abo_rh="A+", relationship="haploidentical", user=clara)
    session.rollback()
    donor = clinical.register_donor(session, code="D-1", abo_rh="A+", user=clara)
    assert clinical.donor_panel(session) == clinical.DONOR_PANEL and clinical.donor_relationships(session) == []
    clinical.record_donor_test(session, donor, test="HBsAg", result="negative",
                               specimen_date=TODAY - timedelta(days=400), user=clara)
    clinical.determine_eligibility(session, donor, eligible=True, summary="as before", user=clara)
    assert donor.eligibility == "eligible" and _count(session, DonorTest) == 1


@pytest.fixture
def product(session, make_user, sops_dir):
    """Every NK master record and NK-TRIAL v5 effective; a coordinator and an operator."""
    shutil.copytree(RESOURCE_ROOT / "sops" / "nk", sops_dir / "nk")
    shutil.copytree(RESOURCE_ROOT / "sops" / "trial", sops_dir / "trial")
    users = _approve_all(session, sops_dir, make_user, ("clara", "clinical"), ("olivia", "operator"))
    session.commit()
    return users


def _batch(session, users, relationship):
    clara, olivia = users
    donor = clinical.register_donor(session, code=f"D-{relationship}", abo_rh="A+", relationship=relationship,
                                    user=clara)
    _panel(session, donor, clara, TODAY - timedelta(days=2))
    clinical.determine_eligibility(session, donor, eligible=True, summary="complete", user=clara)
    subject = clinical.enrol_subject(session, code=f"S-{relationship}", donor=donor, weight_kg="10",
                                     measured_on=TODAY, user=clara, **eligible_enrolment(session, TODAY))
    open_level(session, clara, "DL2")
    clinical.assign_dose_level(session, subject, level="DL2", signer=clara, password=PASSWORD, username=None,
                               require_username=False)
    return starting.start_product_batch(session, subject=subject, user=olivia)


def test_the_residual_t_cell_limit_is_the_one_of_the_donors_relationship(session, product):
    haplo, sibling = _batch(session, product, "haploidentical"), _batch(session, product, "matched_sibling")
    session.commit()
    limits = {name: evaluation.context_numbers(session, batch)["trial.cd3_limit_per_kg"]
              for name, batch in (("haplo", haplo), ("sibling", sibling))}
    assert limits == {"haplo": Decimal(100000), "sibling": Decimal(200000)}
    assert evaluation.cd3_limit_source(session, haplo) == "the limit for a donor of relationship Haploidentical"
    assert evaluation.cd3_limit_source(session, sibling) == "the trial's limit (HLA-matched sibling donor)"

    # NK-FORMULATE's dose plan (the version the batch pinned) judges 1.5 x 10^5 CD3+ cells/kg by the applied limit
    version = next(p.sop_version for p in haplo.master_records if p.sop_version.code == "NK-FORMULATE")
    record = parse_definition(version.content, "NK-FORMULATE")
    field = next(f for f in step_index(record)["dose_plan"][1].fields if f.id == "cd3_per_kg")
    assert field.refuse_outside_limits
    for batch, refused in ((haplo, True), (sibling, False)):
        numbers = evaluation.context_numbers(session, batch) | {
            "volume_ml": Decimal(10), "viable_concentration": Decimal(15), "cd3_pct": Decimal(1)}
        parsed = values.compute(field, numbers)  # 10 mL x 15 x 10^6/mL x 1 % / 10 kg
        assert parsed.number == Decimal(150000)
        assert bool(values.limit_problems(field, parsed, numbers)) is refused
