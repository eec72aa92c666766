"""Page latency and SQL statements per page at scale (issue 6): the work queue and batch list, the batch
page and the QA audit trail screen, with years of batches and a long audit trail behind them.

Usage: .venv/bin/python bench/pages.py [--batches 10000] [--audit-entries 1000000] [--active 36]
                                       [--requests 50] [--warmup 5] [--database-url URL] [--json PATH]
                                       [--gc-freeze] [--profile NAME]

Without --database-url a temporary SQLite file is used; with a PostgreSQL URL, a temporary schema that
is dropped at the end.

Seeding, in this order:
1. the audit trail: ``--audit-entries`` valid chained entries by bench/audit_verify.py's generator and
   seeder (bulk insert, audit head set), so everything the services write afterwards chains onto it;
2. one template NK batch through the real services with real e-signatures (the demo accounts, master
   records and master data of ``init --demo``; ``demo_nk.run_nk_batch`` from intake to the end of
   formulation, a deviation opened by hand, investigated and closed, review marks and QA's signed
   decision);
3. bulk Core inserts of copies of that batch's rows with new ids, lots/DINs, subjects and donors, times
   shifted back: ``--batches`` in all, of which ``--active`` are undecided (copies of a prefix of the
   template's executions: just started, part-way with the last step waiting for its verification, or
   awaiting review) and the rest decided history over the last three years (mostly released, some
   conditionally released, a few rejected). Copies carry no audit entries of their own (the seeded trail
   stands in for them); a copied signature keeps the template's signed content.

Each page is then requested in this process through the Flask test client, signed in as the user who
uses it (operator2, who may verify operator1's steps, for the batch screens; qa1 for the audit trail):
``--warmup`` requests, then ``--requests`` timed ones; p50/p95/max of the wall time and the number of SQL
statements of each request (``before_cursor_execute`` on the app's engine, as
tests/web/test_query_counts.py counts them). The pages: /batches/ (work queue, active batches and the
first page of decided batches), an active and a decided batch's page, and /audit/ unfiltered, by user
(one with many entries, one with few), by record, by action prefix (common and rare), by date, and older
pages through the keyset cursor the screen links to. PostgreSQL tables are ANALYZEd after seeding
(autovacuum would do it on a live database); SQLite gets no ANALYZE (as a live file would not).

A full collection of the process's long-lived objects (about 200,000 after start-up, 70-140 ms on this
machine) lands in whichever request triggers it; ``--gc-freeze`` calls gc.freeze() before measuring, as a
server could once started, to show the figures without it. ``--profile NAME`` profiles the pages whose
name contains NAME. Figures only: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import audit_verify  # the audit trail generator and seeder (bench/audit_verify.py)
import sqlalchemy as sa
from _database import temporary_database  # bench/ is on sys.path when a script runs

from mfg import create_app
from mfg.audit_key import create_key_file, read_key_ring
from mfg.config import RESOURCE_ROOT
from mfg.demo import nk_batch as demo_nk
from mfg.demo import seed as demo
from mfg.domain import isbt128
from mfg.extensions import db, make_engine
from mfg.migrate import upgrade
from mfg.models import (
    AuditEntry,
    Base,
    Batch,
    BatchDecision,
    BatchMasterRecord,
    Counter,
    Deviation,
    Donor,
    DonorTest,
    ProductBag,
    RecordedValue,
    ReviewMark,
    Signature,
    StepExecution,
    Subject,
    UTCDateTime,
)
from mfg.services import accounts, audit, deviations, review

FIN = "X9999"
HISTORY_YEARS = 3
FLUSH_ROWS = 50_000
# Decisions of the history batches, by share (the rest are released).
CONDITIONAL_EVERY, REJECTED_EVERY = 7, 20
# Active batches: copies of the first fraction of the template's executions (0: just started; 1: awaiting review).
ACTIVE_CUTS = (0.0, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0)


def _database(url: str | None, tmp: Path) -> tuple[str, Callable[[], None]]:
    return temporary_database(url, tmp, prefix="mfg_bench_pages", sqlite_name="mfg.sqlite3")


# ---------------------------------------------------------------- the template batch, through the services

def _template(app) -> int:
    """The demo set-up, then one NK batch from intake to QA's decision, with a closed deviation. Its id."""
    password = demo.DEMO_PASSWORD
    tz = ZoneInfo(app.config["SITE_TIMEZONE"])
    with app.app_context():
        s = db.session
        demo.seed_users(s, accounts.Policy())
        s.commit()
        demo.seed_master_records(s, Path(app.config["SOPS_DIR"]), site_timezone=app.config["SITE_TIMEZONE"])
        s.commit()
        demo.seed_master_data(s)
        s.commit()
        users = {name: accounts.get_by_username(s, name) for name in ("operator1", "operator2", "qa1", "clinical1")}
        subject = demo_nk.seed_demo_subject(s, users["clinical1"], password)
        batch = demo_nk.run_nk_batch(s, subject=subject, performer=users["operator1"], verifier=users["operator2"],
                                     password=password, tz=tz)
        s.commit()
        qa = users["qa1"]
        audit.set_actor(s, qa)
        deviation = deviations.open_by_hand(s, batch, description="Incubator door alarm for 4 min on culture day 9; "
                                        "temperature stayed within 36.5-37.5 C.", user=qa)
        deviations.investigate(s, deviation, classification="minor", investigation="Alarm log and temperature trace "
                           "reviewed.", root_cause="Door not fully closed after feeding.", impact="None: temperature "
                           "within limits throughout.", capa_reference="", user=qa)
        deviations.close(s, deviation, signer=qa, password=password, username="qa1", require_username=True)
        for item in review.exceptions(s, batch):
            review.mark_reviewed(s, batch, item.key, user=qa, comment="reviewed")
        review.decide(s, batch, decision="conditionally_released", comment="sterility pending", signer=qa,
                      password=password, username="qa1", require_username=True)
        s.commit()
        return batch.id


