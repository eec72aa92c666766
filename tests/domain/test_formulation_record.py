"""The dose formulation rule, where it lives: NK-FORMULATE's dose plan (sops/nk/NK-FORMULATE_v2.yaml),
computed as the engine computes it (``values.calculate``) with the subject's and the trial configuration's
numbers. Worked examples derived by hand (DOMAIN.md sections 5 and 10), both per-kg limits at their
boundaries, the T-cell cap on the dose, and limits that follow the trial configuration."""

from decimal import Decimal
from typing import Any

from mfg.config import RESOURCE_ROOT
from mfg.domain import values
from mfg.domain.sop_schema import parse_definition, step_index

D = Decimal
RECORD = parse_definition((RESOURCE_ROOT / "sops" / "nk" / "NK-FORMULATE_v2.yaml").read_text(), "NK-FORMULATE_v2")
DOSE_PLAN = step_index(RECORD)["dose_plan"][1]
TRIAL = {"trial.cd3_limit_per_kg": D("200000"), "trial.endotoxin_limit_eu_per_kg": D("5.0")}


def plan(*, weight_kg: Any, dose_per_kg: Any, viable_e6_per_ml: Any, nk_pct: Any, cd3_pct: Any, eu_per_ml: Any,
         **trial: Any) -> dict[str, values.Calculated]:
    numbers: dict[str, Decimal | None] = {
        "subject.weight_kg": D(str(weight_kg)), "subject.dose_per_kg": D(str(dose_per_kg)),
        "viable_concentration": D(str(viable_e6_per_ml)), "nk_pct": D(str(nk_pct)), "cd3_pct": D(str(cd3_pct)),
        "endotoxin_eu_per_ml": D(str(eu_per_ml)), **TRIAL, **{f"trial.{k}": D(str(v)) for k, v in trial.items()}}
    return {c.field.id: c for c in values.calculate(DOSE_PLAN.fields, numbers)}


def value(result: dict[str, values.Calculated], field_id: str) -> Decimal:
    number = result[field_id].parsed.number
    assert number is not None
    return number


# DOMAIN.md section 10: 62.4 kg at DL2 (3 x 10^6/kg); 1.5 x 10^7 viable/mL, 93 % NK, 0.25 % CD3+, 0.12 EU/mL
DOMAIN_EXAMPLE = dict(weight_kg="62.4", dose_per_kg=3_000_000, viable_e6_per_ml="15", nk_pct="93", cd3_pct="0.25",
                      eu_per_ml="0.12")
# A product that meets its purity and dose but carries many T cells: 2.5 x 10^7 viable/mL, 80 % NK, 5 % CD3+
T_CELL_RICH = dict(weight_kg="50", viable_e6_per_ml="25", nk_pct="80", cd3_pct="5", eu_per_ml="0.1")


def test_the_domain_worked_example() -> None:
    result = plan(**DOMAIN_EXAMPLE)
    # target NK = 3e6/kg x 62.4 kg = 1.872e8 cells = 187.2 x 10^6
    assert value(result, "target_nk_cells") == D("187.2")
    # volume = 1.872e8 / (1.5e7 x 0.93) = 13.419... mL, rounded half up to 13.4 mL (what is drawn)
    assert value(result, "volume_ml") == D("13.4")
    # from the drawn 13.4 mL: CD3+ = 13.4 x 1.5e7 x 0.0025 / 62.4 = 502,500 / 62.4 = 8052.88 -> 8053/kg
    assert value(result, "cd3_per_kg") == D("8053")
    # endotoxin = 13.4 x 0.12 / 62.4 = 0.025769 -> 0.026 EU/kg
    assert value(result, "endotoxin_per_kg") == D("0.026")
    assert all(not c.limit_problems for c in result.values())


def test_a_product_meeting_the_dose_but_failing_the_t_cell_cap_is_refused() -> None:
    # cap = T-cell limit x NK fraction / CD3+ fraction = 2e5 x 0.8 / 0.05 = 3.2e6 NK cells/kg.
    # At 3e6/kg: volume = 1.5e8 / 2e7 = 7.5 mL; CD3+ per kg = 7.5 x 2.5e7 x 0.05 / 50 = 187,500 < 200,000
    fine = plan(dose_per_kg=3_000_000, **T_CELL_RICH)
    assert value(fine, "volume_ml") == D("7.5") and value(fine, "cd3_per_kg") == D("187500")
    assert not fine["cd3_per_kg"].refused
    # At 1e7/kg the dose is deliverable (25.0 mL) but CD3+ per kg = 625,000: refused, not flagged
    refused = plan(dose_per_kg=10_000_000, **T_CELL_RICH)["cd3_per_kg"]
    assert refused.parsed.number == D("625000")
    assert refused.refused == ["REFUSED: Residual T cells per kg 625000 CD3+ cells/kg is not below 200000 CD3+ "
                               "cells/kg (trial.cd3_limit_per_kg). The master record does not allow this value; "
                               "nothing was stored."]


