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


_CRITERION_CODE = r"^[a-z][a-z0-9_]{0,39}$"


class LabCriterion(_Model):
    """One organ-function limit measured before first treatment (issue [3.7] item 1), with its unit. A limit
    relative to the upper limit of normal (``uln``) is checked against the ULN the laboratory reports,
    entered with the value: ALT ≤ 3 × ULN is ``{max: 3, uln: true}``. Criteria sharing a ``group`` are
    alternatives: the group is met when any one of them is recorded and met (creatinine ≤ 1.5 × ULN or
    clearance ≥ 30 mL/min)."""

    code: str = Field(pattern=_CRITERION_CODE)
    label: str = Field(min_length=1)
    unit: str = Field(min_length=1)
    min: float | None = None
    max: float | None = None
    uln: bool = False
    group: str | None = Field(None, pattern=_CRITERION_CODE)

    @model_validator(mode="after")
    def _limit(self) -> LabCriterion:
        if self.min is None and self.max is None:
            raise ValueError(f"criterion {self.code} needs a min or a max")
        if self.uln and self.min is not None:
            raise ValueError(f"criterion {self.code}: a limit relative to the ULN is a max")
        return self


class ExclusionFact(_Model):
    """An exclusion that is a recordable fact, asked as a question: the answer "yes" excludes the subject."""

    code: str = Field(pattern=_CRITERION_CODE)
    question: str = Field(min_length=1)


class AgeRange(_Model):
    min: int = Field(ge=0)
    max: int = Field(ge=0)


class SubjectEligibility(_Model):
    """What a subject must meet at enrolment (the protocol's inclusion and recordable exclusion criteria)."""

    age_years: AgeRange
    ecog_max: int = Field(ge=0, le=5)
    # every lab value measured within this many days before the planned first treatment (and not after today)
    lab_window_days: int = Field(ge=0)
    labs: list[LabCriterion] = Field(min_length=1)
    exclusions: list[ExclusionFact] = Field(default_factory=list)

    @model_validator(mode="after")
    def _codes(self) -> SubjectEligibility:
        codes = [c.code for c in self.labs] + [e.code for e in self.exclusions]
        if len(set(codes)) != len(codes):
            raise ValueError("criterion codes must be unique")
        if self.age_years.min > self.age_years.max:
            raise ValueError("age_years: min above max")
        return self


class DonorRelationship(_Model):
    """A donor's relationship to the subject; ``cd3_limit_per_kg`` overrides the trial's residual T-cell
    limit for products from such a donor (a site may set a lower one for haploidentical donors)."""

    code: str = Field(pattern=_CRITERION_CODE)
    label: str = Field(min_length=1)
    cd3_limit_per_kg: int | None = Field(None, gt=0)


class DonorEligibility(_Model):
    """The donor's infectious-disease panel (every test needed, each from a specimen at most
    ``specimen_max_age_days`` old when eligibility is determined) and the relationships a donor may have."""

    panel: list[str] = Field(min_length=1)
    specimen_max_age_days: int = Field(ge=0)
    relationships: list[DonorRelationship] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> DonorEligibility:
        if len(set(self.panel)) != len(self.panel):
            raise ValueError("each test of the panel is named once")
        codes = [r.code for r in self.relationships]
        if len(set(codes)) != len(codes):
            raise ValueError("relationship codes must be unique")
        return self

    def relationship(self, code: str) -> DonorRelationship:
        for relationship in self.relationships:
            if relationship.code == code:
                return relationship
        raise KeyError(code)


class Escalation(_Model):
    """The dose-escalation design (``domain.escalation``): the rule, its target DLT rate for BOIN, the cohort
    size, the DLT window in days after infusion, the level the first cohort opens at, the trial's maximum number
    of subjects and the tolerance (percent) of the achieved dose against the assigned one."""

    rule: Literal["3+3", "boin"] = "3+3"
    target_dlt_rate: float | None = None
    cohort_size: int = Field(3, ge=1)
    dlt_window_days: int = Field(ge=1)
    start_level: str = Field(pattern=r"^DL[0-9]{1,2}$")
    max_subjects: int = Field(ge=1)
    dose_tolerance_pct: float = Field(gt=0, lt=100)

    @model_validator(mode="after")
    def _target(self) -> Escalation:
        if self.rule == "boin" and self.target_dlt_rate is None:
            raise ValueError("BOIN needs target_dlt_rate")
        if self.rule == "3+3" and self.target_dlt_rate is not None:
            raise ValueError("3+3 takes no target_dlt_rate")
        if self.target_dlt_rate is not None and not 0 < self.target_dlt_rate < 1:
            raise ValueError("target_dlt_rate lies between 0 and 1")
        return self


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
    # The trial's own rules (issue [3.7]); absent in versions that predate them (NK-TRIAL v1-v4), which
    # enforce none of them.
    subject_eligibility: SubjectEligibility | None = None
    donor_eligibility: DonorEligibility | None = None
    escalation: Escalation | None = None

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
        if self.escalation is not None and self.escalation.start_level not in codes:
            raise ValueError(f"escalation.start_level {self.escalation.start_level} is not a dose level")
        return self

    def cd3_limit_for(self, relationship: str | None) -> int:
        """The residual T-cell limit per kg for a product from a donor of ``relationship`` (the trial's
        ``cd3_limit_per_kg`` unless the relationship sets its own)."""
        if self.donor_eligibility is not None and relationship is not None:
            try:
                own = self.donor_eligibility.relationship(relationship).cd3_limit_per_kg
            except KeyError:
                own = None
            if own is not None:
                return own
        return self.cd3_limit_per_kg

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