# ---------------------------------------------------------------- bulk copies

# Columns that point at another copied row, and the table they point into.
REFERENCES = {"batch_id": "batch", "execution_id": "step_execution", "supersedes_id": "recorded_value",
              "performed_signature_id": "signature", "verified_signature_id": "signature",
              "dose_signature_id": "signature", "donor_id": "donor", "subject_id": "subject"}


def _same(value):
    return value


def _put(out: list, index: dict[str, int], process: dict, column: str, value) -> None:
    out[index[column]] = process[column](value)


class _Rows:
    """Template rows of one table, bind-processed for the target dialect once (the columns that differ from
    copy to copy are listed per row: ids, references, times and dates)."""

    def __init__(self, table: sa.Table, rows: list[dict], dialect: sa.Dialect) -> None:
        self.table, self.rows = table, rows
        self.columns = [c.name for c in table.c]
        self.index = {name: i for i, name in enumerate(self.columns)}
        self.process = {c.name: c.type.dialect_impl(dialect).bind_processor(dialect) or _same for c in table.c}
        self.base = [[self.process[name](row[name]) for name in self.columns] for row in rows]
        self.id_slot = self.index.get("id")
        times = [c.name for c in table.c if isinstance(c.type, UTCDateTime)]
        dates_ = [c.name for c in table.c if type(c.type) is sa.Date]
        self.references = [[(self.index[c], REFERENCES[c], row[c]) for c in self.columns
                            if c in REFERENCES and row[c] is not None] for row in rows]
        # a time is shifted after UTCDateTime's own step (to UTC, naive on SQLite), which shifting commutes with
        decorated = {c: table.c[c].type.dialect_impl(dialect) for c in times}
        impl_to_db = {c: decorated[c].impl.dialect_impl(dialect).bind_processor(dialect) or _same for c in times}
        self.times = [[(self.index[c], decorated[c].process_bind_param(row[c], dialect), impl_to_db[c])
                       for c in times if row[c] is not None] for row in rows]
        self.dates = [[(self.index[c], row[c], self.process[c]) for c in dates_ if row[c] is not None] for row in rows]


