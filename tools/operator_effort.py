"""Operator effort for one complete demo NK batch, through the screens (issue 17, "Proof").

Usage: .venv/bin/python tools/operator_effort.py [--out docs/operator-effort-after] [--label after]
       (or `make operator-effort OUT=docs/operator-effort-after`)

A throwaway demo instance (`flask --app mfg init --demo` in a temporary folder: the demo people, the NK master
records, master data and subject NK-001 with its signed dose) is served on 127.0.0.1 (a free port). Debian's
chromium at the cleanroom tablet's size (1024x768, touch) then does what the two operators do for the whole
batch: operator1 (Olivia) signs in, opens NK-001's batch record from the subject page and performs every step
of the four NK master records with the demo data set (``mfg.demo.nk_batch``: the same entries the services'
demo and tests/browser/test_nk_batch_flow.py use, in the same order); operator2 (Oscar) verifies every step
that needs it from his work queue. The happy path: no wrong scan, every value in its limits. It ends when the
batch awaits QA's review.

Counted for each person (``Meter``):
- page loads: documents loaded in the person's tab (the ``load`` event: navigations, redirects' targets);
- taps: clicks on links, buttons, radios, check boxes and summaries, and a tap to focus a scan field that
  does not have the focus already (a select counts two: open, choose);
- typed fields: text typed into a field by hand (values, comments, the user name of a signature);
- scans: codes the keyboard-wedge scanner types (scan, equipment and material fields), each ending in Enter;
- password entries: at sign-in and at every signature;
- seconds: wall time of the whole flow (both people, one after the other), less the time this script spends
  looking up the next step's demo data in the database.

Robust to small changes of the screens: fields are found by their labels (from the master record), and every
other selector lives in ``Screens``. Figures only: nothing is asserted beyond the flow reaching its end.
Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_site  # noqa: E402  (tools/ is not a package)

METRICS = ("page_loads", "taps", "typed_fields", "scans", "password_entries")
SCANNED = {"scan", "equipment", "material"}  # field types a scanner fills


@dataclass
class Meter:
    page_loads: int = 0
    taps: int = 0
    typed_fields: int = 0
    scans: int = 0
    password_entries: int = 0

    def copy(self) -> Meter:
        return Meter(**asdict(self))

    def minus(self, other: Meter) -> dict[str, int]:
        return {m: getattr(self, m) - getattr(other, m) for m in METRICS}


class Screens:
    """Every selector of the flow, in one place (fields themselves are found by their master-record labels)."""

    LOGIN = "/auth/login"

    @staticmethod
    def user_name(scope: Any) -> Any:
        return scope.get_by_label("User name", exact=True)

    @staticmethod
    def password(scope: Any) -> Any:
        return scope.get_by_label("Password", exact=True)

    @staticmethod
    def sign_in_button(page: Any) -> Any:
        return page.get_by_role("button", name="Sign in")

    @staticmethod
    def nav(page: Any, name: str) -> Any:
        return page.get_by_role("banner").get_by_role("link", name=name, exact=True)

    @staticmethod
    def open_batch_record(page: Any) -> Any:
        return page.get_by_role("button", name=re.compile(r"^Open the (NK )?batch record"))

    @staticmethod
    def open_step_link(scope: Any) -> Any:
        return scope.get_by_role("link", name=re.compile(r"^(Open step|Perform|Next step)", re.I))

    @staticmethod
    def step_row(page: Any, heading: str) -> Any:
        """The batch page's (or work queue's) row of a step, by its heading in a cell."""
        return page.get_by_role("row").filter(has=page.get_by_role("cell", name=heading, exact=True))

    @staticmethod
    def heading(page: Any) -> Any:
        return page.get_by_role("heading", level=1)

    @staticmethod
    def signing(page: Any, meaning: str) -> Any:
        return page.get_by_role("group", name=re.compile(rf"Sign: {meaning}"))

    @staticmethod
    def sign_step_button(page: Any) -> Any:
        return page.get_by_role("button", name=re.compile(r"sign as Performed by", re.I))

    @staticmethod
    def comment(page: Any) -> Any:
        return page.get_by_label(re.compile(r"^Comment( \(optional\))?$"))

    @staticmethod
    def flash(page: Any) -> Any:
        return page.get_by_role("status")

    @staticmethod
    def alerts(page: Any) -> Any:
        return page.get_by_role("alert")

    @staticmethod
    def verify_link(page: Any, heading: str) -> Any:
        return page.get_by_role("row").filter(has_text=f"Verify: {heading}").get_by_role("link", name="Verify")

    @staticmethod
    def verify_dialog_opener(page: Any) -> Any:
        return page.get_by_text("Sign: Verified by", exact=True)

    @staticmethod
    def verify_dialog(page: Any) -> Any:
        return page.locator("details.sign-dialog, [role=dialog]").filter(has_text="Sign: Verified by")

    @staticmethod
    def verify_button(scope: Any) -> Any:
        return scope.get_by_role("button", name=re.compile(r"Sign as Verified by"))


@dataclass
class Person:
    page: Any
    username: str
    full_name: str
    meter: Meter = field(default_factory=Meter)

    # --- counted gestures ------------------------------------------------------------------------------

    def tap(self, locator: Any) -> None:
        self.meter.taps += 1
        locator.click()

    def tap_and_load(self, locator: Any) -> None:
        self.meter.taps += 1
        with self.page.expect_navigation(wait_until="load"):
            locator.click()

    def type_into(self, locator: Any, text: str) -> None:
        self.meter.typed_fields += 1
        locator.fill(text)

    def enter_password(self, locator: Any) -> None:
        self.meter.password_entries += 1
        locator.fill(demo_site.PASSWORD)

    def scan(self, locator: Any, code: str) -> None:
        if not locator.evaluate("el => el === document.activeElement"):
            self.tap(locator)
        if locator.input_value():  # what a careful operator does while a scan appends to the field
            locator.fill("")
        self.meter.scans += 1
        self.page.keyboard.type(code)
        self.page.keyboard.press("Enter")

    # --- the screens -----------------------------------------------------------------------------------

    def sign_in(self) -> None:
        self.page.goto(Screens.LOGIN)
        self.type_into(Screens.user_name(self.page), self.username)
        self.enter_password(Screens.password(self.page))
        self.tap_and_load(Screens.sign_in_button(self.page))
        if self.page.url.endswith(Screens.LOGIN):
            raise RuntimeError(f"{self.username} could not sign in")

    def credentials(self, scope: Any) -> None:
        """The signing fields: the user name where asked (the session's first signature), then the password."""
        name = Screens.user_name(scope)
        if name.count() and name.first.is_visible():
            self.type_into(name.first, self.username)
        self.enter_password(Screens.password(scope).first)

    def outcome(self, expected: str) -> None:
        flashes = " | ".join(Screens.flash(self.page).all_inner_texts())
        if expected not in flashes:
            alerts = " | ".join(Screens.alerts(self.page).all_inner_texts())
            raise RuntimeError(f"{self.username}: expected {expected!r} on {self.page.url}; "
                               f"flash: {flashes!r}; alerts: {alerts!r}")


def _open_step(olivia: Person, heading: str, lot: str) -> None:
    """From wherever she is: the step's "Open step" on this page, else the work queue's, else the batch page's."""
    page = olivia.page
    for attempt in ("here", "work queue", "batch page"):
        if attempt == "work queue":
            olivia.tap_and_load(Screens.nav(page, "Work queue"))
        elif attempt == "batch page":
            olivia.tap_and_load(page.get_by_role("link", name=lot, exact=True).first)
        link = Screens.open_step_link(Screens.step_row(page, heading))
        if link.count():
            olivia.tap_and_load(link.first)
            break
    else:
        raise RuntimeError(f"no way to open step {heading!r} found")
    if heading not in Screens.heading(page).inner_text():
        raise RuntimeError(f"opened {Screens.heading(page).inner_text()!r}, not {heading!r}")


def _perform(olivia: Person, planned: Any, lot: str) -> None:
    page = olivia.page
    _open_step(olivia, planned.heading, lot)
    form = page.locator("form").filter(has=Screens.sign_step_button(page))
    for f in planned.step.fields:
        raw = planned.entry.raw.get(f.id)
        if raw is None or f.type == "calculated":
            continue
        if f.type in SCANNED:
            olivia.scan(form.get_by_label(f.label, exact=True), raw)
        elif f.type == "choice":
            olivia.tap(form.get_by_role("group", name=f.label, exact=True).get_by_label(raw, exact=True))
        elif f.type == "confirmation":
            box = form.get_by_label(f.statement, exact=True)
            if not box.is_checked():
                olivia.tap(box)
        else:
            olivia.type_into(form.get_by_label(f.label, exact=True), raw)
    if planned.entry.comment:
        olivia.type_into(Screens.comment(form).first, planned.entry.comment)
    olivia.credentials(Screens.signing(page, "Performed by"))
    olivia.tap_and_load(Screens.sign_step_button(page))
    olivia.outcome("recorded and signed")


def _verify(oscar: Person, heading: str) -> None:
    page = oscar.page
    oscar.tap_and_load(Screens.nav(page, "Work queue"))
    oscar.tap_and_load(Screens.verify_link(page, heading))
    dialog = Screens.verify_dialog(page)
    if not dialog.first.evaluate("el => el.open === undefined || el.open"):
        oscar.tap(Screens.verify_dialog_opener(page))
    oscar.credentials(dialog.first)
    oscar.tap_and_load(Screens.verify_button(dialog.first))
    oscar.outcome("Step verified.")


def run(browser: Any, base: str, app: Any) -> dict[str, Any]:
    from mfg.demo import nk_batch as demo_nk
    from mfg.extensions import db
    from mfg.models import utcnow
    from mfg.services import batches

    tz = ZoneInfo(app.config["SITE_TIMEZONE"])
    people: dict[str, Person] = {}
    for username, full_name in (("operator1", "Olivia Operator"), ("operator2", "Oscar Verifier")):
        context = browser.new_context(base_url=base, **demo_site.TABLET)
        page = context.new_page()
        page.set_default_timeout(60_000)
        person = Person(page, username, full_name)
        page.on("load", lambda _page, meter=person.meter: setattr(meter, "page_loads", meter.page_loads + 1))
        people[username] = person
    olivia, oscar = people["operator1"], people["operator2"]

    started = time.perf_counter()
    looking_up = 0.0
    olivia.sign_in()
    oscar.sign_in()
    olivia.tap_and_load(Screens.nav(olivia.page, "Subjects"))
    olivia.tap_and_load(olivia.page.get_by_role("link", name=demo_nk.DEMO_SUBJECT, exact=True))
    olivia.tap_and_load(Screens.open_batch_record(olivia.page))
    found = re.search(r"/batches/(\d+)", olivia.page.url)
    if found is None:
        raise RuntimeError(f"the batch record did not open: {olivia.page.url}")
    batch_id = int(found.group(1))
    now = utcnow()  # the demo data's clock, as run_nk_batch sets it when it opens the batch
    steps: list[dict[str, Any]] = []
    while True:
        lookup = time.perf_counter()
        with app.app_context():
            batch = batches.get(db.session, batch_id)
            lot = batch.lot
            planned = demo_nk.next_step(db.session, batch, now=now, tz=tz)
        looking_up += time.perf_counter() - lookup
        if planned is None:
            break
        before = {name: p.meter.copy() for name, p in people.items()}
        _perform(olivia, planned, lot)
        if planned.verify:
            _verify(oscar, planned.heading)
        steps.append({"record": planned.code, "step": planned.step.id, "instance": planned.instance,
                      "heading": planned.heading, "verified": planned.verify,
                      **{name: p.meter.minus(before[name]) for name, p in people.items()}})
    seconds = time.perf_counter() - started - looking_up
    with app.app_context():
        status = batches.get(db.session, batch_id).status
    if status != "awaiting_review":
        raise RuntimeError(f"the flow ended with the batch {status}, not awaiting review")
    total = {m: sum(getattr(p.meter, m) for p in people.values()) for m in METRICS}
    return {"lot": lot, "batch_status": status, "steps_performed": len(steps),
            "verifications": sum(1 for s in steps if s["verified"]),
            "people": {name: asdict(p.meter) for name, p in people.items()},
            "total": total, "seconds": round(seconds, 1), "steps": steps}


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=demo_site.ROOT, capture_output=True, text=True)
    return done.stdout.strip()


