"""What a fault may never leave behind, read with plain SQL on a connection of the test's own.

A signed step is whole when its execution, its values, its "performed" signature and the audit entries
of all of them are stored together; a half-written record is any part without the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

# Tables whose every row the audit trail must show being created (id is the single-column key).
AUDITED_WITH_ID = ("batch", "step_execution", "recorded_value", "signature", "deviation")
LINE_CLEARANCE_FIELDS = {"area_clear", "cabinet", "started_at"}


@dataclass
class SignedStep:
    execution_id: int
    status: str
    performed_by_id: int
    signature: dict | None
    values: dict[str, str]  # field id -> text


def _t(name: str) -> sa.TableClause:
    return sa.table(name, sa.column("id"))


def half_written(conn: sa.Connection) -> list[str]:
    """Every partial record in the database: an empty list when all is whole."""
    problems: list[str] = []
    rows = conn.execute(sa.text(
        "SELECT e.id, e.performed_signature_id, s.id AS sid, s.record_type, s.record_id, s.meaning "
        "FROM step_execution e LEFT JOIN signature s ON s.id = e.performed_signature_id")).all()
    for r in rows:
        if r.sid is None:
            problems.append(f"step_execution {r.id} has no performed signature")
        elif (r.record_type, r.record_id, r.meaning) != ("step_execution", str(r.id), "performed"):
            problems.append(f"step_execution {r.id}: signature {r.sid} is for {r.record_type} {r.record_id} "
                            f"({r.meaning})")
    for r in conn.execute(sa.text(
            "SELECT s.id, s.record_id FROM signature s WHERE s.record_type = 'step_execution' AND NOT EXISTS "
            "(SELECT 1 FROM step_execution e WHERE e.performed_signature_id = s.id "
            "OR e.verified_signature_id = s.id)")):
        problems.append(f"signature {r.id} on step_execution {r.record_id} belongs to no execution")
    for r in conn.execute(sa.text(
            "SELECT v.id FROM recorded_value v JOIN step_execution e ON e.id = v.execution_id "
            "WHERE e.performed_signature_id IS NULL")):
        problems.append(f"recorded_value {r.id} belongs to an unsigned execution")
    audit = sa.table("audit_entry", sa.column("action"), sa.column("entity_type"), sa.column("entity_id"))
    for table in AUDITED_WITH_ID:
        rows_table = _t(table)
        created = sa.select(audit.c.entity_id).where(audit.c.entity_type == table,
                                                     audit.c.action == f"{table}.create")
        for (row_id,) in conn.execute(sa.select(rows_table.c.id).where(
                sa.cast(rows_table.c.id, sa.String).not_in(created))):
            problems.append(f"{table} {row_id} has no audit entry")
        for (entity_id,) in conn.execute(created.where(
                audit.c.entity_id.not_in(sa.select(sa.cast(rows_table.c.id, sa.String))))):
            problems.append(f"audit entry for {table} {entity_id}, which is not stored")
    head = conn.execute(sa.text("SELECT seq FROM audit_head WHERE id = 1")).scalar_one()
    last, count = conn.execute(sa.text("SELECT max(seq), count(*) FROM audit_entry")).one()
    if not head == last == count:
        problems.append(f"audit head {head}, last entry {last}, {count} entries")
    return problems


def line_clearance(conn: sa.Connection, batch_id: int) -> SignedStep | None:
    """DEMO-PROC's line clearance (instance 1) of a batch, as stored; ``None`` when it is not."""
    rows = conn.execute(sa.text(
        "SELECT id, status, performed_by_id, performed_signature_id FROM step_execution "
        "WHERE batch_id = :b AND step_id = 'line_clearance' AND instance = 1"), {"b": batch_id}).all()
    if not rows:
        return None
    assert len(rows) == 1, f"batch {batch_id}: {len(rows)} line clearances"
    ex = rows[0]
    signature = conn.execute(sa.text(
        "SELECT id, user_id, meaning, record_type, record_id, content_sha256 FROM signature WHERE id = :s"),
        {"s": ex.performed_signature_id}).mappings().one_or_none()
    values = dict(conn.execute(sa.text("SELECT field_id, text FROM recorded_value WHERE execution_id = :e"),
                               {"e": ex.id}).all())
    return SignedStep(ex.id, ex.status, ex.performed_by_id, dict(signature) if signature else None, values)


def assert_whole_line_clearance(conn: sa.Connection, step: SignedStep, user_id: int) -> None:
    """The step is complete, signed "performed" by ``user_id``, with all its values, each audited."""
    assert step.status == "complete", step
    assert step.performed_by_id == user_id, step
    assert step.signature is not None, f"execution {step.execution_id} without its signature"
    assert step.signature["user_id"] == user_id and step.signature["meaning"] == "performed", step
    assert (step.signature["record_type"], step.signature["record_id"]) == ("step_execution", str(step.execution_id))
    assert set(step.values) == LINE_CLEARANCE_FIELDS, step
    assert step.values["cabinet"] == "BSC-01", step
    execution, signature = str(step.execution_id), str(step.signature["id"])
    value_ids = [str(v) for v in conn.execute(sa.text("SELECT id FROM recorded_value WHERE execution_id = :e"),
                                              {"e": step.execution_id}).scalars()]
    wanted = {("step_execution.create", execution), ("signature.create", signature),
              ("step_execution.update", execution)}  # the update links the signature
    wanted |= {("recorded_value.create", v) for v in value_ids}
    found = set(conn.execute(
        sa.text("SELECT action, entity_id FROM audit_entry WHERE entity_id IN :ids")
        .bindparams(sa.bindparam("ids", expanding=True)), {"ids": sorted({e for _, e in wanted})}).all())
    assert wanted <= found, f"execution {execution}: no audit entry for {sorted(wanted - found)}"


def user_ids(conn: sa.Connection, names: list[str]) -> dict[str, int]:
    rows = conn.execute(sa.text("SELECT username, id FROM user_account")).all()
    return {name: uid for name, uid in rows if name in names}


def counts(conn: sa.Connection) -> dict[str, int]:
    """Row counts of the record tables and the audit trail (nothing stored = nothing changed here)."""
    return {table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in (*AUDITED_WITH_ID, "audit_entry")}
