"""Which steps of a batch may be done now (21 CFR 11.10(f): enforce the permitted sequence).

Rules, all from the master records a batch pins, in their order:
- Stages run in order: a stage opens when every earlier stage is complete.
- Within a stage, steps run in the order written, except steps marked ``parallel``, which may be done
  at any time while their stage is open.
- A step lets the next one start once it is *performed* (signed, and not waiting to be signed again
  after a correction); second-person verification may follow later,
  but a stage is *complete* only when each of its steps has its minimum number of instances performed
  and, where required, verified, and no instance waits for a new signature after a correction.
- A repeatable step's next instance opens when the previous one is performed, up to ``repeat.max``,
  and only until a later stage of its record is started.
  A step with ``repeat.count`` is done exactly as many times as that recorded number says (``counts``,
  resolved by the service; at most ``repeat.max``); until the number is recorded, min and max apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import InvalidTransition
from .sop_schema import MasterRecord, Stage, Step
from .status import TransitionTable

STEP_STATUS = TransitionTable("A step", {
    "awaiting_verification": {"complete": "verify", "needs_signature": "correct a value"},
    "complete": {"needs_signature": "correct a value"},
    "needs_signature": {"awaiting_verification": "sign again", "complete": "sign again",
                        "needs_signature": "correct another value"},
})


@dataclass(frozen=True)
class StepRef:
    """A step of a batch: which pinned master record (by position) and which step id."""

    position: int
    step_id: str


@dataclass(frozen=True)
class InstanceState:
    instance: int
    status: str  # STEP_STATUS keys


@dataclass(frozen=True)
class Open:
    """A step instance that may be performed now."""

    ref: StepRef
    stage: Stage
    step: Step
    instance: int


Counts = Mapping[StepRef, int]
"""For steps with ``repeat.count``: how many instances the recorded number asks for."""


def _needed(ref: StepRef, step: Step, counts: Counts) -> int:
    if step.repeat is None:
        return 1
    return min(counts.get(ref, step.repeat.min), step.repeat.max)


def _limit(ref: StepRef, step: Step, counts: Counts) -> int:
    if step.repeat is None:
        return 1
    return min(counts.get(ref, step.repeat.max), step.repeat.max)


def _stage_complete(position: int, stage: Stage, done: Mapping[StepRef, Sequence[InstanceState]],
                    counts: Counts) -> bool:
    for step in stage.steps:
        states = done.get(StepRef(position, step.id), ())
        needed = _needed(StepRef(position, step.id), step, counts)
        if sum(1 for s in states if s.status == "complete") < needed:
            return False
        if any(s.status != "complete" for s in states):
            return False
    return True


def _performed(states: Sequence[InstanceState], needed: int) -> bool:
    """Enough instances carry a standing "Performed by" signature (one waiting to be signed again does not)."""
    signed = sum(1 for s in states if s.status in ("awaiting_verification", "complete"))
    return signed >= needed


def open_steps(records: Sequence[MasterRecord], done: Mapping[StepRef, Sequence[InstanceState]],
               counts: Counts | None = None) -> list[Open]:
    """Every step instance that may be performed now, in master record order."""
    counts = counts or {}
    result: list[Open] = []
    for position, record in enumerate(records):
        # once a later stage has been started, the steps of earlier stages take no more instances (no
        # feed after the harvest); within a stage, repeated steps may interleave (feeds and counts)
        started = [number for number, stage in enumerate(record.stages)
                   if any(done.get(StepRef(position, step.id)) for step in stage.steps)]
        last_started = max(started, default=-1)
        for number, stage in enumerate(record.stages):
            blocked = False
            for step in stage.steps:
                ref = StepRef(position, step.id)
                states = done.get(ref, ())
                if (not blocked or step.parallel) and number >= last_started:
                    if len(states) < _limit(ref, step, counts):
                        result.append(Open(ref, stage, step, len(states) + 1))
                if not step.parallel and not _performed(states, _needed(ref, step, counts)):
                    blocked = True
            if not _stage_complete(position, stage, done, counts):
                return result
    return result


def all_complete(records: Sequence[MasterRecord], done: Mapping[StepRef, Sequence[InstanceState]],
                 counts: Counts | None = None) -> bool:
    return all(_stage_complete(position, stage, done, counts or {})
               for position, record in enumerate(records) for stage in record.stages)


def find_open(records: Sequence[MasterRecord], done: Mapping[StepRef, Sequence[InstanceState]],
              ref: StepRef, instance: int, counts: Counts | None = None) -> Open | None:
    """The open step instance ``ref``/``instance``, or None when it is not open now."""
    return next((item for item in open_steps(records, done, counts)
                 if item.ref == ref and item.instance == instance), None)


def not_open(ref: StepRef, instance: int, done: Mapping[StepRef, Sequence[InstanceState]]) -> str:
    """Why ``ref``/``instance`` is not open (for a guard), given that :func:`find_open` found it closed."""
    if any(s.instance == instance for s in done.get(ref, ())):
        return f"step '{ref.step_id}' #{instance} has already been performed"
    return (f"step '{ref.step_id}' #{instance} is not open yet: earlier steps of the master record must be "
            "performed first")


def require_open(records: Sequence[MasterRecord], done: Mapping[StepRef, Sequence[InstanceState]],
                 ref: StepRef, instance: int, counts: Counts | None = None) -> Open:
    """The open step instance ``ref``/``instance``, or a refusal that says why it is not open."""
    found = find_open(records, done, ref, instance, counts)
    if found is None:
        raise InvalidTransition(not_open(ref, instance, done))
    return found
