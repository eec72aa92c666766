"""Final-product release testing (issue [3.3] deliverable 7): NK-RELEASE v3, NK-FORMULATE v3 and NK-TRIAL v3.

Checked as data, the way the engine reads them: the product's records in NK-TRIAL v3's order, the position of
every sample in that order (sterility, Gram stain and endotoxin after the fill, mycoplasma before the wash),
the result time of every timed result, the cell-dose specification computed with ``values.calculate`` (as the
engine computes it), and the per-kg limits named from the trial configuration.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from mfg.config import RESOURCE_ROOT
from mfg.domain import values
from mfg.domain.sop_schema import ChoiceField, MasterRecord, parse_definition, step_index
from mfg.domain.trial_config import parse_trial_configuration

D = Decimal
NK = RESOURCE_ROOT / "sops" / "nk"


def record(name: str) -> MasterRecord:
    return parse_definition((NK / f"{name}.yaml").read_text(encoding="utf-8"), name)


RELEASE = record("NK-RELEASE_v3")
FORMULATE = record("NK-FORMULATE_v3")
TRIAL = parse_trial_configuration((RESOURCE_ROOT / "sops" / "trial" / "NK-TRIAL_v3.yaml").read_text(encoding="utf-8"),
                                  "NK-TRIAL_v3.yaml")
VERSIONS = {"NK-INTAKE": record("NK-INTAKE_v1"), "NK-EXPAND": record("NK-EXPAND_v1"), "NK-FORMULATE": FORMULATE,
            "NK-RELEASE": RELEASE}


def field(master: MasterRecord, step_id: str, field_id: str) -> Any:
    return next(f for f in step_index(master)[step_id][1].fields if f.id == field_id)


def product_order() -> dict[tuple[str, str], int]:
    """Every step of the product, (record code, step id) -> its position in the order the batch does them."""
    order: dict[tuple[str, str], int] = {}
    for code in TRIAL.product_master_records:
        for step_id in step_index(VERSIONS[code]):
            order[(code, step_id)] = len(order)
    return order


def sample_step(master: MasterRecord, step_id: str, field_id: str) -> str:
    """The step whose date-time the result's sample time is."""
    timed = field(master, step_id, field_id).result_time
    assert timed is not None, f"{step_id}.{field_id} has no result_time"
    return timed.sample.partition(".")[0] if "." in timed.sample else step_id


def test_trial_v3_orders_formulation_before_release_and_keeps_every_other_value_of_v2() -> None:
    v2 = parse_trial_configuration((RESOURCE_ROOT / "sops" / "trial" / "NK-TRIAL_v2.yaml").read_text(), "v2.yaml")
    assert TRIAL.product_master_records == ["NK-INTAKE", "NK-EXPAND", "NK-FORMULATE", "NK-RELEASE"]
    assert TRIAL.model_dump(exclude={"version", "description", "product_master_records"}) == \
        v2.model_dump(exclude={"version", "description", "product_master_records"})


def test_sterility_gram_stain_and_endotoxin_are_sampled_after_the_fill_and_mycoplasma_before_the_wash() -> None:
    order = product_order()
    wash, fill = order[("NK-FORMULATE", "formulate")], order[("NK-FORMULATE", "bag_preparation")]
    assert "wash" in step_index(FORMULATE)["formulate"][1].instruction.lower()
    assert step_index(FORMULATE)["bag_preparation"][1].divides_product is not None  # the fill
    for step_id, field_id in (("sterility", "result"), ("sterility_preliminary", "result"), ("gram_stain", "result"),
                              ("endotoxin", "endotoxin_eu_per_ml")):
        sampled = order[("NK-RELEASE", sample_step(RELEASE, step_id, field_id))]
        assert sampled > fill, step_id
        assert order[("NK-RELEASE", "sampling")] <= sampled
    # mycoplasma: the sample of NK-FORMULATE's pre-wash sampling (cells and supernatant), before the wash; its
    # time is transcribed into the release record (records cannot read each other's values) and verified
    pre_wash = step_index(FORMULATE)["pre_wash_sampling"][1]
    assert order[("NK-FORMULATE", "pre_wash_sampling")] < wash
    assert "cells and supernatant" in pre_wash.instruction
    assert "mycoplasma" in {f.id.partition("_")[0] for f in pre_wash.fields}
    assert sample_step(RELEASE, "mycoplasma", "result") == "mycoplasma"
    assert "pre_wash_sampling.sampled_at" in field(RELEASE, "mycoplasma", "sampled_at").help
    assert step_index(RELEASE)["mycoplasma"][1].verification == "required"
    # the release record no longer provides the dose plan: NK-FORMULATE calculates from its own in-process results
    plan = step_index(FORMULATE)["dose_plan"][1]
    assert "release record" not in plan.instruction
    assert "in_process_tests.nk_pct" in field(FORMULATE, "dose_plan", "volume_ml").expression
    assert order[("NK-FORMULATE", "in_process_tests")] < order[("NK-FORMULATE", "dose_plan")]
    assert sample_step(FORMULATE, "in_process_tests", "nk_pct") == "pre_wash_sampling"


