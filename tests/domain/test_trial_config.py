"""The trial and site configuration document."""

from __future__ import annotations

import pytest

from mfg.config import RESOURCE_ROOT
from mfg.domain.documents import parse_document
from mfg.domain.sop_schema import DefinitionError
from mfg.domain.trial_config import TrialConfiguration

TRIAL = RESOURCE_ROOT / "sops" / "trial" / "NK-TRIAL_v1.yaml"


def test_the_demo_trial_configuration_parses_with_the_issue_defaults():
    config = parse_document(TRIAL.read_text(), "trial/NK-TRIAL_v1.yaml")
    assert isinstance(config, TrialConfiguration) and config.trial_id == "NCT05744440"
    assert [(d.code, d.cells_per_kg) for d in config.dose_levels] == [
        ("DL1", 1_000_000), ("DL2", 3_000_000), ("DL3", 10_000_000), ("DL4", 30_000_000)]
    assert config.cd3_limit_per_kg == 200_000 and config.endotoxin_limit_eu_per_kg == 5.0
    assert config.facility_identification_number == "X9999"  # the DEMO FIN
    assert "configurable" in TRIAL.read_text() and "not from the registry" in TRIAL.read_text()


@pytest.mark.parametrize("change,message", [
    (("facility_identification_number: X9999", "facility_identification_number: O9999"),
     "facility_identification_number"),
    (("cells_per_kg: 3000000", "cells_per_kg: 300000"), "dose levels must increase"),
    (("site_timezone: UTC", "site_timezone: Mars/Olympus"), "unknown time zone"),
    (("trial_id: NCT05744440", "trial_id: 5744440"), "trial_id"),
    (("cd3_limit_per_kg: 200000", "cd3_limit_per_kg: -1"), "cd3_limit_per_kg"),
])
def test_invalid_configurations_name_the_file_and_the_problem(change, message):
    text = TRIAL.read_text().replace(*change)
    with pytest.raises(DefinitionError) as info:
        parse_document(text, "trial/NK-TRIAL_v1.yaml")
    assert "trial/NK-TRIAL_v1.yaml" in str(info.value) and message in str(info.value)


def test_unknown_document_kind_is_refused():
    with pytest.raises(DefinitionError, match="unknown document kind 'recipe'"):
        parse_document("kind: recipe\ncode: X\n", "x.yaml")


def test_the_trial_context_names_are_numeric_fields_of_the_configuration():
    """domain.context declares each ``trial.*`` name once, as a field of the configuration of that name."""
    from mfg.domain import context
    from mfg.domain.trial_config import TrialConfiguration

    config = parse_document(TRIAL.read_text(), TRIAL.name)
    for name in context.TRIAL_FIELDS:
        assert name in TrialConfiguration.model_fields
        assert isinstance(getattr(config, name), int | float)
    assert context.CONTEXT_NAMES == set(context.SUBJECT_NAMES) | {f"trial.{n}" for n in context.TRIAL_FIELDS}
