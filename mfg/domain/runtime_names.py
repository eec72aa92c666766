"""The names the engine resolves at run time, as people read them: one table for the screens
(``domain.words``) and the hard stops' words (``domain.errors``). No imports, so that the base of the domain
(errors) may use it."""

from __future__ import annotations

# The names the engine resolves at run time (scan comparisons, calculations, limits), in words.
RUNTIME_WORDS: dict[str, str] = {
    "batch.lot": "the batch's lot number",
    "batch.din": "DIN",
    "subject.coi": "the subject's COI",
    "bag.product_code": "the bag's product code",
    "subject.weight_kg": "the subject's weight (kg)",
    "subject.dose_per_kg": "the subject's dose (NK cells/kg)",
    "trial.cd3_limit_per_kg": "the trial's CD3⁺ cell limit per kg",
    "trial.endotoxin_limit_eu_per_kg": "the trial's endotoxin limit per kg",
    "trial.max_bag_volume_ml": "the trial's largest bag volume",
    "trial.apheresis_hold_hours": "the trial's apheresis hold time",
    "trial.shelf_life_hours": "the trial's shelf life",
}


def runtime_words(name: str) -> str:
    """``batch.din`` -> ``DIN``; a name the table does not know, with its dots and underscores as spaces."""
    return RUNTIME_WORDS.get(name, name.replace("_", " ").replace(".", " "))