# method durations: (minimum_hours, due_hours) of each timed result of the final product
DURATIONS = {
    ("sterility", "result"): (336, 336),
    ("sterility_preliminary", "result"): (48, 72),
    ("gram_stain", "result"): (0.25, 2),
    ("endotoxin", "endotoxin_eu_per_ml"): (0.25, 2),
    ("mycoplasma", "result"): (3, 8),
    ("potency", "lysis_pct"): (4, 24),
}


def test_every_release_result_states_when_it_can_exist_and_only_sterility_may_be_pending() -> None:
    testing = next(stage for stage in RELEASE.stages if stage.id == "testing")
    results = [(step.id, f) for step in testing.steps for f in step.fields
               if f.type in ("number", "integer") or (isinstance(f, ChoiceField) and f.acceptable)]
    assert len(results) >= 12
    for step_id, f in results:
        assert f.result_time is not None, f"{step_id}.{f.id}"
        assert f.result_time.method.strip(), f"{step_id}.{f.id}"
    for (step_id, field_id), durations in DURATIONS.items():
        timed = field(RELEASE, step_id, field_id).result_time
        assert (timed.minimum_hours, timed.due_hours) == durations
    pending = {(step_id, f.id) for step_id, f in results if isinstance(f, ChoiceField) and f.pending}
    assert pending == {("sterility", "result"), ("sterility_preliminary", "result")}
    # a preliminary read 48 h after a sample drawn after the fill cannot precede the end of the shelf life
    assert DURATIONS[("sterility_preliminary", "result")][0] >= TRIAL.shelf_life_hours


def test_the_pending_sterility_result_is_entered_through_its_own_result_entry_not_a_correction() -> None:
    for step_id in ("sterility", "sterility_preliminary"):
        instruction = step_index(RELEASE)[step_id][1].instruction
        assert "as a correction" not in instruction and "correct this value" not in instruction
        assert "result entry" in instruction and "second person" in instruction
    assert "as a correction" not in RELEASE.description


def dose_check(filled_ml: str, *, viable: str = "15.00", nk_pct: str = "93.0", cd3_pct: str = "0.25",
               eu_per_ml: str = "0.12", weight: str = "62.4", dose: str = "3000000",
               **trial: str) -> dict[str, values.Calculated]:
    numbers: dict[str, Decimal | None] = {
        "subject.weight_kg": D(weight), "subject.dose_per_kg": D(dose), "filled_volume_ml": D(filled_ml),
        "cell_count.viable_concentration": D(viable), "flow_cytometry.nk_purity": D(nk_pct),
        "flow_cytometry.cd3_pct": D(cd3_pct), "endotoxin.endotoxin_eu_per_ml": D(eu_per_ml),
        "trial.cd3_limit_per_kg": D("200000"), "trial.endotoxin_limit_eu_per_kg": D("5.0"),
        **{f"trial.{k}": D(v) for k, v in trial.items()}}
    return {c.field.id: c for c in values.calculate(step_index(RELEASE)["dose_limits"][1].fields, numbers)}


def number(result: dict[str, values.Calculated], field_id: str) -> Decimal | None:
    return result[field_id].parsed.number


