"""The names a master record may use for numbers the batch provides at run time, declared once.

``subject.*`` are the subject's weight and signed dose level as pinned to the batch when it started (a later
reassignment of the subject's dose changes later batches only); ``trial.*`` are fields of the trial
configuration version that dose was assigned under (pinned with it), each named exactly as that field. A definition
may use them in calculations, in time windows and as limits (``sop_schema``); the services fill them
(``services.evaluation.context_numbers``). A name not declared here is refused when a definition is loaded.
"""

from __future__ import annotations

SUBJECT_NAMES: dict[str, str] = {
    "subject.weight_kg": "the subject's weight in kg, as measured for dosing (pinned to the batch at start)",
    "subject.dose_per_kg": "the subject's signed dose level, NK cells per kg (pinned to the batch at start)",
}

# Fields of ``trial_config.TrialConfiguration`` (a test holds them to its fields).
TRIAL_FIELDS: tuple[str, ...] = ("cd3_limit_per_kg", "endotoxin_limit_eu_per_kg", "max_bag_volume_ml",
                                 "apheresis_hold_hours", "shelf_life_hours")

CONTEXT_NAMES: frozenset[str] = frozenset(SUBJECT_NAMES) | {f"trial.{name}" for name in TRIAL_FIELDS}