class _Writer:
    """Buffers rows per table and writes them in bulk: COPY on PostgreSQL, executemany on SQLite."""

    def __init__(self, engine: sa.Engine) -> None:
        self.raw = engine.raw_connection()
        self.postgres = engine.dialect.name == "postgresql"
        self.pending: dict[str, tuple[list[str], list[list]]] = {}
        self.written: dict[str, int] = defaultdict(int)
        self.order = [t.name for t in Base.metadata.sorted_tables]  # parents before children

    def add(self, table: str, columns: list[str], row: list) -> None:
        self.pending.setdefault(table, (columns, []))[1].append(row)

    def size(self) -> int:
        return sum(len(rows) for _columns, rows in self.pending.values())

    def flush(self) -> None:
        cursor = self.raw.cursor()
        for name in sorted(self.pending, key=self.order.index):  # signatures before the executions naming them
            columns, rows = self.pending[name]
            if not rows:
                continue
            names = ", ".join(columns)
            if self.postgres:
                with cursor.copy(f"COPY {name} ({names}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cursor.executemany(f"INSERT INTO {name} ({names}) VALUES ({', '.join('?' * len(columns))})", rows)
            self.written[name] += len(rows)
            rows.clear()
        cursor.close()

    def close(self) -> None:
        self.flush()
        self.raw.commit()
        self.raw.close()


class _Copier:
    """Copies of the template batch (or of a prefix of its executions) with new ids and identities."""

    def __init__(self, engine: sa.Engine, batch_id: int) -> None:
        self.engine, self.dialect = engine, engine.dialect
        with engine.connect() as conn:
            def rows(model, *where) -> list[dict]:
                table = model.__table__
                query = sa.select(table).where(*where).order_by(*table.primary_key.columns)
                return [dict(row._mapping) for row in conn.execute(query)]

            batch = rows(Batch, Batch.id == batch_id)[0]
            executions = rows(StepExecution, StepExecution.batch_id == batch_id)
            ex_ids = [ex["id"] for ex in executions]
            subject = rows(Subject, Subject.id == batch["subject_id"])[0]
            deviations = rows(Deviation, Deviation.batch_id == batch_id)
            decisions = rows(BatchDecision, BatchDecision.batch_id == batch_id)
            signed = [("step_execution", ex_ids), ("deviation", [d["id"] for d in deviations]),
                      ("batch_decision", [d["id"] for d in decisions]), ("subject", [subject["id"]])]
            self.t = {
                "batch": [batch],
                "batch_master_record": rows(BatchMasterRecord, BatchMasterRecord.batch_id == batch_id),
                "step_execution": executions,
                "recorded_value": rows(RecordedValue, RecordedValue.execution_id.in_(ex_ids)),
                "signature": rows(Signature, sa.or_(*(sa.and_(Signature.record_type == kind,
                                                              Signature.record_id.in_([str(i) for i in ids]))
                                                      for kind, ids in signed if ids))),
                "deviation": deviations,
                "product_bag": rows(ProductBag, ProductBag.batch_id == batch_id),
                "review_mark": rows(ReviewMark, ReviewMark.batch_id == batch_id),
                "batch_decision": decisions,
                "subject": [subject],
                "donor": rows(Donor, Donor.id == subject["donor_id"]),
                "donor_test": rows(DonorTest, DonorTest.donor_id == subject["donor_id"]),
            }
            self.next_id = {name: (conn.scalar(sa.select(sa.func.max(Base.metadata.tables[name].c.id))) or 0) + 1
                            for name in self.t if "id" in Base.metadata.tables[name].c}
            self.counters = {row.name: row.value for row in conn.execute(sa.select(Counter.__table__))}
        self.rows = {name: _Rows(Base.metadata.tables[name], found, self.dialect) for name, found in self.t.items()}
        self.created_at: datetime = batch["created_at"]
        # date-times as the operator typed them (site time, to the minute), read once
        self.typed = {i: datetime.strptime(row["raw"], "%Y-%m-%d %H:%M")
                      for i, row in enumerate(self.t["recorded_value"]) if row["field_type"] == "datetime"}
        self.din, self.coi = batch["din"], subject["coi"]
        self.subject_code, self.donor_code = subject["code"], self.t["donor"][0]["code"]
        self.copies = 0

    def _next(self, counter: str) -> int:
        self.counters[counter] = self.counters.get(counter, 0) + 1
        return self.counters[counter]

    def copy(self, writer: _Writer, *, created_at: datetime, cut: float | None, decision: str | None) -> None:
        """One batch: every row of the template (``cut`` None) or its first ``cut`` of executions."""
        self.copies += 1
        shift = created_at - self.created_at
        days = timedelta(days=shift.days)
        year = created_at.year % 100
        din = isbt128.make_din(FIN, year, self._next(f"din:{FIN}:{year:02d}")).text
        coi = isbt128.CoiId(FIN, year, self._next(f"coi:{FIN}:{year:02d}")).text
        number = self.copies + 1
        texts = {self.din: din, self.coi: coi}
        identities = re.compile("|".join(re.escape(old) for old in sorted(texts, key=len, reverse=True)))

        executions = self.t["step_execution"]
        if cut is not None:
            executions = executions[:round(len(executions) * cut)]
        kept_ex = {ex["id"] for ex in executions}
        waiting = None  # the last execution, left waiting for its verification
        if cut is not None and 0 < len(executions) < len(self.t["step_execution"]) \
                and executions[-1]["verified_signature_id"] is not None:
            waiting = executions[-1]["id"]
        status = decision or ("created" if not executions else "awaiting_review"
                              if len(executions) == len(self.t["step_execution"]) else "in_progress")

        def keep(name: str, row: dict) -> bool:
            if name == "step_execution":
                return row["id"] in kept_ex
            if name == "recorded_value":
                return row["execution_id"] in kept_ex
            if name == "product_bag":
                return row["execution_id"] in kept_ex
            if name in ("deviation", "review_mark", "batch_decision"):
                return cut is None
            if name == "signature":
                kind, record = row["record_type"], int(row["record_id"])
                if kind == "step_execution":
                    return record in kept_ex and not (record == waiting and row["meaning"] == "verified")
                return kind == "subject" or cut is None
            return True

        kept = {name: [(i, row) for i, row in enumerate(self.t[name]) if keep(name, row)] for name in self.t}
        ids: dict[str, dict[int, int]] = {}
        for name, found in kept.items():
            if name in self.next_id:
                start = self.next_id[name]
                ids[name] = {row["id"]: start + n for n, (_i, row) in enumerate(found)}
                self.next_id[name] = start + len(found)

        for name, found in kept.items():
            rows_ = self.rows[name]
            columns, index, process, own = rows_.columns, rows_.index, rows_.process, ids.get(name)
            for i, row in found:
                out = rows_.base[i].copy()
                put = partial(_put, out, index, process)
                if own is not None:
                    out[rows_.id_slot] = own[row["id"]]
                loose = name == "step_execution" and row["id"] == waiting  # its verification is not copied
                for slot, table, value in rows_.references[i]:
                    out[slot] = ids[table].get(value) if loose else ids[table][value]
                for slot, value, to_db in rows_.times[i]:
                    out[slot] = to_db(value + shift)
                for slot, value, to_db in rows_.dates[i]:
                    out[slot] = to_db(value + days)
                if name == "batch":
                    put("lot", din), put("din", din), put("status", status)
                elif name == "subject":
                    put("code", f"NK-{number:03d}"), put("coi", coi)
                elif name == "donor":
                    put("code", f"NK-DONOR-{number:03d}")
                elif name == "step_execution" and row["id"] == waiting:
                    put("status", "awaiting_verification"), put("verified_signature_id", None)
                elif name == "recorded_value":
                    if row["field_type"] == "datetime" and row["moment"] is not None:
                        moment = row["moment"] + shift
                        put("text", moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
                        put("raw", (self.typed[i] + shift).strftime("%Y-%m-%d %H:%M"))
                    elif row["field_type"] == "scan":
                        put("raw", identities.sub(lambda m: texts[m.group(0)], row["raw"]))
                        put("text", identities.sub(lambda m: texts[m.group(0)], row["text"]))
                elif name == "signature":
                    record_type = row["record_type"]
                    put("record_id", str(ids[record_type][int(row["record_id"])]))
                    if record_type == "batch_decision" and decision == "rejected":
                        put("meaning", "rejected")
                elif name == "deviation":
                    put("number", f"DEV-{created_at.year}-{self._next(f'deviation:{created_at.year}'):04d}")
                elif name == "review_mark":
                    kind, _, record = row["item_key"].partition(":")
                    table = {"value": "recorded_value", "correction": "recorded_value", "pending": "recorded_value",
                             "deviation": "deviation"}.get(kind)
                    if table is not None:
                        put("item_key", f"{kind}:{ids[table][int(record)]}")
                elif name == "batch_decision":
                    put("decision", decision)
                    if decision != "conditionally_released":
                        put("pending", None)
                writer.add(name, columns, out)

    def finish(self, conn: sa.Connection) -> None:
        """Counters past every copied DIN, COI and deviation number; PostgreSQL sequences past every id."""
        table = Counter.__table__
        existing = {row.name for row in conn.execute(sa.select(table.c.name))}
        for name, value in self.counters.items():
            if name in existing:
                conn.execute(sa.update(table).where(table.c.name == name).values(value=value))
            else:
                conn.execute(sa.insert(table).values(name=name, value=value))
        if conn.dialect.name == "postgresql":
            for name in self.next_id:
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                     f"(SELECT max(id) FROM {name}))"))


