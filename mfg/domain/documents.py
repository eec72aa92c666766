"""Controlled documents under ``sops/``, by their ``kind``: master batch records and the trial
configuration. Loading, hashing and approval treat them alike (services.sops)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import yaml

from .sop_schema import ROOT, DefinitionError, MasterRecord, parse_definition
from .trial_config import TrialConfiguration, parse_trial_configuration

Document = MasterRecord | TrialConfiguration
PARSERS: dict[str, Callable[[str, str], Document]] = {
    "master_batch_record": parse_definition, "trial_configuration": parse_trial_configuration}


@lru_cache(maxsize=64)
def parse_document(text: str, source: str) -> Document:
    """The document ``text`` (from ``source``, named in problems) as its kind's frozen model, or DefinitionError.

    Remembered by its text: a pure function of it, and the same few approved documents are read at every batch
    start and step (parsing the trial configuration's YAML was 33 ms of a 41 ms batch start, a quarter of the
    CPU of a signed step beside argon2; issue [3.5] item 8). The models are frozen; errors are not remembered."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None  # the kind's own parser reports the YAML error with its position
    kind = data.get("kind") if isinstance(data, dict) else None
    parser = PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        if not isinstance(data, dict):
            return parse_definition(text, source)  # reports what is wrong with the document itself
        raise DefinitionError([f"{source}: kind: unknown document kind {kind!r}; known kinds: "
                               f"{', '.join(sorted(PARSERS))}"])
    return parser(text, source)


__all__ = ["ROOT", "DefinitionError", "Document", "parse_document"]
