"""Time `audit verify` over a long trail, against the floor of hashing the same bytes with hashlib alone.

Usage: .venv/bin/python bench/audit_verify.py [--entries 1000000] [--database-url URL] [--json PATH]
Without --database-url a temporary SQLite file is used; with a PostgreSQL URL, a temporary schema.
The trail is seeded directly (bulk insert of valid chained entries hashed by ``ChainEntry.compute_hash``,
audit head set), then ``services.audit.verify`` is timed end to end. The floor is ``hashlib.sha256`` of
each entry's canonical bytes (the exact bytes ``compute_hash`` hashes), already in memory, timed in
chunks so that the bytes of a million entries are never all held at once. A second reference, the read
floor, is fetching the same columns with the raw database driver and doing nothing with them: what any
verifier that reads the trail from the database pays before it hashes a byte.

Incremental verify (issue [3.5] item 8): a sealed ``verified`` checkpoint is recorded at entry N - K of the
N-entry trail (as ``audit_anchors.record_verified`` records it), and ``audit_anchors.verify_since_last`` is
timed (it walks the last K entries, default 1,000); its reference is a full ``audit.verify`` of a trail of K
entries alone, seeded the same way in a second database. Both are run several times: the median is reported.
Figures only: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa
from _database import temporary_database  # bench/ is on sys.path when a script runs
from sqlalchemy.orm import Session

from mfg.audit_key import KEYS_INFO, create_key_file, read_key_ring
from mfg.domain.audit_chain import GENESIS_HASH, ChainEntry, ChainHead, KeyRing, seal_anchor, seal_head
from mfg.domain.canonical import canonical_json
from mfg.extensions import make_engine
from mfg.migrate import upgrade
from mfg.models import AuditCheckpoint, AuditEntry, AuditHead, utcnow
from mfg.services import audit, audit_anchors

CHUNK = 20_000
COLUMNS = ("seq", "occurred_at", "user_id", "username", "action", "entity_type", "entity_id", "before", "after",
           "reason", "prev_hash", "entry_hash")
START = datetime(2025, 1, 6, 7, 30, tzinfo=timezone.utc)


def _database(url: str | None, tmp: Path) -> tuple[str, Callable[[], None]]:
    return temporary_database(url, tmp, prefix="mfg_bench_audit", sqlite_name="bench.sqlite3")


def _entries(n: int) -> Iterator[tuple[ChainEntry, str]]:
    """A deterministic trail of plausible entries: model creations, updates with before/after, and events."""
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        at = START + timedelta(microseconds=seq * 250_013)
        kind = seq % 10
        if kind < 6:
            table = ("batch_step_value", "bag", "signature", "custody_event")[seq % 4]
            entry = ChainEntry(seq, at, None, f"operator{seq % 37}", f"{table}.create", table, str(seq // 3), None,
                               canonical_json({"id": seq // 3, "batch_id": seq // 500, "field": f"v_field_{seq % 13}",
                                               "value": f"{(seq * 7919) % 100000 / 100:.2f}", "unit": "mL",
                                               "recorded_at": at, "status": "recorded", "note": None}), None, prev)
        elif kind < 9:
            entry = ChainEntry(seq, at, None, f"qa{seq % 5}", "batch.update", "batch", str(seq // 500),
                               canonical_json({"status": "in_progress", "current_step": seq % 40}),
                               canonical_json({"status": "in_progress", "current_step": seq % 40 + 1}),
                               "step completed" if seq % 3 else "correction: transcription error, see DEV-2025-014",
                               prev)
        else:
            entry = ChainEntry(seq, at, None, f"operator{seq % 37}", "auth.login", "user_account", str(seq % 37),
                               None, canonical_json({"ip": f"10.0.{seq % 200}.{seq % 250}", "method": "password"}),
                               None, prev)
        prev = entry.compute_hash()
        yield entry, prev


def _seed(engine: sa.Engine, n: int, keys: KeyRing,
          entries: Iterator[tuple[ChainEntry, str]] | None = None) -> None:
    """Bulk-insert ``entries`` (default: ``_entries(n)``) and seal the head at the last one."""
    table = AuditEntry.__table__
    dialect = engine.dialect
    # what the application stores: the type's own conversion, then the dialect's (SQLite: text, always
    # with microseconds; the driver's default datetime adapter would drop ".000000")
    to_db = table.c.occurred_at.type.dialect_impl(dialect).bind_processor(dialect)
    batch: list[tuple] = []
    last = (0, GENESIS_HASH, None)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if dialect.name == "postgresql":
            copy_cm = cursor.copy(f"COPY audit_entry ({', '.join(COLUMNS)}) FROM STDIN")
            copy = copy_cm.__enter__()
        for entry, entry_hash in entries if entries is not None else _entries(n):
            row = (entry.seq, to_db(entry.occurred_at), entry.user_id, entry.username, entry.action, entry.entity_type,
                   entry.entity_id, entry.before, entry.after, entry.reason, entry.prev_hash, entry_hash)
            last = (entry.seq, entry_hash, entry.occurred_at)  # the generated times only move forward
            if dialect.name == "postgresql":
                copy.write_row(row)
            else:
                batch.append(row)
                if len(batch) >= CHUNK:
                    cursor.executemany(f"INSERT INTO audit_entry ({', '.join(COLUMNS)}) "
                                       f"VALUES ({', '.join('?' * len(COLUMNS))})", batch)
                    batch.clear()
        if dialect.name == "postgresql":
            copy_cm.__exit__(None, None, None)
        elif batch:
            cursor.executemany(f"INSERT INTO audit_entry ({', '.join(COLUMNS)}) "
                               f"VALUES ({', '.join('?' * len(COLUMNS))})", batch)
        cursor.close()
        raw.commit()
    finally:
        raw.close()
    with engine.begin() as conn:
        head = AuditHead.__table__
        key_id, key = keys.current  # sealed as the application seals it (the instance's audit key ring)
        seal = seal_head(key, key_id, ChainHead(last[0], last[1], last[2], None))
        conn.execute(sa.update(head).where(head.c.id == 1).values(seq=last[0], entry_hash=last[1], max_at=last[2],
                                                                  seal_key_id=key_id, seal=seal))
        if dialect.name == "postgresql":
            conn.execute(sa.text("ANALYZE audit_entry"))


def _checkpoint(engine: sa.Engine, keys: KeyRing, seq: int) -> None:
    """A sealed ``verified`` checkpoint at entry ``seq``, as ``audit_anchors.record_verified`` records it (the
    seeded times only move forward: the trail's latest time at ``seq`` is that entry's)."""
    with Session(engine) as session:
        entry_hash, at = session.execute(sa.select(AuditEntry.entry_hash, AuditEntry.occurred_at)
                                         .where(AuditEntry.seq == seq)).one()
        key_id, key = keys.current
        anchor = seal_anchor(key, key_id, ChainHead(seq, entry_hash, at, None))
        session.add(AuditCheckpoint(seq=seq, entry_hash=entry_hash, max_at=at, unordered_at=None, key_id=key_id,
                                    seal=anchor.seal, created_at=utcnow(), kind=audit_anchors.VERIFIED,
                                    created_by="bench"))
        session.commit()


def _median_seconds(engine: sa.Engine, keys: KeyRing, verify: Callable[[Session], object], expected: int,
                    runs: int) -> float:
    times = []
    for _ in range(runs):
        with Session(engine, info={KEYS_INFO: keys}) as session:
            start = time.perf_counter()
            result = verify(session)
            times.append(time.perf_counter() - start)
        checked = getattr(result, "result", result)
        assert checked.ok and checked.checked == expected, checked  # type: ignore[attr-defined]
    return statistics.median(times)


def _incremental(engine: sa.Engine, url: str | None, tmp: Path, keys: KeyRing, n: int, k: int,
                 runs: int) -> dict[str, float]:
    """verify --since-last of the last ``k`` entries of the ``n``-entry trail, against a full verify of a trail
    of ``k`` entries alone (a second database, seeded the same way)."""
    _checkpoint(engine, keys, n - k)
    since_s = _median_seconds(engine, keys, audit_anchors.verify_since_last, k, runs)
    small_tmp = tmp / "small"
    small_tmp.mkdir()
    small_url, drop_small = temporary_database(url, small_tmp, prefix="mfg_bench_audit_small",
                                               sqlite_name="bench.sqlite3")
    try:
        upgrade(small_url)
        small = make_engine(small_url)
        _seed(small, k, keys)
        small_s = _median_seconds(small, keys, audit.verify, k, runs)
        small.dispose()
    finally:
        drop_small()
    return {"incremental_entries": k, "since_last_s": since_s, "small_trail_verify_s": small_s,
            "since_last_ratio": since_s / small_s}


def _floor(n: int) -> float:
    """Seconds spent in hashlib.sha256(...).hexdigest() over every entry's canonical bytes, held in memory."""
    spent = 0.0
    entries = _entries(n)
    while True:
        chunk = [canonical_json(entry.content()).encode("utf-8") for _, (entry, _hash) in zip(range(100_000), entries,
                                                                                              strict=False)]
        if not chunk:
            return spent
        sha256 = hashlib.sha256
        start = time.perf_counter()
        for data in chunk:
            sha256(data).hexdigest()
        spent += time.perf_counter() - start