def test_the_cell_dose_of_the_domain_example_is_within_tolerance() -> None:
    # DOMAIN.md section 10: 13.4 mL x 1.5e7/mL x 93 % / 62.4 kg = 2 995 673 NK cells/kg = 99.9 % of 3e6/kg
    result = dose_check("13.4")
    assert (number(result, "delivered_nk_per_kg"), number(result, "dose_pct")) == (D("2995673"), D("99.9"))
    assert (number(result, "cd3_per_kg"), number(result, "endotoxin_per_kg")) == (D("8053"), D("0.026"))
    assert all(not c.limit_problems for c in result.values())


@pytest.mark.parametrize(("filled_ml", "viable", "pct", "flagged"), [
    ("10.7", "15.00", "79.7", True),   # 10.7 x 1.5e7 x 0.93 / 62.4 = 2 392 067/kg, 79.74 %: under-dosed
    ("10.8", "15.00", "80.5", False),  # the lower edge passes
    ("16.1", "15.00", "120.0", False),  # 16.1 x 1.5e7 x 0.93 / 62.4 = 3 599 279/kg: 119.98 -> 120.0, the edge
    ("16.2", "15.00", "120.7", True),  # 3 621 635/kg: over-dosed
    ("13.4", "11.00", "73.2", True),   # the right volume of a product that counts low after the fill
])
def test_a_product_outside_the_dose_tolerance_is_flagged(filled_ml: str, viable: str, pct: str, flagged: bool) -> None:
    result = dose_check(filled_ml, viable=viable)
    assert number(result, "dose_pct") == D(pct)
    assert bool(result["dose_pct"].limit_problems) is flagged
    assert not result["dose_pct"].refused  # flagged (a deviation QA decides on), never silently refused


def test_the_dose_tolerance_is_a_stated_site_choice_and_the_per_kg_limits_name_the_trial_configuration() -> None:
    pct = field(RELEASE, "dose_limits", "dose_pct")
    assert (pct.min, pct.max) == (80.0, 120.0)
    assert "subject.dose_per_kg" in pct.expression and "site/specification choice" in pct.help
    for master, step_id in ((RELEASE, "dose_limits"), (FORMULATE, "dose_plan")):
        cd3, endotoxin = field(master, step_id, "cd3_per_kg"), field(master, step_id, "endotoxin_per_kg")
        assert (cd3.below, endotoxin.max) == ("trial.cd3_limit_per_kg", "trial.endotoxin_limit_eu_per_kg")
    # a stricter configuration flags the same final product, nothing in the record changed
    assert dose_check("13.4", cd3_limit_per_kg="8000")["cd3_per_kg"].limit_problems
    assert dose_check("13.4", endotoxin_limit_eu_per_kg="0.02")["endotoxin_per_kg"].limit_problems


@pytest.mark.parametrize("source", ["Ph. Eur. 2.6.27", "Ph. Eur. 2.6.1", "Ph. Eur. 2.6.14", "Ph. Eur. 2.6.7",
                                    "USP <71>", "USP <85>", "21 CFR 610.12", "PMC4787300", "Lapteva 2012",
                                    "DOMAIN.md"])
def test_the_release_record_cites_its_sources_in_the_record(source: str) -> None:
    text = (NK / "NK-RELEASE_v3.yaml").read_text(encoding="utf-8")
    shown = " ".join(f"{step.instruction} {f.help}" for _stage, step in step_index(RELEASE).values()
                     for f in step.fields)
    assert source in text and source in shown  # in the file's comments and on the screens and records


def test_the_headers_state_the_design_and_that_this_release_version_is_3() -> None:
    release = (NK / "NK-RELEASE_v3.yaml").read_text(encoding="utf-8")
    assert 'calls it "NK-RELEASE v2"' in release and "so this is v3" in release
    for name in ("NK-FORMULATE_v3.yaml", "NK-RELEASE_v3.yaml", "../trial/NK-TRIAL_v3.yaml"):
        header = (NK / name).read_text(encoding="utf-8").partition("\nkind:")[0]
        assert "NK-FORMULATE" in header and "after the fill" in header, name
