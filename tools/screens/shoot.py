"""`make screenshots`: the screens of the demo at the cleanroom tablet (1024x768, touch), into docs/screens/.

Usage: .venv/bin/python tools/screens/shoot.py [--out docs/screens]

A throwaway demo instance in a temporary folder, made by the commands a site uses:
`flask --app mfg init --demo`, then `flask --app mfg demo-batch`:

* ``--scenario conditional``: NK-001's batch conditionally released (the bedside check);
* ``--scenario in-progress --subject NK-002 --until NK-INTAKE:identify_bag``: a batch whose collection bag is
  still to be scanned (the identity stop: a bag of another collection scanned at intake);
* ``--subject NK-003 --until NK-INTAKE:intake_counts``: the intake counts open (calculated fields);
* ``--subject NK-004 --until NK-FORMULATE:dose_plan``: the dose step open;
* ``--subject NK-005``: every step performed (the QA review).

The application is served on 127.0.0.1 (a free port) and each screen is taken at 1024x768 (the viewport, as
the tablet shows it when the page opens; the calculated field and the bedside check, which open further down,
scrolled into view) by the demo person who uses it. The states' values are
the demo data set's (``mfg.demo.nk_batch``). Fields are found by their master-record labels; every other
selector is in ``Screens``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import demo_site  # noqa: E402  (tools/ is not a package)

STATES: tuple[tuple[str, ...], ...] = (
    ("--scenario", "conditional"),
    ("--scenario", "in-progress", "--subject", "NK-002", "--until", "NK-INTAKE:identify_bag"),
    ("--scenario", "in-progress", "--subject", "NK-003", "--until", "NK-INTAKE:intake_counts"),
    ("--scenario", "in-progress", "--subject", "NK-004", "--until", "NK-FORMULATE:dose_plan"),
    ("--scenario", "in-progress", "--subject", "NK-005"),
)
SCANNED = {"scan", "equipment", "material"}


class Screens:
    """The selectors, in one place."""

    @staticmethod
    def sign_in(page: Any, username: str) -> None:
        page.goto("/auth/login")
        page.get_by_label("User name", exact=True).fill(username)
        page.get_by_label("Password", exact=True).fill(demo_site.PASSWORD)
        with page.expect_navigation(wait_until="load"):
            page.get_by_role("button", name="Sign in").click()

    @staticmethod
    def sign_step(page: Any) -> None:
        signing = page.get_by_role("group", name="Sign: Performed by")
        name = signing.get_by_label("User name", exact=True)
        if name.count():
            name.fill("operator1")
        signing.get_by_label("Password", exact=True).fill(demo_site.PASSWORD)
        with page.expect_navigation(wait_until="load"):
            page.get_by_role("button", name="Record and sign as Performed by").click()


def _fill(page: Any, planned: Any, **replaced: str) -> None:
    """Fill the step form with the demo entry, by the fields' labels."""
    for f in planned.step.fields:
        raw = replaced.get(f.id, planned.entry.raw.get(f.id))
        if raw is None or f.type == "calculated":
            continue
        if f.type == "choice":
            page.get_by_role("group", name=f.label, exact=True).get_by_label(raw, exact=True).check()
        elif f.type == "confirmation":
            page.get_by_label(f.statement, exact=True).check()
        else:
            page.get_by_label(f.label, exact=True).fill(raw)
    if planned.entry.comment:
        page.get_by_label("Comment (optional)", exact=True).fill(planned.entry.comment)


