"""Time `audit verify`'s state check (every audited row against the trail, issue [3.5] item 3) over a long trail.

Usage: .venv/bin/python bench/audit_state.py [--entries 1000000] [--database-url URL] [--json PATH]
Without --database-url a temporary SQLite file is used; with a PostgreSQL URL, a temporary schema.

The trail is one a plant could write: 60 % creations (material lots and equipment, each entry's ``after`` exactly
what the application records), 30 % updates of those rows (a lot's QC status, a piece of equipment's status and
calibration date) and 10 % sign-in events; the rows hold what the trail says, so the check finds nothing and
reads everything. Seeded directly (chained with ``ChainEntry.compute_hash``, head sealed), then timed end to
end: the chain and seal check (``services.audit.verify``) and the state check (``services.audit_state.check``),
each alone, then the full verify as ``flask audit verify`` runs it (``audit_anchors.verify_full(state=True)``:
the chain walked in parts by worker processes, the state check beside them), beside its read floor: the raw
driver fetching every entry (the chain's twelve columns) and every audited row, doing nothing with them
(issue [3.5] item 8: at least 0.5 of it). Figures only: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa
from _database import temporary_database  # bench/ is on sys.path when a script runs
from audit_verify import START, _read_floor, _seed, raw_read_seconds
from sqlalchemy.orm import Session

from mfg.audit_key import KEYS_INFO, create_key_file, read_key_ring
from mfg.domain.audit_chain import GENESIS_HASH, ChainEntry
from mfg.domain.canonical import canonical_json
from mfg.extensions import make_engine
from mfg.migrate import upgrade
from mfg.models import Equipment, MaterialLot
from mfg.services import audit, audit_anchors, audit_state

CHUNK = 20_000
LOT_COLUMNS = ("id", "material", "lot_number", "expiry", "qc_status", "received_at")
EQUIPMENT_COLUMNS = ("id", "identifier", "equipment_type", "description", "status", "calibration_due", "created_at")


class Plant:
    """The trail and, beside it, the rows it describes (their final values)."""

    def __init__(self) -> None:
        self.lots: dict[int, dict] = {}
        self.equipment: dict[int, dict] = {}

    def entries(self, n: int) -> Iterator[tuple[ChainEntry, str]]:
        prev = GENESIS_HASH
        for seq in range(1, n + 1):
            at = START + timedelta(microseconds=seq * 250_013)
            kind = seq % 10
            if kind in (6, 7) and not self.lots or kind == 8 and not self.equipment:
                kind = 0 if kind < 8 else 3  # nothing to update yet: create one
            if kind < 3:
                row_id = len(self.lots) + 1
                values = {"id": row_id, "material": f"Material {row_id % 40}", "lot_number": f"LOT-{row_id}",
                          "expiry": date(2027, 1, 1) + timedelta(days=row_id % 700), "qc_status": "quarantine",
                          "received_at": at}
                self.lots[row_id] = values
                entry = (f"operator{seq % 37}", "material_lot.create", "material_lot", row_id, None, values,
                         "material lot received")
            elif kind < 6:
                row_id = len(self.equipment) + 1
                values = {"id": row_id, "identifier": f"EQ-{row_id}", "equipment_type": f"type {row_id % 25}",
                          "description": "", "status": "in_service",
                          "calibration_due": date(2027, 6, 1) + timedelta(days=row_id % 365), "created_at": at}
                self.equipment[row_id] = values
                entry = (f"admin{seq % 3}", "equipment.create", "equipment", row_id, None, values, None)
            elif kind < 8:
                row_id = (seq * 7919) % len(self.lots) + 1
                before = {"qc_status": self.lots[row_id]["qc_status"]}
                after = {"qc_status": "released" if before["qc_status"] != "released" else "rejected"}
                self.lots[row_id].update(after)
                entry = (f"qa{seq % 5}", "material_lot.update", "material_lot", row_id, before, after,
                         "QC release, see certificate")
            elif kind < 9:
                row_id = (seq * 104729) % len(self.equipment) + 1
                row = self.equipment[row_id]
                before = {"status": row["status"], "calibration_due": row["calibration_due"]}
                after = {"status": "in_service" if row["status"] != "in_service" else "out_of_service",
                         "calibration_due": row["calibration_due"] + timedelta(days=365)}
                row.update(after)
                entry = (f"admin{seq % 3}", "equipment.update", "equipment", row_id, before, after, "calibrated")
            else:
                entry = (f"operator{seq % 37}", "auth.login", "user_account", seq % 37, None,
                         {"ip": f"10.0.{seq % 200}.{seq % 250}", "method": "password"}, None)
            username, action, entity_type, entity_id, before, after, reason = entry
            chained = ChainEntry(seq, at, None, username, action, entity_type, str(entity_id),
                                 None if before is None else canonical_json(before), canonical_json(after), reason,
                                 prev)
            prev = chained.compute_hash()
            yield chained, prev

    def insert_rows(self, engine: sa.Engine) -> None:
        """The rows as the application would have left them, bulk-inserted with the types' own conversions."""
        dialect = engine.dialect
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            for table, columns, rows in ((MaterialLot.__table__, LOT_COLUMNS, self.lots),
                                         (Equipment.__table__, EQUIPMENT_COLUMNS, self.equipment)):
                processors = [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns]
                values = [tuple(value if convert is None else convert(value)
                                for convert, value in zip(processors, (row[name] for name in columns), strict=True))
                          for row in rows.values()]
                marks = ", ".join(("%s" if dialect.name == "postgresql" else "?") for _ in columns)
                sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"
                for start in range(0, len(values), CHUNK):
                    cursor.executemany(sql, values[start:start + CHUNK])
            cursor.close()
            raw.commit()
        finally:
            raw.close()
        with engine.begin() as conn:
            if dialect.name == "postgresql":
                conn.execute(sa.text("ANALYZE"))


