"""The permitted sequence (21 CFR 11.10(f)) with a step repeated as many times as a recorded number says."""

from __future__ import annotations

import yaml

from mfg.domain import sequence
from mfg.domain.sequence import InstanceState, StepRef
from mfg.domain.sop_schema import parse_definition

RECORD = parse_definition(yaml.safe_dump({
    "kind": "master_batch_record", "code": "SEQ", "version": 1, "title": "Sequence",
    "stages": [
        {"id": "fill", "title": "Fill", "steps": [
            {"id": "bags", "title": "Fill bags",
             "fields": [{"id": "count", "type": "integer", "label": "Bags", "unit": "bags"}]},
            {"id": "scan", "title": "Scan each bag", "repeat": {"max": 6, "count": "bags.count", "label": "Bag"},
             "fields": []}]},
        {"id": "end", "title": "End", "steps": [{"id": "inspect", "title": "Inspect", "fields": []}]},
    ]}), "seq.yaml")

BAGS, SCAN, INSPECT = StepRef(0, "bags"), StepRef(0, "scan"), StepRef(0, "inspect")


def _open(done, counts):
    return [(item.ref.step_id, item.instance) for item in sequence.open_steps([RECORD], done, counts)]


def test_a_counted_step_is_done_exactly_as_many_times_as_recorded() -> None:
    done = {BAGS: [InstanceState(1, "complete")], SCAN: [InstanceState(1, "complete")]}
    counts = {SCAN: 2}
    # one bag of two scanned: the second opens, the next stage does not
    assert _open(done, counts) == [("scan", 2)]
    done[SCAN].append(InstanceState(2, "complete"))
    # both scanned: no third instance although repeat.max is 6, and the next stage opens
    assert _open(done, counts) == [("inspect", 1)]
    assert not sequence.all_complete([RECORD], done, counts)
    done[INSPECT] = [InstanceState(1, "complete")]
    assert sequence.all_complete([RECORD], done, counts)


def test_without_the_count_min_and_max_apply() -> None:
    done = {BAGS: [InstanceState(1, "complete")], SCAN: [InstanceState(1, "complete")]}
    assert _open(done, {}) == [("scan", 2), ("inspect", 1)]  # min 1 met, max 6 not reached
    assert ("scan", 2) not in _open(done, {SCAN: 1})


def test_a_repeated_step_closes_once_a_later_stage_is_started() -> None:
    done = {BAGS: [InstanceState(1, "complete")], SCAN: [InstanceState(1, "awaiting_verification")]}
    assert _open(done, {}) == [("scan", 2)]  # the stage waits for the verification
    done[SCAN] = [InstanceState(1, "complete")]
    done[INSPECT] = [InstanceState(1, "complete")]
    assert _open(done, {}) == []  # no scan #2 after the inspection, although max is 6