def _copies(engine: sa.Engine, template_id: int, n_batches: int, n_active: int) -> dict[str, int]:
    copier = _Copier(engine, template_id)
    writer = _Writer(engine)
    now = copier.created_at
    history = max(n_batches - n_active - 1, 0)
    oldest = now - timedelta(days=365 * HISTORY_YEARS)
    newest = now - timedelta(days=21)
    for k in range(history):  # oldest first: ids grow with time, as they would have
        created = oldest + (newest - oldest) * (k / max(history - 1, 1))
        decision = ("rejected" if k % REJECTED_EVERY == REJECTED_EVERY - 1 else
                    "conditionally_released" if k % CONDITIONAL_EVERY == 0 else "released")
        copier.copy(writer, created_at=created, cut=None, decision=decision)
        if writer.size() >= FLUSH_ROWS:
            writer.flush()
    for k in range(n_active):  # started over the last three weeks, every stage represented
        copier.copy(writer, created_at=now - timedelta(hours=(n_active - k) * 14),
                    cut=ACTIVE_CUTS[k % len(ACTIVE_CUTS)], decision=None)
        if writer.size() >= FLUSH_ROWS:
            writer.flush()
    writer.close()
    with engine.begin() as conn:
        copier.finish(conn)
    return dict(writer.written)