def raw_read_seconds(engine: sa.Engine, *statements: str) -> float:
    """Seconds to fetch every row of ``statements``, in turn, through the raw driver cursor, doing nothing else."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        start = time.perf_counter()
        for sql in statements:
            cursor.execute(sql)
            while cursor.fetchmany(5000):
                pass
        spent = time.perf_counter() - start
        cursor.close()
        return spent
    finally:
        raw.close()


def _read_floor(engine: sa.Engine) -> float:
    """Seconds to fetch every row of the chain columns through the raw driver cursor, doing nothing else."""
    return raw_read_seconds(engine, f"SELECT {', '.join(COLUMNS)} FROM audit_entry ORDER BY seq")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--database-url")
    parser.add_argument("--profile", action="store_true", help="also run verify under cProfile and print the top")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--incremental", type=int, default=1000,
                        help="new entries after the checkpoint for the since-last figure (0: skip it)")
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each small verify (median)")
    args = parser.parse_args()
    n = args.entries
    kind = "postgresql" if args.database_url else "sqlite"
    tmp = Path(tempfile.mkdtemp())
    url, drop = _database(args.database_url, tmp)
    try:
        upgrade(url)
        engine = make_engine(url)
        create_key_file(tmp / "audit.key")
        keys = read_key_ring(tmp / "audit.key")
        start = time.perf_counter()
        _seed(engine, n, keys)
        seeding = time.perf_counter() - start
        rss_before = _rss_mb()

        with Session(engine, info={KEYS_INFO: keys}) as session:
            start = time.perf_counter()
            result = audit.verify(session)
            verify_s = time.perf_counter() - start
        rss_verify = _rss_mb()
        assert result.ok and result.checked == n, result  # the seeded trail must be intact, or the timing means nothing

        if args.profile:
            import cProfile
            import pstats
            with Session(engine, info={KEYS_INFO: keys}) as session, cProfile.Profile() as profile:
                audit.verify(session)
            pstats.Stats(profile).sort_stats("tottime").print_stats(15)

        incremental = _incremental(engine, args.database_url, tmp, keys, n, args.incremental, args.runs) \
            if 0 < args.incremental < n else {}

        read_s = _read_floor(engine)
        floor_s = _floor(n)
        engine.dispose()
        verify_rate, floor_rate, read_rate = n / verify_s, n / floor_s, n / read_s
        print(f"{kind}: {n} entries seeded in {seeding:.1f} s ({n / seeding:,.0f} entries/s)")
        print(f"{kind}: audit verify {verify_s:.2f} s = {verify_rate:,.0f} entries/s; "
              f"floor (hashlib.sha256 of the same canonical bytes, in memory) {floor_s:.2f} s = "
              f"{floor_rate:,.0f} entries/s; ratio {verify_rate / floor_rate:.3f}")
        print(f"{kind}: read floor (raw driver fetch of the same rows, nothing else) {read_s:.2f} s = "
              f"{read_rate:,.0f} entries/s = {read_rate / floor_rate:.3f} of the hashing floor")
        print(f"{kind}: peak RSS {rss_before:.0f} MB after seeding, {rss_verify:.0f} MB after verify")
        if incremental:
            print(f"{kind}: verify --since-last of {args.incremental} new entries on the {n}-entry trail "
                  f"{incremental['since_last_s'] * 1000:.1f} ms; full verify of a {args.incremental}-entry trail "
                  f"{incremental['small_trail_verify_s'] * 1000:.1f} ms (medians of {args.runs}); ratio "
                  f"{incremental['since_last_ratio']:.2f} (target at most 2)")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "database": kind, "entries": n, "seeding_s": seeding, "verify_s": verify_s,
                "verify_entries_per_s": verify_rate, "hash_floor_s": floor_s, "hash_floor_entries_per_s": floor_rate,
                "ratio_to_hash_floor": verify_rate / floor_rate, "read_floor_s": read_s,
                "read_floor_entries_per_s": read_rate, "peak_rss_mb": rss_verify, **incremental}, indent=2) + "\n")
    finally:
        drop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