def markdown(report: dict[str, Any]) -> str:
    people = report["people"]
    dirty = " (with uncommitted changes)" if report["dirty"] else ""
    lines = [f"# Operator effort, one demo NK batch ({report['label']})", "",
             f"Measured {report['finished']} on commit `{report['commit']}`{dirty}; "
             f"{report['machine']}. `make operator-effort` (tools/operator_effort.py) at 1024x768 with touch, "
             f"Debian's chromium. Batch {report['lot']}: {report['steps_performed']} steps performed by operator1, "
             f"{report['verifications']} verified by operator2, from opening the batch record on the subject page to "
             "the batch awaiting QA's review (happy path: no wrong scan, every value in its limits).", "",
             "| | operator1 (performs) | operator2 (verifies) | both |", "| --- | ---: | ---: | ---: |"]
    names = {"page_loads": "page loads", "taps": "taps", "typed_fields": "typed fields", "scans": "scans",
             "password_entries": "password entries"}
    for metric in METRICS:
        lines.append(f"| {names[metric]} | {people['operator1'][metric]} | {people['operator2'][metric]} | "
                     f"{report['total'][metric]} |")
    lines.append(f"| seconds (wall, both, one after the other) | | | {report['seconds']} |")
    lines += ["", "Counting: a tap is a click on a link, button, radio, check box or summary, or a tap to focus a "
              "scan field that is not focused; a typed field is text typed by hand (values, comments, the user "
              "name of a signature); a scan is a code the scanner types, ending in Enter; password entries "
              "include signing in. Per-step figures are in the JSON file.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(demo_site.ROOT / "bench" / "out" / "operator-effort"),
                        help="write OUT.json and OUT.md")
    parser.add_argument("--label", default="", help="what the figures are of, e.g. before, after")
    args = parser.parse_args()
    out = Path(args.out)
    label = args.label or out.name.removeprefix("operator-effort-").removeprefix("operator-effort") or "this code"
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mfg-effort-") as tmp:
        demo_site.use_instance(Path(tmp) / "instance")
        demo_site.flask("init", "--demo")
        from mfg import create_app

        app = create_app()
        with demo_site.served(app) as base, demo_site.chromium() as browser:
            figures = run(browser, base, app)
    report = {"label": label, "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "commit": _git("rev-parse", "--short", "HEAD"), "dirty": bool(_git("status", "--porcelain")),
              "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
                         f"load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run",
              **figures}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