# ---------------------------------------------------------------- measuring

def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


class _Counter:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine, self.statements = engine, 0

    def __call__(self, *_args) -> None:
        self.statements += 1

    def __enter__(self) -> _Counter:
        sa.event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *_exc) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self)


def measure(app, client, url: str, *, requests: int, warmup: int) -> dict:
    engine = app.extensions["mfg.db"].engine
    for _ in range(warmup):
        response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}: the figures would mean nothing")
    times, queries = [], []
    size = 0
    for _ in range(requests):
        with _Counter(engine) as counted:
            start = time.perf_counter()
            response = client.get(url)
            size = len(response.get_data())
            times.append((time.perf_counter() - start) * 1000)
        queries.append(counted.statements)
    return {"url": url, "p50_ms": round(statistics.median(times), 1), "p95_ms": round(_percentile(times, 0.95), 1),
            "max_ms": round(max(times), 1), "queries": max(queries), "queries_min": min(queries), "bytes": size}


def _login(client, username: str) -> None:
    client.post("/auth/logout")
    response = client.post("/auth/login", data={"username": username, "password": demo.DEMO_PASSWORD})
    if response.status_code != 302:
        raise SystemExit(f"signing in as {username} failed ({response.status_code})")


def _pages(engine: sa.Engine) -> dict[str, tuple[str, str]]:
    """name -> (user, url), picked from the seeded data."""
    with engine.connect() as conn:
        active = conn.scalars(sa.select(Batch.id).where(Batch.status == "in_progress").order_by(Batch.id.desc())
                              .limit(1)).one()
        released = sa.select(Batch.id).where(Batch.status == "released")
        middle = conn.scalar(sa.select(sa.func.count()).select_from(released.subquery())) // 2
        history = conn.scalars(released.order_by(Batch.id).limit(1).offset(middle)).one()
        some_batch = conn.scalar(sa.select(AuditEntry.entity_id).where(AuditEntry.entity_type == "batch")
                                 .order_by(AuditEntry.seq).limit(1).offset(1000))
    return {
        "work queue and batch list": ("operator2", "/batches/"),
        "batch list, older decided batches": ("operator2", "/batches/?before=__cursor__"),
        "batch page (active)": ("operator2", f"/batches/{active}"),
        "batch page (history)": ("operator2", f"/batches/{history}"),
        "audit trail": ("qa1", "/audit/"),
        "audit trail, 2nd page": ("qa1", "/audit/?before=__cursor__"),
        "audit trail, user qa3": ("qa1", "/audit/?username=qa3"),
        "audit trail, user qa3, 2nd page": ("qa1", "/audit/?username=qa3&before=__cursor__"),
        "audit trail, user clinical1 (few)": ("qa1", "/audit/?username=clinical1"),
        "audit trail, one batch": ("qa1", f"/audit/?entity_type=batch&entity_id={some_batch}"),
        "audit trail, action auth.login": ("qa1", "/audit/?action=auth.login"),
        "audit trail, action auth.login, 2nd page": ("qa1", "/audit/?action=auth.login&before=__cursor__"),
        "audit trail, action deviation (few)": ("qa1", "/audit/?action=deviation"),
        "audit trail, action batch (most)": ("qa1", "/audit/?action=batch"),
        # the seeded trail holds about 345,000 entries a day (one every 0.25 s), this day 237,000 of them
        "audit trail, one day": ("qa1", f"/audit/?since={audit_verify.START.date()}&until={audit_verify.START.date()}"),
    }


