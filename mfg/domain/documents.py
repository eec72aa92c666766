"""Controlled documents under ``sops/``, by their ``kind``: master batch records and the trial
configuration. Loading, hashing and approval treat them alike (services.sops)."""

from __future__ import annotations

from collections.abc import Callable

import yaml

from .sop_schema import ROOT, DefinitionError, MasterRecord, parse_definition
from .trial_config import TrialConfiguration, parse_trial_configuration

Document = MasterRecord | TrialConfiguration
PARSERS: dict[str, Callable[[str, str], Document]] = {
    "master_batch_record": parse_definition, "trial_configuration": parse_trial_configuration}


def parse_document(text: str, source: str) -> Document:
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