def shoot(browser: Any, base: str, app: Any, out: Path) -> list[Path]:
    import sqlalchemy as sa

    from mfg.demo import nk_batch as demo_nk
    from mfg.domain import isbt128
    from mfg.extensions import db
    from mfg.models import Batch, Subject, utcnow

    tz = ZoneInfo(app.config["SITE_TIMEZONE"])
    pages: dict[str, Any] = {}

    def person(username: str) -> Any:
        if username not in pages:
            page = browser.new_context(base_url=base, **demo_site.TABLET).new_page()
            page.set_default_timeout(60_000)
            Screens.sign_in(page, username)
            pages[username] = page
        return pages[username]

    def batch_of(code: str, *, planned: bool = True) -> tuple[int, Any]:
        """The batch id of subject ``code`` and (``planned``) the step the demo does next in it."""
        with app.app_context():
            batch = db.session.scalars(sa.select(Batch).join(Subject, Batch.subject_id == Subject.id)
                                       .where(Subject.code == code)).one()
            return batch.id, demo_nk.next_step(db.session, batch, now=utcnow(), tz=tz) if planned else None

    def step_url(batch_id: int, planned: Any) -> str:
        return f"/batches/{batch_id}/step/{planned.position}/{planned.step.id}/{planned.instance}"

    taken = []

    def png(page: Any, name: str) -> None:
        page.wait_for_load_state("load")
        target = out / f"{name}.png"
        page.screenshot(path=str(target))  # the viewport: what the tablet shows
        taken.append(target)
        print(f"wrote {target}", flush=True)

    # 1. the operator's work queue
    operator = person("operator1")
    operator.goto("/batches/")
    png(operator, "01-work-queue")

    # 2. a step with calculated fields: NK-003's intake counts, the inputs typed, the calculated field in view
    batch_id, planned = batch_of("NK-003")
    operator.goto(step_url(batch_id, planned))
    _fill(operator, planned)
    calculated = next(f for f in planned.step.fields if f.type == "calculated")
    operator.get_by_text(calculated.label, exact=True).first.scroll_into_view_if_needed()
    operator.wait_for_timeout(500)  # a live calculation, where there is one, answers
    png(operator, "02-step-calculated-field")

    # 3. the dose step of NK-004, as it opens
    batch_id, planned = batch_of("NK-004")
    operator.goto(step_url(batch_id, planned))
    png(operator, "03-dose-step")

    # 4. the identity stop: at NK-002's intake, the label of another collection scanned as the bag's DIN
    batch_id, planned = batch_of("NK-002")
    operator.goto(step_url(batch_id, planned))
    scan_field = next(f for f in planned.step.fields if f.type == "scan")
    wrong = isbt128.make_din("X9999", utcnow().year % 100, 999999).barcode("00")
    _fill(operator, planned, **{scan_field.id: wrong})
    Screens.sign_step(operator)
    png(operator, "04-identity-stop")

    # 5. QA's review of NK-005's batch
    qa = person("qa1")
    batch_id, _ = batch_of("NK-005", planned=False)
    qa.goto(f"/review/batches/{batch_id}")
    png(qa, "05-qa-review")

    # 6. the bedside check of NK-001's conditionally released bag, on the clinical coordinator's tablet
    clinical = person("clinical1")
    batch_id, _ = batch_of("NK-001", planned=False)
    clinical.goto(f"/batches/{batch_id}/custody")
    bedside = clinical.get_by_role("heading", name=re.compile(r"^Bedside identity check"))
    if bedside.count():  # the page opens on the hand-off form (autofocus): the bedside check's section at the top
        bedside.first.evaluate("el => el.scrollIntoView({block: 'start'})")
    png(clinical, "06-bedside")
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(demo_site.ROOT / "docs" / "screens"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mfg-screens-") as tmp:
        demo_site.use_instance(Path(tmp) / "instance")
        print(demo_site.flask("init", "--demo").strip().splitlines()[-1], flush=True)
        for state in STATES:
            print(demo_site.flask("demo-batch", "--out", str(Path(tmp) / "documents"), *state).strip(), flush=True)
        from mfg import create_app

        app = create_app()
        with demo_site.served(app) as base, demo_site.chromium() as browser:
            shoot(browser, base, app, out)


if __name__ == "__main__":
    main()