_NEXT = re.compile(r'href="[^"]*[?&]before=(\d+)[^"]*">Older (?:entries|batches)')


def _resolve(client, url: str) -> str | None:
    """A 2nd-page URL: the cursor the first page links to (None when it links to no older page)."""
    if "__cursor__" not in url:
        return url
    first = client.get(re.sub(r"[?&]before=__cursor__", "", url)).get_data(as_text=True)
    found = _NEXT.search(first)
    return url.replace("__cursor__", found.group(1)) if found else None


def _count_rows(engine: sa.Engine, names: Iterable[str]) -> dict[str, int]:
    with engine.connect() as conn:
        return {name: conn.scalar(sa.select(sa.func.count()).select_from(Base.metadata.tables[name]))
                for name in names}


def make_app(url: str, instance: Path):
    instance.mkdir(exist_ok=True)
    return create_app({"INSTANCE_PATH": instance, "DATABASE_URL": url, "DEMO": True, "TESTING": True,
                       "SECRET_KEY": "bench-pages", "WTF_CSRF_ENABLED": False, "SOPS_DIR": str(RESOURCE_ROOT / "sops")})


def seed(url: str, instance: Path, *, batches: int, audit_entries: int, active: int) -> dict:
    """Migrate and seed the database at ``url``; the seeding times and row counts."""
    upgrade(url)
    engine = make_engine(url)
    seeding = {}
    instance.mkdir(exist_ok=True)
    create_key_file(instance / "audit.key")  # the instance's audit key ring, as `flask --app mfg init` makes it
    start = time.perf_counter()
    audit_verify._seed(engine, audit_entries, read_key_ring(instance / "audit.key"))
    seeding["audit_entries_s"] = round(time.perf_counter() - start, 1)
    app = make_app(url, instance)
    start = time.perf_counter()
    template_id = _template(app)
    seeding["template_batch_s"] = round(time.perf_counter() - start, 1)
    app.extensions["mfg.db"].engine.dispose()
    start = time.perf_counter()
    written = _copies(engine, template_id, batches, active)
    seeding["copies_s"] = round(time.perf_counter() - start, 1)
    seeding["copied_rows"] = sum(written.values())
    if engine.dialect.name == "postgresql":
        start = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE"))
        seeding["analyze_s"] = round(time.perf_counter() - start, 1)
    rows = _count_rows(engine, ["batch", "step_execution", "recorded_value", "signature", "subject", "deviation",
                                "batch_decision", "audit_entry"])
    with engine.connect() as conn:
        rows["active_batches"] = conn.scalar(sa.select(sa.func.count()).select_from(Batch).where(
            Batch.status.in_(("created", "in_progress", "awaiting_review"))))
    engine.dispose()
    return {"seeding": seeding, "rows": rows}


