"""`make bench`: run every benchmark of bench/ and write one Markdown and one JSON report.

Usage: .venv/bin/python bench/run.py [--postgresql URL] [--out bench/out] [--quick] [--only NAME,...]

Each benchmark script runs in its own process (so one's memory and caches do not colour the next), on
SQLite and, when a PostgreSQL URL is given (--postgresql, else MFG_BENCH_DATABASE_URL, else
MFG_TEST_DATABASE_URL), on PostgreSQL in a temporary schema it drops. Each writes its figures as JSON;
this script puts every figure beside its floor, measured in the same run on the same machine, and the
issue's target, into bench/out/report.md and bench/out/report.json. --quick shrinks every size (for
trying the harness, not for figures).

The machine is shared and noisy: the figures are for reading, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# name -> (script, per-database?, full arguments, quick arguments)
BENCHES: dict[str, tuple[str, bool, list[str], list[str]]] = {
    "load": ("load.py", True, ["--levels", "1,5,20", "--seconds", "15"],
             ["--levels", "1,5", "--seconds", "3", "--floor-seconds", "2"]),
    "documents": ("documents.py", False, ["--repeat", "3"], ["--repeat", "1"]),
    "audit_verify": ("audit_verify.py", True, ["--entries", "1000000"], ["--entries", "20000"]),
    "audit_state": ("audit_state.py", True, ["--entries", "1000000"], ["--entries", "20000"]),
    "pages": ("pages.py", True, ["--batches", "10000", "--audit-entries", "1000000"],
              ["--batches", "300", "--audit-entries", "20000"]),
    "decision": ("decision.py", True, ["--operators", "8", "--baseline-seconds", "15"],
                 ["--operators", "4", "--baseline-seconds", "6"]),
}


def _run(name: str, database: str, url: str | None, args: list[str], out: Path) -> dict:
    script, _, _, _ = BENCHES[name]
    target = out / f"{name}-{database}.json"
    target.unlink(missing_ok=True)
    command = [PYTHON, str(ROOT / "bench" / script), *args, "--json", str(target)]
    if url:
        command += ["--database-url", url]
    log = out / f"{name}-{database}.log"
    print(f"bench: {name} on {database} ...", flush=True)
    start = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run(command, cwd=ROOT / "bench", stdout=handle, stderr=subprocess.STDOUT).returncode
    spent = time.perf_counter() - start
    if code != 0 or not target.exists():
        print(f"bench: {name} on {database} FAILED (exit {code}); see {log}", flush=True)
        return {"error": f"exit {code}; see {log.name}", "wall_s": spent}
    figures = json.loads(target.read_text())
    figures["wall_s"] = spent
    print(f"bench: {name} on {database} done in {spent:.0f} s", flush=True)
    return figures


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _num(value: float | None, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def _verdict(met: bool | None) -> str:
    return "–" if met is None else ("met" if met else "**not met**")


def _markdown(report: dict) -> str:
    results = report["results"]
    lines = [f"# Benchmark report, {report['finished']}", "",
             f"Machine: {report['machine']['cpus']} CPUs, {report['machine']['platform']}, Python "
             f"{report['machine']['python']}; load average at start {report['machine']['loadavg_start']}, at end "
             f"{report['machine']['loadavg_end']}. Git {report['git']}. Every floor was measured in this run on "
             "this machine. Medians; p95 where the figure is a latency.", ""]

    lines += ["## Signed step submit through gunicorn (2 workers × 4 threads) on 127.0.0.1", "",
              "Floor: argon2 verification alone in 2 processes (what the two cores allow), one verification "
              "plus one committed insert in one process. Target: at 20 operators at least 70 % of the argon2 "
              "throughput.", "",
              "| database | operators | signed steps/s | p50 ms | p95 ms | argon2 floor /s | ratio | one-step floor ms "
              "| worker peak RSS MB | target |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for database, load in results.get("load", {}).items():
        if "error" in load:
            lines.append(f"| {database} | failed: {load['error']} |||||||||")
            continue
        floor = load["floor"]
        for level in load["levels"]:
            target = level["ratio_to_argon2_floor"] >= 0.7 if level["operators"] == 20 else None
            lines.append(f"| {database} | {level['operators']} | {level['steps_per_s']:.2f} "
                         f"| {_num(level['p50_ms'], '.0f')} "
                         f"| {_num(level['p95_ms'], '.0f')} | {floor['verifications_per_s']:.2f} "
                         f"| {_pct(level['ratio_to_argon2_floor'])} | {floor['one_step_floor_ms']:.0f} "
                         f"| {_num(level['max_worker_peak_rss_mb'], '.0f')} | {_verdict(target)} |")
    lines.append("")

    documents = results.get("documents", {}).get("sqlite", {})
    lines += ["## Signed documents of the full demo NK batch", "",
              "Floor: bare WeasyPrint `HTML(string=...).write_pdf()` on the same HTML. Target: render and sign at "
              "most 1.15x the floor (batch record).", "",
              "| document | pages | render s | sign s | total s | floor s | ratio | target |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    if "error" in documents:
        lines.append(f"| failed: {documents['error']} ||||||||")
    for kind, doc in documents.items():
        if isinstance(doc, dict) and "pages" in doc:
            target = doc["ratio_to_floor"] <= 1.15 if kind == "batch_record" else None
            lines.append(f"| {kind} | {doc['pages']} | {doc['render_s']:.2f} | {doc['sign_s']:.2f} "
                         f"| {doc['total_s']:.2f} "
                         f"| {doc['floor_s']:.2f} | {doc['ratio_to_floor']:.2f}x | {_verdict(target)} |")
    lines.append("")

    lines += ["## Audit verify", "",
              "Floor: `hashlib.sha256` of every entry's canonical bytes, already in memory. Read floor: fetching the "
              "same rows with the raw driver and nothing else. Target: at least 0.5x the hashing floor.", "",
              "| database | entries | verify s | entries/s | hash floor entries/s | ratio | read floor entries/s "
              "| target |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for database, av in results.get("audit_verify", {}).items():
        if "error" in av:
            lines.append(f"| {database} | failed: {av['error']} |||||||")
            continue
        lines.append(f"| {database} | {av['entries']:,} | {av['verify_s']:.2f} | {av['verify_entries_per_s']:,.0f} "
                     f"| {av['hash_floor_entries_per_s']:,.0f} | {av['ratio_to_hash_floor']:.3f} "
                     f"| {av['read_floor_entries_per_s']:,.0f} | {_verdict(av['ratio_to_hash_floor'] >= 0.5)} |")
    lines.append("")
    incremental = {database: av for database, av in results.get("audit_verify", {}).items() if "since_last_s" in av}
    if incremental:
        lines += ["Incremental verify: `audit verify --since-last` of the entries written after a sealed checkpoint "
                  "near the end of the trail above, against a full verify of a trail of that many entries alone "
                  "(medians). Target: at most 2x.", "",
                  "| database | trail | new entries | since-last ms | same entries alone ms | ratio | target |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for database, av in incremental.items():
            lines.append(f"| {database} | {av['entries']:,} | {av['incremental_entries']:,} "
                         f"| {av['since_last_s'] * 1000:.1f} | {av['small_trail_verify_s'] * 1000:.1f} "
                         f"| {av['since_last_ratio']:.2f} | {_verdict(av['since_last_ratio'] <= 2)} |")
        lines.append("")

    lines += ["## Audit verify: the current state against the trail", "",
              "A plant-like trail (60 % creations of lots and equipment, 30 % updates of them, 10 % events) and the "
              "rows it describes. State read floor: the raw driver fetching the create and update entries' four "
              "columns and every row, nothing else. Bound stated: O(entries + rows). Full verify: `audit verify` as "
              "it runs (the chain in parts by worker processes, the state check beside them); its read floor is "
              "every entry's chain columns and every audited row. Target (issue [3.5] item 8): at least 0.5x it.", "",
              "| database | entries | rows | chain and seal s | state check s | s per million entries "
              "| state read floor s | full verify s | full read floor s | ratio | target |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for database, st in results.get("audit_state", {}).items():
        if "error" in st:
            lines.append(f"| {database} | failed: {st['error']} ||||||||||")
            continue
        lines.append(f"| {database} | {st['entries']:,} | {st['rows']:,} | {st['chain_s']:.2f} | {st['state_s']:.2f} "
                     f"| {st['state_s_per_million_entries']:.1f} | {st['state_read_floor_s']:.2f} "
                     f"| {st['full_verify_s']:.2f} | {st['full_read_floor_s']:.2f} "
                     f"| {st['full_ratio_to_read_floor']:.2f} | {_verdict(st['full_ratio_to_read_floor'] >= 0.5)} |")
    lines.append("")

    lines += ["## Pages at scale", "",
              "Seeded batches and audit entries as stated; in-process requests through the Flask test client on a "
              "real database. Target: p95 below 100 ms; SQL queries per page must not grow with the number of "
              "batches (asserted in tests/web/test_query_counts.py).", "",
              "| database | batches | audit entries | page | p50 ms | p95 ms | queries | target |",
              "|---|---:|---:|---|---:|---:|---:|---|"]
    for database, pages in results.get("pages", {}).items():
        if "error" in pages:
            lines.append(f"| {database} | failed: {pages['error']} |||||||")
            continue
        for name, page in pages["pages"].items():
            lines.append(f"| {database} | {pages['batches']:,} | {pages['audit_entries']:,} | {name} "
                         f"| {page['p50_ms']:.1f} | {page['p95_ms']:.1f} | {page['queries']} "
                         f"| {_verdict(page['p95_ms'] < 100)} |")
    lines.append("")
    lines += ["## QA's decision while operators sign steps", "",
              "gunicorn as `make run`; operators sign DEMO-PROC steps while qa1 signs the conditional release of "
              "a demo NK batch. Floor: the operators' p95 before QA's click. Target: the decision commits in "
              "under 1 s and the operators' p95 while the documents are made stays within 2x the floor.", "",
              "| database | operators | decision s | documents s | p95 before ms | p95 during ms | max during ms "
              "| target |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for database, dec in results.get("decision", {}).items():
        if "error" in dec:
            lines.append(f"| {database} | failed: {dec['error']} |||||||")
            continue
        met = (dec["decision_s"] < 1 and dec["during_p95_ms"] is not None and dec["baseline_p95_ms"] is not None
               and dec["during_p95_ms"] <= 2 * dec["baseline_p95_ms"])
        lines.append(f"| {database} | {dec['operators']} | {dec['decision_s']:.2f} | {_num(dec['documents_s'], '.2f')} "
                     f"| {_num(dec['baseline_p95_ms'], '.0f')} | {_num(dec['during_p95_ms'], '.0f')} "
                     f"| {_num(dec['during_max_ms'], '.0f')} | {_verdict(met)} |")
    lines.append("")
    lines += ["Raw figures of each benchmark are in report.json and its log in the same folder.", ""]
    return "\n".join(lines)


def _git() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgresql", default=os.environ.get("MFG_BENCH_DATABASE_URL")
                        or os.environ.get("MFG_TEST_DATABASE_URL") or None)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the harness")
    parser.add_argument("--only", help="comma-separated benchmark names: " + ",".join(BENCHES))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = args.only.split(",") if args.only else list(BENCHES)
    databases = [("sqlite", None)] + ([("postgresql", args.postgresql)] if args.postgresql else [])
    report = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git": _git(),
              "quick": args.quick,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
              "postgresql": bool(args.postgresql), "results": {}}
    for name in chosen:
        script, per_database, full, quick = BENCHES[name]
        arguments = quick if args.quick else full
        for database, url in (databases if per_database else [("sqlite", None)]):
            report["results"].setdefault(name, {})[database] = _run(name, database, url, arguments, out)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = _markdown(report)
    if not args.postgresql:
        markdown += "\nPostgreSQL was not measured: give --postgresql URL or set MFG_BENCH_DATABASE_URL.\n"
    (out / "report.md").write_text(markdown)
    print(markdown)
    print(f"bench: report written to {out / 'report.md'} and {out / 'report.json'}")
    failed = [f"{name}/{database}" for name, by_db in report["results"].items()
              for database, figures in by_db.items() if "error" in figures]
    if failed:
        sys.exit(f"bench: failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
