"""A batch's pinned master records and what has been executed: the reads every batch service shares.

The parsed master records of a batch (cached by sha256: versions are immutable), its step executions,
which step instances are done and which are open in the master records' sequence, who performed a step.
Nothing here writes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain import sequence
from ..domain.errors import NotFound
from ..domain.signing import Meaning
from ..domain.sop_schema import MasterRecord, Step, parse_definition, step_index
from ..models import Batch, Signature, SopVersion, StepExecution


@lru_cache(maxsize=64)
def _parse(sha256: str, content: str, source: str) -> MasterRecord:
    return parse_definition(content, source)


def definition_of(version: SopVersion) -> MasterRecord:
    """The parsed master record of a stored version (cached by its sha256: versions are immutable)."""
    return _parse(version.sha256, version.content, version.source_name)


def records(batch: Batch) -> list[MasterRecord]:
    return [definition_of(pin.sop_version) for pin in batch.master_records]


def get(session: Session, batch_id: int) -> Batch:
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise NotFound(f"no batch with id {batch_id}")
    return batch


def by_lot(session: Session, lot: str) -> Batch:
    batch = session.scalar(sa.select(Batch).where(Batch.lot == lot))
    if batch is None:
        raise NotFound(f"no batch with lot {lot}")
    return batch


def executions(session: Session, batch: Batch) -> list[StepExecution]:
    return list(session.scalars(sa.select(StepExecution).where(StepExecution.batch_id == batch.id)
                                .order_by(StepExecution.id)))


def position_of(batch: Batch, sop_version_id: int) -> int:
    return next(p.position for p in batch.master_records if p.sop_version_id == sop_version_id)


def state(session: Session, batch: Batch) -> dict[sequence.StepRef, list[sequence.InstanceState]]:
    return progress(session, batch)[0]


def progress(session: Session, batch: Batch) -> tuple[dict[sequence.StepRef, list[sequence.InstanceState]],
                                                      dict[sequence.StepRef, int]]:
    """The performed instances of every step, and the recorded counts of steps with ``repeat.count``."""
    return progress_from(batch, executions(session, batch))


def progress_from(batch: Batch, found: Sequence[StepExecution | sa.Row]) -> tuple[
        dict[sequence.StepRef, list[sequence.InstanceState]], dict[sequence.StepRef, int]]:
    """``progress`` from executions already loaded (with their values, for the counts): ORM objects, or plain
    rows (``batch_pages``) for the executions whose values no count reads."""
    done: dict[sequence.StepRef, list[sequence.InstanceState]] = defaultdict(list)
    for ex in found:
        done[sequence.StepRef(position_of(batch, ex.sop_version_id), ex.step_id)].append(
            sequence.InstanceState(ex.instance, ex.status))
    counts: dict[sequence.StepRef, int] = {}
    for position, record in enumerate(records(batch)):
        for _stage, step in step_index(record).values():
            if step.repeat is None or step.repeat.count is None:
                continue
            ref_step, ref_field = step.repeat.count.split(".")
            version_id = batch.master_records[position].sop_version_id
            for ex in found:
                if ex.sop_version_id == version_id and ex.step_id == ref_step:
                    value = ex.current_values().get(ref_field)
                    if value is not None and value.number is not None:
                        counts[sequence.StepRef(position, step.id)] = int(value.number)
    return done, counts


def open_steps(session: Session, batch: Batch) -> list[sequence.Open]:
    if batch.status not in ("created", "in_progress"):
        return []
    return sequence.open_steps(records(batch), *progress(session, batch))


def step_of(batch: Batch, execution: StepExecution) -> tuple[int, Step]:
    position = position_of(batch, execution.sop_version_id)
    return position, step_index(records(batch)[position])[execution.step_id][1]


def performers(session: Session, execution: StepExecution) -> set[int]:
    """Everyone who ever signed this step "Performed by" (original or after a correction)."""
    return set(session.scalars(sa.select(Signature.user_id).where(
        Signature.record_type == StepExecution.__tablename__, Signature.record_id == str(execution.id),
        Signature.meaning == Meaning.PERFORMED.value)))


def find_execution(session: Session, batch: Batch, position: int, step_id: str, instance: int) -> StepExecution | None:
    return session.scalar(sa.select(StepExecution).where(
        StepExecution.batch_id == batch.id,
        StepExecution.sop_version_id == batch.master_records[position].sop_version_id,
        StepExecution.step_id == step_id, StepExecution.instance == instance))


def get_execution(session: Session, batch: Batch, execution_id: int) -> StepExecution:
    execution = session.get(StepExecution, execution_id)
    if execution is None or execution.batch_id != batch.id:
        raise NotFound(f"no step execution {execution_id} in batch {batch.lot}")
    return execution


def open_from(batch: Batch, found: Sequence[StepExecution | sa.Row]) -> list[sequence.Open]:
    """``open_steps`` from executions already loaded."""
    if batch.status not in ("created", "in_progress"):
        return []
    return sequence.open_steps(records(batch), *progress_from(batch, found))