def measure_pages(app, *, requests: int, warmup: int, label: str, only: str | None = None,
                  profile: str | None = None, gc_freeze: bool = False) -> dict:
    client = app.test_client()
    if gc_freeze:  # what a server could do once started: full collections then skip the start-up objects
        gc.collect()
        gc.freeze()
    engine = app.extensions["mfg.db"].engine
    results = {}
    user = None
    for name, (username, page) in _pages(engine).items():
        if only and only not in name:
            continue
        if username != user:
            _login(client, username)
            user = username
        page = _resolve(client, page)
        if page is None:
            print(f"{label}: {name:<40} skipped: the first page links to no older page", flush=True)
            continue
        results[name] = r = measure(app, client, page, requests=requests, warmup=warmup)
        print(f"{label}: {name:<40} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  max {r['max_ms']:7.1f} ms"
              f"  {r['queries']:3d} queries  {r['bytes'] / 1024:6.0f} KiB  {r['url']}", flush=True)
        if profile and profile in name:
            import cProfile
            import pstats
            with cProfile.Profile() as profiler:
                for _ in range(10):
                    client.get(page)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--audit-entries", type=int, default=1_000_000)
    parser.add_argument("--active", type=int, default=36, help="undecided batches among --batches")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--database-url")
    parser.add_argument("--json", type=Path, help="write the figures to this file as JSON")
    parser.add_argument("--profile", help="also profile the pages whose name contains this, and print the top")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() before measuring (full collections of the long-lived objects, about "
                             "130 ms here, then leave the figures)")
    args = parser.parse_args()
    kind = "postgresql" if args.database_url else "sqlite"
    tmp = Path(tempfile.mkdtemp())
    url, drop = _database(args.database_url, tmp)
    figures: dict = {"database": kind, "batches": args.batches, "audit_entries": args.audit_entries,
                     "active": args.active, "requests": args.requests, "warmup": args.warmup}
    try:
        figures |= seed(url, tmp / "instance", batches=args.batches, audit_entries=args.audit_entries,
                        active=args.active)
        rows, seeding = figures["rows"], figures["seeding"]
        print(f"{kind}: seeded {rows['batch']:,} batches ({rows['active_batches']} active), "
              f"{rows['step_execution']:,} step executions, {rows['recorded_value']:,} values, "
              f"{rows['signature']:,} signatures, {rows['audit_entry']:,} audit entries")
        print(f"{kind}: seeding {seeding['audit_entries_s']} s audit trail + {seeding['template_batch_s']} s template "
              f"batch (services, real signatures) + {seeding['copies_s']} s bulk copies "
              f"({seeding['copied_rows']:,} rows)" + (f" + {seeding['analyze_s']} s ANALYZE"
                                                      if "analyze_s" in seeding else ""), flush=True)
        app = make_app(url, tmp / "instance")
        figures["gc_freeze"] = args.gc_freeze
        figures["pages"] = measure_pages(app, requests=args.requests, warmup=args.warmup, label=kind,
                                         profile=args.profile, gc_freeze=args.gc_freeze)
        app.extensions["mfg.db"].engine.dispose()
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    finally:
        drop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
