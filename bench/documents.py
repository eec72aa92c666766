"""Time the signed documents of the full demo NK batch: render, sign, pages (batch record, certificate).

Usage: .venv/bin/python bench/documents.py [--repeat 3] [--json PATH]
A temporary demo instance (SQLite) runs `init --demo` and `demo-batch`; then each document is rendered and
signed again from the same snapshot, timed separately, and bare WeasyPrint on the same HTML is the floor.
Figures only: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from mfg import create_app
from mfg.config import RESOURCE_ROOT
from mfg.domain.canonical import iso_utc
from mfg.extensions import db
from mfg.models import Batch, utcnow
from mfg.reports import pdf as pdfs
from mfg.services import documents, snapshot


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"INSTANCE_PATH": tmp, "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
                          "SOPS_DIR": str(RESOURCE_ROOT / "sops")})
        runner = app.test_cli_runner()
        for command in (["init", "--demo"], ["demo-batch", "--out", f"{tmp}/out"]):
            result = runner.invoke(args=command)
            assert result.exit_code == 0, result.output
        with app.app_context():
            batch = db.session.query(Batch).one()
            site = pdfs.load_site_signer(app.config, Path(app.instance_path))
            snap = snapshot.batch_snapshot(db.session, batch)
            for kind in ("batch_record", "coa"):
                rendered, signed_s, floor, pages = [], [], [], 0
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    unsigned = documents.render(kind, snap, revision=1, reason="bench", demo=True,
                                                generated_at=iso_utc(utcnow()))
                    middle = time.perf_counter()
                    signed = pdfs.sign_pdf(unsigned, site, reason="bench", location="bench")
                    rendered.append(middle - start)
                    signed_s.append(time.perf_counter() - middle)
                    pages = documents.page_count(signed)
                    html = documents._environment().get_template(f"reports/{kind}.html").render(
                        s=snap, revision=1, reason="bench", generated_at="", charts=documents._charts(snap),
                        header="", watermark=True, title="")
                    from weasyprint import HTML

                    start = time.perf_counter()
                    HTML(string=html).write_pdf()
                    floor.append(time.perf_counter() - start)
                total = statistics.median(r + s for r, s in zip(rendered, signed_s, strict=False))
                figures[kind] = {"pages": pages, "render_s": statistics.median(rendered),
                                 "sign_s": statistics.median(signed_s), "total_s": total,
                                 "floor_s": statistics.median(floor), "repeat": args.repeat,
                                 "ratio_to_floor": total / statistics.median(floor)}
                print(f"{kind}: {pages} pages; render {statistics.median(rendered):.2f} s + sign "
                      f"{statistics.median(signed_s):.2f} s = {total:.2f} s (median of {args.repeat}); bare "
                      f"WeasyPrint on the same HTML {statistics.median(floor):.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