def test_cd3_dose_equal_to_the_limit_is_refused_because_it_must_be_strictly_below() -> None:
    # 3.2e6 x 50 = 1.6e8 NK; volume 8.0 mL; CD3+ per kg = 8 x 2.5e7 x 0.05 / 50 = 200,000 = the limit
    assert plan(dose_per_kg=3_200_000, **T_CELL_RICH)["cd3_per_kg"].refused
    # one cell per kg of headroom in the configuration accepts the same product
    assert not plan(dose_per_kg=3_200_000, cd3_limit_per_kg=200_001, **T_CELL_RICH)["cd3_per_kg"].refused


def test_rounding_up_the_volume_can_tip_the_t_cell_dose_over_the_limit() -> None:
    # 3.19e6 x 50 = 1.595e8 NK; exact volume 7.975 mL (199,375/kg) but drawn 8.0 mL: 200,000/kg, refused
    result = plan(dose_per_kg=3_190_000, **T_CELL_RICH)
    assert value(result, "volume_ml") == D("8.0") and result["cd3_per_kg"].refused


# 50 kg at 3e6/kg; 2e7 viable/mL x 75 % NK: volume 10.0 mL; CD3+ 4,000/kg. Endotoxin per kg = EU/mL / 5
LOW_T_CELLS = dict(weight_kg="50", dose_per_kg=3_000_000, viable_e6_per_ml="20", nk_pct="75", cd3_pct="0.1")


def test_endotoxin_equal_to_the_limit_is_accepted_and_above_it_refused() -> None:
    at_limit = plan(eu_per_ml="25", **LOW_T_CELLS)
    assert value(at_limit, "endotoxin_per_kg") == D("5") and not at_limit["endotoxin_per_kg"].refused
    # 25.01 EU/mL: 250.1 / 50 = 5.002 EU/kg > 5 -> refused
    over = plan(eu_per_ml="25.01", **LOW_T_CELLS)["endotoxin_per_kg"]
    assert over.parsed.number == D("5.002")
    assert over.refused == ["REFUSED: Endotoxin per kg 5.002 EU/kg is above the maximum 5 EU/kg "
                            "(trial.endotoxin_limit_eu_per_kg). The master record does not allow this value; "
                            "nothing was stored."]


def test_both_limits_are_judged_each_on_its_own() -> None:
    # the 1e7/kg T-cell-rich product at 12 EU/mL: 25 mL x 12 / 50 = 6 EU/kg > 5, and 625,000 CD3+/kg
    result = plan(dose_per_kg=10_000_000, **dict(T_CELL_RICH, eu_per_ml="12"))
    assert result["cd3_per_kg"].refused and result["endotoxin_per_kg"].refused


def test_the_limits_follow_the_trial_configuration() -> None:
    """The record names the configuration's limits: a stricter configuration refuses what the old one
    accepted, with nothing in the master record changed."""
    assert not plan(**DOMAIN_EXAMPLE)["cd3_per_kg"].refused
    assert plan(cd3_limit_per_kg=8000, **DOMAIN_EXAMPLE)["cd3_per_kg"].refused  # 8053/kg >= 8000
    assert plan(endotoxin_limit_eu_per_kg="0.02", **DOMAIN_EXAMPLE)["endotoxin_per_kg"].refused  # 0.026 > 0.02


def test_a_limit_the_batch_does_not_define_cannot_be_judged_and_refuses() -> None:
    numbers: dict[str, Decimal | None] = {
        "subject.weight_kg": D("62.4"), "subject.dose_per_kg": D("3000000"), "viable_concentration": D("15"),
        "nk_pct": D("93"), "cd3_pct": D("0.25"), "endotoxin_eu_per_ml": D("0.12")}  # no trial configuration
    result = {c.field.id: c for c in values.calculate(DOSE_PLAN.fields, numbers)}
    assert result["cd3_per_kg"].refused == [
        "REFUSED: Residual T cells per kg 8053 CD3+ cells/kg cannot be judged: its limit trial.cd3_limit_per_kg is "
        "not defined for this batch. The master record does not allow this value; nothing was stored."]
