"""The NK demo data set: master data, the demo subject, and one NK batch driven through the real services
with real signatures (mfg/demo/nk_batch.py), its numbers checked against DOMAIN.md section 10 by hand."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from mfg.config import RESOURCE_ROOT
from mfg.demo import nk_batch as demo_nk
from mfg.demo import seed as demo
from mfg.domain.sop_schema import parse_definition, step_index
from mfg.extensions import db
from mfg.models import Batch, Donor, Equipment, MaterialLot, RecordedValue, StepExecution, Subject, utcnow
from mfg.services import accounts, audit, batches, deviations, masterdata, signatures, sops
from tests.support import PASSWORD, assert_audit_intact

UTC = ZoneInfo("UTC")
NK_FILES = sorted((RESOURCE_ROOT / "sops" / "nk").glob("*.yaml"))


def _named_in_files() -> tuple[set[str], set[str]]:
    """Equipment types and materials the NK master record files name, read straight from the files."""
    types, materials = set(), set()
    for path in NK_FILES:
        record = parse_definition(path.read_text(encoding="utf-8"), path.name)
        for _stage, step in step_index(record).values():
            types |= {f.equipment_type for f in step.fields if f.type == "equipment"}
            materials |= {f.material for f in step.fields if f.type == "material"}
    return types, materials


@pytest.fixture
def nk_demo(session, make_user, sops_dir):
    """The NK master records and trial configuration approved; a clinical coordinator and two operators."""
    shutil.copytree(RESOURCE_ROOT / "sops" / "nk", sops_dir / "nk")
    shutil.copytree(RESOURCE_ROOT / "sops" / "trial", sops_dir / "trial")
    loader, approver = session.merge(make_user("loader", "qa")), session.merge(make_user("approver", "qa"))
    users = {name: session.merge(make_user(name, role))
             for name, role in (("clara", "clinical"), ("olivia", "operator"), ("oscar", "operator"))}
    for version in sops.load_directory(session, sops_dir, loader=loader).loaded:
        sops.approve(session, version, site_timezone="UTC",
                     signer=approver, password=PASSWORD, username=None, require_username=False)
    session.commit()
    return users


def _usable_equipment(session, equipment_type):
    found = session.scalars(sa.select(Equipment).where(Equipment.equipment_type == equipment_type))
    return [e.identifier for e in found
            if not masterdata.equipment_problems(session, e.identifier, equipment_type, date.today())]


def _usable_lots(session, material):
    return [lot.lot_number for lot in session.scalars(sa.select(MaterialLot).where(MaterialLot.material == material))
            if not masterdata.lot_problems(session, material, lot.lot_number, date.today())]


def _counts(session):
    return (session.scalar(sa.select(sa.func.count()).select_from(Equipment)),
            session.scalar(sa.select(sa.func.count()).select_from(MaterialLot)))


def test_demo_values_cover_every_step_of_the_nk_records_and_only_their_fields():
    steps = {}
    for path in NK_FILES:
        record = parse_definition(path.read_text(encoding="utf-8"), path.name)
        steps |= {(record.code, step_id): step for step_id, (_stage, step) in step_index(record).items()}
    assert set(demo_nk.DEMO_VALUES) == set(steps)
    for key, entries in demo_nk.DEMO_VALUES.items():
        fields = {f.id: f for f in steps[key].fields}
        for entry in entries:
            assert set(entry) <= set(fields), key
            assert not [f for f in entry if fields[f].type == "calculated"], key
    assert len(demo_nk.DEMO_VALUES[("NK-EXPAND", "feed")]) == 5  # days 3, 5, 7, 9 and 11
    assert len(demo_nk.DEMO_VALUES[("NK-EXPAND", "in_process_count")]) == 1  # day 7


def test_master_data_seeding_covers_every_type_and_material_the_nk_records_name_once(nk_demo, session):
    types, materials = _named_in_files()
    assert {"biosafety cabinet", "cell counter", "CliniMACS Prodigy"} <= types and "Interleukin-2 (IL-2)" in materials
    named_types, named_materials = demo_nk.named_master_data(session)
    assert (set(named_types), set(named_materials)) == (types, materials)

    created = demo.seed_master_data(session)  # the demo process's cabinets and PBS, then the NK master data
    session.commit()
    assert created[:4] == ["BSC-01", "BSC-02", "PBS-DEMO-1", "PBS-DEMO-2"]
    assert "CNT-01" in created and "INTERLEUKIN-2-IL-2-DEMO-2" in created
    for equipment_type in types:
        assert len(_usable_equipment(session, equipment_type)) == 2, equipment_type
    for material in materials:
        assert len(_usable_lots(session, material)) == 2, material
    assert sorted(_usable_equipment(session, "biosafety cabinet")) == ["BSC-01", "BSC-02"]
    assert session.get(Equipment, session.scalar(sa.select(Equipment.id).where(Equipment.identifier == "PRODIGY-02"))) \
        .calibration_due == date.today() + timedelta(days=365)

    before = _counts(session)
    assert demo_nk.seed_nk_master_data(session) == [] and demo.seed_master_data(session) == []
    assert _counts(session) == before
    assert demo_nk.seed_nk_master_data(session, ["NO-SUCH-RECORD"]) == []


def test_the_demo_subject_is_eligible_with_a_signed_dose_and_seeding_again_changes_nothing(nk_demo, session):
    clara = nk_demo["clara"]
    subject = demo_nk.seed_demo_subject(session, clara, PASSWORD)
    session.commit()
    assert (subject.code, subject.weight_kg, subject.dose_level, subject.dose_cells_per_kg) == \
        ("NK-001", Decimal("62.40"), "DL2", 3_000_000)
    assert [s.username for s in signatures.for_record(session, subject)] == ["clara"]
    donor = subject.donor
    assert donor.eligibility == "eligible" and donor.abo_rh == "A+"
    assert len(donor.tests) == len(demo_nk.DONOR_TESTS) >= 9
    for test in donor.tests:
        assert test.result in ("negative", "non-reactive")
        # 21 CFR 1271.80: within the 7 days before the demo batch's collection (about 14.5 days ago)
        collected = (utcnow() - timedelta(minutes=demo_nk.COLLECTION_ENDED)).date()
        assert collected - timedelta(days=7) <= test.specimen_date <= collected

    again = demo_nk.seed_demo_subject(session, clara, PASSWORD)
    session.commit()
    assert again.id == subject.id and len(signatures.for_record(session, subject)) == 1
    assert session.scalar(sa.select(sa.func.count()).select_from(Donor)) == 1
    assert session.scalar(sa.select(sa.func.count()).select_from(Subject)) == 1
    assert len(again.donor.tests) == len(demo_nk.DONOR_TESTS)


def _value(session, batch, code, step_id, field_id, instance=1) -> RecordedValue:
    pin = next(p for p in batch.master_records if p.sop_version.code == code)
    execution = batches.find_execution(session, batch, pin.position, step_id, instance)
    assert execution is not None, (code, step_id, instance)
    return execution.current_values()[field_id]


def _text(session, batch, code, step_id, field_id, instance=1) -> str:
    return _value(session, batch, code, step_id, field_id, instance).text


def _assert_clean(session, batch, performer, verifier):
    """No deviation, every value within limits, every step complete, signed by the right people."""
    assert deviations.of_batch(session, batch) == []
    values = list(session.scalars(
        sa.select(RecordedValue).join(StepExecution).where(StepExecution.batch_id == batch.id)))
    assert values and [(v.field_id, v.limit_message) for v in values if not v.in_limits] == []
    for execution in batches.executions(session, batch):
        assert execution.status == "complete", execution.step_id
        signed = [(s.username, s.meaning) for s in signatures.for_record(session, execution)]
        assert signed[0] == (performer, "performed")
        assert signed[1:] in ([], [(verifier, "verified")])
    assert signatures.check_all(session)[1] == []
    assert_audit_intact(session)


def test_the_demo_batch_runs_to_labelling_without_a_deviation_and_with_the_domain_numbers(nk_demo, session):
    demo.seed_master_data(session)
    subject = demo_nk.seed_demo_subject(session, nk_demo["clara"], PASSWORD)
    session.commit()
    batch = demo_nk.run_nk_batch(session, subject=subject, performer=nk_demo["olivia"], verifier=nk_demo["oscar"],
                                 password=PASSWORD, tz=UTC, until=("NK-FORMULATE", "print_labels"))
    session.commit()
    _assert_clean(session, batch, "olivia", "oscar")
    assert batch.status == "in_progress"
    assert ("print_labels", 1) in [(o.ref.step_id, o.instance) for o in batches.open_steps(session, batch)]
    assert not [ex for ex in batches.executions(session, batch) if ex.step_id in ("print_labels", "scan_back")]
    # NK-TRIAL v3: NK-FORMULATE before NK-RELEASE, whose final-product samples are drawn after the fill
    assert [pin.sop_version.code for pin in batch.master_records][2:] == ["NK-FORMULATE", "NK-RELEASE"]
    assert not [ex for ex in batches.executions(session, batch) if ex.step_id == "sterility"]
    demo_nk.continue_nk_batch(session, batch, performer=nk_demo["olivia"], verifier=nk_demo["oscar"],
                              password=PASSWORD, tz=UTC)
    session.commit()
    _assert_clean(session, batch, "olivia", "oscar")
    assert batch.status == "awaiting_review"
    verified = {ex.step_id for ex in batches.executions(session, batch) if ex.verified_signature_id}
    assert {"identify_bag", "accept_material", "selection_input", "harvest_culture", "hla_identity",
            "dose_plan", "pre_wash_sampling", "in_process_tests", "mycoplasma", "dose_limits"} <= verified

    def text(code, step_id, field_id, instance=1):
        return _text(session, batch, code, step_id, field_id, instance)

    def number(code, step_id, field_id, instance=1):
        return Decimal(text(code, step_id, field_id, instance))

    # Intake: 185 mL at 113.5 x 10^6/mL = 20997.5 -> 20998 x 10^6 nucleated cells (2.1 x 10^10).
    assert text("NK-INTAKE", "intake_counts", "tnc_total") == "20998"
    # Viable NK cells: 20998 x 98 % x 11 % = 2263.58 -> 2264 x 10^6 (2.1e10 x 11 % = 2310 without viability).
    assert text("NK-INTAKE", "intake_counts", "nk_cells_total") == "2264"
    assert text("NK-INTAKE", "transport_receipt", "transport_temperature") == "4.5"
    # Selection: 80 of the 185 mL processed: 2264 x 80 / 185 = 979.03 -> 979 x 10^6 NK cells put in;
    # 20.0 mL x 10.44 = 208.8 -> 209 x 10^6 viable x 91 % = 190.19 -> 190 x 10^6 NK (1.9 x 10^8);
    # recovery 190 / 979 = 19.41 % -> 19.4 % (the whole collection would give 190 / 2264 = 8.4 %, below 15 %).
    assert text("NK-EXPAND", "selection_input", "input_nk_cells") == "979"
    assert text("NK-EXPAND", "post_selection_count", "nk_cells") == "190"
    assert text("NK-EXPAND", "post_selection_count", "recovery") == "19.4"
    assert text("NK-EXPAND", "post_selection_count", "cd3_pct") == "0.40"
    assert text("NK-EXPAND", "culture_initiation", "seeded_nk_cells") == "190"
    # Feeds on days 3, 5, 7, 9, 11 with IL-2; the day 7 count: 400 mL x 6.50 = 2600 x 10^6 viable,
    # 2600 / 190 = 13.68 -> 13.7-fold. NK-EXPAND v2 calculates the culture days from the recorded times.
    assert [text("NK-EXPAND", "feed", "culture_day", n) for n in range(1, 6)] == ["3.0", "5.0", "7.0", "9.0", "11.0"]
    assert text("NK-EXPAND", "in_process_count", "culture_day") == "7.0"  # 7 days 30 min after seeding
    assert text("NK-EXPAND", "harvest_culture", "culture_day") == "14.0"
    assert all(text("NK-EXPAND", "feed", "il2_lot", n) for n in range(1, 6))
    assert text("NK-EXPAND", "in_process_count", "viable_cells") == "2600"
    assert text("NK-EXPAND", "in_process_count", "viable_fold") == "13.7"
    # Harvest day 14: 250.0 mL x 54.00 = 13500 x 10^6 viable (1.35 x 10^10) at 93 %; NK 13500 x 93 % = 12555;
    # fold expansion NK harvested / NK seeded = 12555 / 190 = 66.08 -> 66.1 (DOMAIN's "about 71" is
    # viable cells / NK seeded: 13500 / 190 = 71.05).
    assert (text("NK-EXPAND", "harvest_culture", "viable_cells"), text("NK-EXPAND", "harvest_culture", "nk_cells"),
            text("NK-EXPAND", "harvest_culture", "fold_expansion")) == ("13500", "12555", "66.1")
    assert round(Decimal(13500) / 190, 2) == Decimal("71.05")
    # Formulation (NK-FORMULATE v3) at 15 x 10^6 viable/mL with the pre-wash in-process results (93 % NK,
    # 0.25 % CD3+, 0.20 EU/mL); 62.4 kg x 3 x 10^6/kg = 187.2 x 10^6 NK cells;
    # 1.872e8 / (1.5e7 x 0.93) = 13.42 -> 13.4 mL; 13.4 x 1.5e7 x 0.0025 / 62.4 = 8052.9 -> 8053 CD3+/kg
    # (8.1 x 10^3); 13.4 x 0.20 / 62.4 = 0.0429 -> 0.043 EU/kg; 13.4 mL in one bag (at most 100 mL each).
    plan = {f: text("NK-FORMULATE", "dose_plan", f) for f in ("weight_kg", "dose_per_kg", "target_nk_cells",
                                                              "volume_ml", "cd3_per_kg", "endotoxin_per_kg")}
    assert plan == {"weight_kg": "62.40", "dose_per_kg": "3000000", "target_nk_cells": "187.2", "volume_ml": "13.4",
                    "cd3_per_kg": "8053", "endotoxin_per_kg": "0.043"}
    # Release of the final product (NK-SPEC v2), sterility and its preliminary read pending.
    assert [text("NK-RELEASE", step, field) for step, field in (
        ("cell_count", "viability"), ("flow_cytometry", "nk_purity"), ("flow_cytometry", "cd3_pct"),
        ("endotoxin", "endotoxin_eu_per_ml"), ("mycoplasma", "result"), ("gram_stain", "result"),
        ("potency", "lysis_pct"), ("hla_identity", "result"), ("sterility", "result"),
        ("sterility_preliminary", "result"))] == \
        ["92.0", "93.0", "0.25", "0.12", "Not detected", "No organisms seen", "48.0", "Matches donor", "Pending",
         "Pending"]
    # The 13.4 mL filled at 15 x 10^6/mL and 93 % NK: 13.4 x 1.5e7 x 0.93 / 62.4 = 2 995 673 NK/kg, 99.9 % of
    # 3 x 10^6/kg; 13.4 x 1.5e7 x 0.0025 / 62.4 = 8053 CD3+/kg; 13.4 x 0.12 / 62.4 = 0.026 EU/kg.
    assert [text("NK-RELEASE", "dose_limits", f) for f in (
        "filled_volume_ml", "delivered_nk_per_kg", "dose_pct", "cd3_per_kg", "endotoxin_per_kg")] == \
        ["13.4", "2995673", "99.9", "8053", "0.026"]
    assert round(number("NK-FORMULATE", "dose_plan", "cd3_per_kg") / 1000, 1) == Decimal("8.1")
    assert text("NK-FORMULATE", "bag_preparation", "bag_count") == "1"

    # Date-times: all in the past, in process order, collection to receipt 3 h 35 min, inside the hold time;
    # the culture takes its real 14 days (seeding to harvest), ending before now.
    def moment(code, step_id, field_id, instance=1):
        return _value(session, batch, code, step_id, field_id, instance).moment

    timeline = [moment("NK-INTAKE", "identify_bag", "collection_end"),
                moment("NK-INTAKE", "transport_receipt", "received_at"),
                moment("NK-EXPAND", "cd3_depletion", "started_at"),
                moment("NK-EXPAND", "culture_initiation", "seeded_at"),
                *(moment("NK-EXPAND", "feed", "fed_at", n) for n in (1, 2, 3)),
                moment("NK-EXPAND", "in_process_count", "counted_at"),
                *(moment("NK-EXPAND", "feed", "fed_at", n) for n in (4, 5)),
                moment("NK-EXPAND", "harvest_culture", "harvested_at"),
                moment("NK-FORMULATE", "pre_wash_sampling", "sampled_at"),
                moment("NK-FORMULATE", "formulate", "formulated_at"),
                moment("NK-RELEASE", "sampling", "sampled_at"),
                moment("NK-RELEASE", "sterility", "inoculated_at")]
    assert timeline == sorted(timeline) and len(set(timeline)) == len(timeline) and timeline[-1] < utcnow()
    assert timeline[1] - timeline[0] == timedelta(hours=3, minutes=35)
    assert timeline[2] - timeline[0] < timedelta(hours=12)  # processing started within the hold time
    assert timeline[-5] - timeline[3] == timedelta(days=14)  # seeded (day 0) to harvest (day 14)
    assert timedelta(days=14) < utcnow() - timeline[0] < timedelta(days=16)
    assert moment("NK-EXPAND", "selection_input", "collection_end") == timeline[0]
    assert moment("NK-RELEASE", "mycoplasma", "sampled_at") == moment("NK-FORMULATE", "pre_wash_sampling", "sampled_at")
    # every result entered can exist: its sample time plus its method's minimum lies before it was entered
    from mfg.domain import result_time

    for code in ("NK-FORMULATE", "NK-RELEASE"):
        record = next(r for r in batches.records(batch) if r.code == code)
        for step_id, (_stage, step) in step_index(record).items():
            for f in step.fields:
                timed = getattr(f, "result_time", None)
                if timed is None:
                    continue
                sample_step, _, sample_field = timed.sample.rpartition(".")
                recorded = _value(session, batch, code, step_id, f.id)
                sampled = moment(code, sample_step or step_id, sample_field)
                if recorded.text == "Pending":
                    assert result_time.earliest(timed, sampled) > utcnow(), (step_id, f.id)  # cannot exist yet
                else:
                    assert result_time.earliest(timed, sampled) <= recorded.entered_at, (step_id, f.id)


def test_a_fresh_demo_instance_has_everything_and_runs_the_whole_demo_batch(app, session):
    """``flask --app mfg init --demo`` with the project's master records, then the complete NK batch by the
    demo operators: every step signed, one bag, no deviation, awaiting QA review."""
    app.config["SOPS_DIR"] = str(RESOURCE_ROOT / "sops")
    runner = app.test_cli_runner()
    first = runner.invoke(args=["init", "--demo"])
    assert first.exit_code == 0, first.output
    assert "loaded and approved NK-FORMULATE v1" in first.output and "CNT-01" in first.output
    # the first cohort at the start level, then the demo subject in the second (issue [3.7] item 8)
    assert ("created demo subject: NK-011 (62.4 kg, DL1, donor NK-DONOR-001), NK-012 (62.4 kg, DL1, donor "
            "NK-DONOR-001), NK-013 (62.4 kg, DL1, donor NK-DONOR-001), NK-001 (62.4 kg, DL2, donor NK-DONOR-001)"
            in first.output)
    second = runner.invoke(args=["init", "--demo"])
    assert second.exit_code == 0 and "created" not in second.output, second.output

    session = db.session
    audit.set_actor(session, name="test")
    types, materials = _named_in_files()
    assert all(len(_usable_equipment(session, t)) == 2 for t in types)
    assert all(len(_usable_lots(session, m)) == 2 for m in materials)
    subject = session.scalar(sa.select(Subject).where(Subject.code == "NK-001"))
    operator1, operator2 = (accounts.get_by_username(session, name) for name in ("operator1", "operator2"))
    batch = demo_nk.run_nk_batch(session, subject=subject, performer=operator1, verifier=operator2,
                                 password=demo.DEMO_PASSWORD, tz=ZoneInfo(app.config["SITE_TIMEZONE"]))
    session.commit()
    _assert_clean(session, batch, "operator1", "operator2")
    assert batch.status == "awaiting_review" and batches.open_steps(session, batch) == []

    from mfg.services import bags

    made = bags.of_batch(session, batch)
    assert [(bag.division, bag.volume_ml, bag.product_code_barcode) for bag in made] == \
        [("00", Decimal("13.4"), "=<S9999V00")]
    assert made[0].expires_at - _value(session, batch, "NK-FORMULATE", "formulate", "formulated_at").moment == \
        timedelta(hours=48)
    scans = [ex for ex in batches.executions(session, batch) if ex.step_id == "scan_back"]
    assert len(scans) == 1 and scans[0].current_values()["product_code"].text == "=<S9999V00"
    assert _text(session, batch, "NK-FORMULATE", "scan_back", "label_volume_ml") == "13.4"


def test_a_demo_instance_without_the_nk_records_gets_no_nk_data(app, session):
    app.config["SOPS_DIR"] = str(RESOURCE_ROOT / "sops" / "demo")
    result = app.test_cli_runner().invoke(args=["init", "--demo"])
    assert result.exit_code == 0, result.output
    assert "created demo subject" not in result.output
    assert _counts(db.session) == (2, 2)  # the demo process's two cabinets and two PBS lots only
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Subject)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Batch)) == 0