ROWS = (f"SELECT {', '.join(LOT_COLUMNS)} FROM material_lot", f"SELECT {', '.join(EQUIPMENT_COLUMNS)} FROM equipment")


def _state_read_floor(engine: sa.Engine) -> float:
    """Seconds to fetch, through the raw driver, the columns the state check reads: the create and update entries'
    four columns in sequence order, then every row of the two tables."""
    return raw_read_seconds(engine, "SELECT entity_type, entity_id, action, after FROM audit_entry WHERE action IN "
                                    "('material_lot.create', 'material_lot.update', 'equipment.create', "
                                    "'equipment.update') ORDER BY seq", *ROWS)


def _rows_read_floor(engine: sa.Engine) -> float:
    """Seconds to fetch every row of the audited tables the trail describes, through the raw driver."""
    return raw_read_seconds(engine, *ROWS)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--database-url")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    n = args.entries
    kind = "postgresql" if args.database_url else "sqlite"
    tmp = Path(tempfile.mkdtemp())
    url, drop = temporary_database(args.database_url, tmp, prefix="mfg_bench_state", sqlite_name="bench.sqlite3")
    try:
        upgrade(url)
        engine = make_engine(url)
        create_key_file(tmp / "audit.key")
        keys = read_key_ring(tmp / "audit.key")
        plant = Plant()
        start = time.perf_counter()
        _seed(engine, n, keys, plant.entries(n))
        plant.insert_rows(engine)
        seeding = time.perf_counter() - start
        rows = len(plant.lots) + len(plant.equipment)
        del plant
        rss_before = _rss_mb()

        with Session(engine, info={KEYS_INFO: keys}) as session:
            start = time.perf_counter()
            chain = audit.verify(session)
            chain_s = time.perf_counter() - start
            start = time.perf_counter()
            state = audit_state.check(session)
            state_s = time.perf_counter() - start
        with Session(engine, info={KEYS_INFO: keys}) as session:
            start = time.perf_counter()
            full = audit_anchors.verify_full(session, state=True)
            full_s = time.perf_counter() - start
        rss_state = _rss_mb()
        assert full.ok and full.result.checked == n and full.state is not None and full.state.ok, full
        # the seeded database must be intact, or the timing means nothing
        assert chain.ok and chain.checked == n, chain
        assert state.ok and state.rows_checked == rows, state.lines()[:5]
        chain_floor_s = _read_floor(engine)
        state_floor_s = _state_read_floor(engine)
        full_floor_s = chain_floor_s + _rows_read_floor(engine)
        engine.dispose()
        per_million = state_s * 1_000_000 / n
        print(f"{kind}: {n} entries and {rows} rows seeded in {seeding:.1f} s")
        print(f"{kind}: chain and seal {chain_s:.2f} s (read floor {chain_floor_s:.2f} s); state check {state_s:.2f} s "
              f"for {state.entries_read} create/update entries and {rows} rows (read floor {state_floor_s:.2f} s, "
              f"ratio {state_floor_s / state_s:.2f}); {per_million:.1f} s per million entries; whole verify "
              f"{chain_s + state_s:.2f} s")
        print(f"{kind}: full verify as `audit verify` runs it (chain in parts, state beside) {full_s:.2f} s; "
              f"read floor (every entry and every audited row) {full_floor_s:.2f} s; ratio {full_floor_s / full_s:.2f} "
              "(target at least 0.5)")
        print(f"{kind}: peak RSS {rss_before:.0f} MB after seeding, {rss_state:.0f} MB after the verifies "
              "(this process)")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "database": kind, "entries": n, "rows": rows, "state_entries": state.entries_read,
                "seeding_s": seeding, "chain_s": chain_s, "chain_read_floor_s": chain_floor_s, "state_s": state_s,
                "state_read_floor_s": state_floor_s, "ratio_to_read_floor": state_floor_s / state_s,
                "state_s_per_million_entries": per_million, "verify_total_s": chain_s + state_s,
                "full_verify_s": full_s, "full_read_floor_s": full_floor_s,
                "full_ratio_to_read_floor": full_floor_s / full_s,
                "peak_rss_mb": rss_state}, indent=2) + "\n")
    finally:
        drop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
