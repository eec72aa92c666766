"""The trial and site configuration (YAML under ``sops/trial/``), versioned and approved like a master
record. Every value the registry (NCT05744440) does not give is a protocol or site decision: it lives
here, never in code, and the demo file marks each such value as configurable.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import isbt128
from .sop_schema import CODE_PATTERN, DefinitionError, _format, _load_yaml, _validation_problems


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DoseLevel(_Model):
    """One dose level of the escalation: NK cells per kg of the subject's weight, per infusion."""

    code: str = Field(pattern=r"^DL[0-9]{1,2}$")
    cells_per_kg: int = Field(gt=0)
    label: str = ""


class TrialConfiguration(_Model):
    kind: Literal["trial_configuration"]
    code: str = Field(pattern=CODE_PATTERN)
    version: int = Field(ge=1)
    title: str = Field(min_length=1)
    description: str = ""
    trial_id: str = Field(pattern=r"^NCT[0-9]{8}$")
    dose_levels: list[DoseLevel] = Field(min_length=1)
    # The master records a product batch is made under, in the order they are performed (their codes);
    # a batch for a subject pins the effective version of each. Empty in a configuration that makes none.
    product_master_records: list[str] = Field(default_factory=list)
    infusions_per_subject: int = Field(ge=1)
    cd3_limit_per_kg: int = Field(gt=0)
    endotoxin_limit_eu_per_kg: float = Field(gt=0)
    apheresis_hold_hours: float = Field(gt=0)
    shelf_life_hours: float = Field(gt=0)
    max_bag_volume_ml: float = Field(gt=0)
    facility_identification_number: str
    product_description_code: str = Field(pattern=r"^S[A-Z0-9]{4}$")
    donation_type: str = "V"
    site_timezone: str = "UTC"
    # What every bag label and the certificate print (configurable; QA decides the wording).
    product_name: str = Field("Allogeneic NK cells, expanded", min_length=1)
    storage_statement: str = Field("Store at 2-8 °C. Do not freeze.", min_length=1)
    label_warnings: list[str] = Field(default_factory=list)
    # The manufacturing facility as label and certificate name it (ISBT 128 labels carry the facility's
    # name and address beside its FIN), and the additive statement of the formulated product (the
    # solution the cells are suspended in). Empty in versions that predate them (NK-TRIAL v1-v3).
    facility_name: str = ""
    facility_address: list[str] = Field(default_factory=list)
    additive_statement: str = ""

    @field_validator("facility_identification_number")
    @classmethod
    def _fin(cls, value: str) -> str:
        problems = isbt128.fin_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("donation_type")
    @classmethod
    def _donation_type(cls, value: str) -> str:
        if value not in isbt128.DONATION_TYPES:
            raise ValueError(f"unknown ISBT 128 type of donation {value!r}")
        return value

    @field_validator("site_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("product_master_records")
    @classmethod
    def _records(cls, value: list[str]) -> list[str]:
        bad = [code for code in value if not re.fullmatch(CODE_PATTERN, code)]
        if bad:
            raise ValueError(f"not master record codes: {', '.join(map(repr, bad))}")
        if len(set(value)) != len(value):
            raise ValueError("each master record is named once")
        return value

    @model_validator(mode="after")
    def _levels(self) -> TrialConfiguration:
        codes = [level.code for level in self.dose_levels]
        if len(set(codes)) != len(codes):
            raise ValueError("dose level codes must be unique")
        doses = [level.cells_per_kg for level in self.dose_levels]
        if doses != sorted(doses) or len(set(doses)) != len(doses):
            raise ValueError("dose levels must increase strictly, in escalation order")
        return self

    def dose_level(self, code: str) -> DoseLevel:
        for level in self.dose_levels:
            if level.code == code:
                return level
        raise KeyError(code)

    @property
    def endotoxin_limit(self) -> Decimal:
        return Decimal(str(self.endotoxin_limit_eu_per_kg))


def parse_trial_configuration(text: str, source: str) -> TrialConfiguration:
    """Parse and check a trial configuration file; errors name the file, the path and the problem."""
    data, lines = _load_yaml(text, source)
    try:
        return TrialConfiguration.model_validate(data)
    except pydantic.ValidationError as exc:
        raise DefinitionError(_format(source, _validation_problems(exc), lines)) from exc
