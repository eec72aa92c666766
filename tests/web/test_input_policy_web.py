"""The input policy at the edge (issue 19, item 4), on both databases: every form's typed fields carry a rule
of mfg/domain/inputs.py (found by walking the app's forms, so a new form is covered); a NUL anywhere, on any
route of the url_map, is a 400 before any view; and on the forms of the auditor's evidence, generated
refused inputs get their message, no 500, and leave every table as it was."""

from __future__ import annotations

import html
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from wtforms import Form

import mfg.web
from mfg.config import RESOURCE_ROOT
from mfg.domain import inputs
from mfg.domain.errors import ValidationFailed
from mfg.domain.sop_schema import parse_definition
from mfg.extensions import db
from mfg.models import User
from mfg.models.base import Base
from mfg.services import audit, clinical, masterdata
from mfg.web import forms as web_forms
from mfg.web.step_fields import step_form_class
from tests.support import PASSWORD
from tests.web.test_custody_web import nk_batch  # noqa: F401 - the fixture: an NK batch, released, one bag

EXAMPLES = 4  # generated refused inputs per form field and database, besides the evidence's (evidence_values)


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _every_form(app: Flask) -> list[Any]:
    """An instance of every form of the app: the declared classes, the donor panel and every step screen of
    every master record shipped (built as the step view builds them)."""
    for module in pkgutil.iter_modules(mfg.web.__path__):  # every module of the web layer: a new one too
        importlib.import_module(f"mfg.web.{module.name}")
    # the declared forms (a step screen's form class, named Form, is built per step below)
    classes = [cls for cls in _subclasses(Form) if cls.__module__.startswith("mfg.") and cls.__name__ != "Form"]
    steps = [step for path in sorted((RESOURCE_ROOT / "sops").glob("*/*.yaml"))
             if "kind: master_batch_record" in (text := path.read_text())
             for stage in parse_definition(text, path.name).stages for step in stage.steps]
    with app.test_request_context():
        return ([cls() for cls in classes] + [web_forms.donor_panel_form(clinical.DONOR_PANEL)]
                + [step_form_class(step)() for step in steps])


def test_every_form_is_a_policy_form_and_every_typed_field_has_its_rule() -> None:
    app = Flask(__name__, root_path=str(Path(mfg.web.__file__).parent))
    app.config.update(SECRET_KEY="x", WTF_CSRF_ENABLED=False)
    found = _every_form(app)
    classes = {type(form) for form in found}
    assert not [cls.__name__ for cls in classes if not issubclass(cls, web_forms.InputPolicy)]
    typed = []
    for form in found:
        for name, field in form._fields.items():
            rule = form.input_rule(name, field)  # a KeyError names a typed field without a rule
            if form.is_typed(field) and not isinstance(field, (web_forms.PasswordField,)) and name != "csrf_token":
                assert rule is not None, f"{type(form).__name__}.{name}"
                assert any(isinstance(v, web_forms.PolicyCheck) for v in field.validators)
                typed.append((type(form).__name__, name))
    # figures for the report: how many forms and typed fields carry the policy
    steps = sum(1 for form in found if type(form).__name__ == "Form")
    print(f"\n{len(classes) - steps} declared form classes and {steps} step screens: {len(typed)} typed fields "
          "under the input policy")
    assert len(classes) >= 30 and len(typed) >= 100


def _urls(app: Flask) -> list[tuple[str, str]]:
    """Every (method, address) of the url_map, its variables filled in (1 for a number, "x" otherwise)."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        values = {arg: 1 if type(rule._converters[arg]).__name__ == "IntegerConverter" else "x"  # noqa: SLF001
                  for arg in rule.arguments}
        with app.test_request_context():
            address = app.url_for(rule.endpoint, **values)
        found += [(method, address) for method in sorted(rule.methods & {"GET", "POST"})]
    return found


def _table_counts(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {table.name: db.session.scalar(sa.select(sa.func.count()).select_from(table))
                for table in Base.metadata.sorted_tables}


def test_a_nul_anywhere_is_refused_before_any_view(app, make_user, client, login) -> None:
    """Generated from the url_map: a NUL in a query argument or a form field of any route is a 400 that says
    why, signed in or not, and nothing is stored (PostgreSQL cannot hold a NUL: it was a 500 there)."""
    make_user("olivia", "operator")
    before = _table_counts(app)
    urls = _urls(app)
    for signed_in in (False, True):
        if signed_in:
            assert login("olivia").status_code == 302
            before = _table_counts(app)
        for method, address in urls:
            response = client.open(address, method=method, query_string={"q": "a\x00b"},
                                   data={"username": "qa1\x00", "password": "x"} if method == "POST" else None)
            assert response.status_code == 400, (method, address, response.status_code)
            assert "NUL character (U+0000)" in response.get_data(as_text=True)
    assert _table_counts(app) == before
    # the anonymous sign-in page, the auditor's case, by the form alone
    client.post("/auth/logout")
    response = client.post("/auth/login", data={"username": "olivia\x00", "password": PASSWORD})
    assert response.status_code == 400
    print(f"\n{len(urls)} method x route cells, each refused a NUL twice (signed out, signed in)")


# --- the forms of the evidence ------------------------------------------------------------------------------


def _inside(base: str, chars: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(chars, st.integers(1, len(base) - 1)).map(lambda c: base[:c[1]] + c[0] + base[c[1]:])


REFUSED_CHARS = st.sampled_from(["\x1b", "\x07", "\x7f", "\x85", "\u200b", "\u200d", "\u202e", "\u202d",
                                 "\u2066", "\u2069", "\ufeff", "\u200f", "\u2028"])
LOOK_ALIKES = st.sampled_from(["\u041e", "\u0430", "\uff10", "\u0660", "\u00e9", " ", "\u2010", "*"])


FULL_WIDTH = str.maketrans("0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19")


def evidence_values(rule: inputs.Rule) -> list[str]:
    """What the auditor typed into a field of ``rule``'s kind (issue 19): tried first, every time."""
    if isinstance(rule, inputs.Number):
        return ["1E1", "\u0666\u0662", "\uff16\uff12"]
    if isinstance(rule, inputs.DateRange):
        # year 1, and full-width digits in the year (which WTForms' date parser, strptime, takes)
        return ["0001-01-01", date.today().strftime("%Y").translate(FULL_WIDTH) + date.today().strftime("-%m-%d")]
    identifier = isinstance(rule, inputs.Identifier)
    return (["BSC\u200b-01", "BSC\x1b01", "NK-\u041e\u041e1"] if identifier
            else ["dose \u202e01 gk", "sealed\x1b[31m", "x" * 1_000_000])


def bad_values(rule: inputs.Rule) -> st.SearchStrategy[str]:
    """Inputs ``rule`` refuses: a control or invisible character, one too many characters, a look-alike in an
    identifier, a number not in plain decimal, a date outside the field's range."""
    if isinstance(rule, inputs.Number):
        return st.sampled_from(["1e-1", "62,4", "1,000", "+62", "62.", ".5", "-62", "0", "401", "62.125", "0x3E",
                                "NaN", "Infinity", "6\u200b2"])
    if isinstance(rule, inputs.DateRange):
        earliest, latest = rule.bounds(date.today())
        return st.one_of(st.dates(max_value=date.fromordinal(earliest.toordinal() - 1)),
                         st.dates(min_value=date.fromordinal(latest.toordinal() + 1))).map(date.isoformat)
    base = "BSC-01" if isinstance(rule, inputs.Identifier) else "sealed 2-8 C"
    limit = rule.max_length  # type: ignore[attr-defined]
    strategies = [_inside(base, REFUSED_CHARS), st.integers(1, 40).map(lambda n: "A" * (limit + n))]
    if isinstance(rule, inputs.Identifier):
        strategies.append(_inside(base, LOOK_ALIKES))
    return st.one_of(*strategies)


@dataclass(frozen=True)
class Case:
    user: str | None  # who is signed in; None: anonymous
    address: Callable[[dict], str]
    data: Callable[[dict], dict[str, str]]  # valid values but for the field tried
    field: str  # the form field tried (with its prefix)
    rule: str  # its rule in mfg.domain.inputs.RULES


CASES = {
    "login user name": Case(None, lambda c: "/auth/login", lambda c: {"password": "x"}, "username", "username"),
    "new user name": Case("ada", lambda c: "/admin/users/new", lambda c: {
        "full_name": "Nadia New", "roles": "operator", "password": PASSWORD + "-new"}, "username", "username"),
    "printed name": Case("ada", lambda c: "/admin/users/new", lambda c: {
        "username": "nadia", "roles": "operator", "password": PASSWORD + "-new"}, "full_name", "full_name"),
    "account reason": Case("ada", lambda c: f"/admin/users/{c['olivia']}/deactivate", lambda c: {},
                           "deactivate-reason", "reason"),
    "equipment identifier": Case("quentin", lambda c: "/masterdata/equipment", lambda c: {
        "eq-equipment_type": "Biosafety cabinet"}, "eq-identifier", "identifier"),
    "calibration date": Case("quentin", lambda c: "/masterdata/equipment", lambda c: {
        "eq-identifier": "BSC-09", "eq-equipment_type": "Biosafety cabinet"}, "eq-calibration_due", "calibration_due"),
    "equipment reason": Case("quentin", lambda c: f"/masterdata/equipment/{c['equipment']}/status", lambda c: {
        "status": "out_of_service"}, "reason", "reason"),
    "lot number": Case("quentin", lambda c: "/masterdata/lots", lambda c: {
        "lot-material": "IL-2", "lot-expiry": "2030-01-01", "lot-qc_status": "quarantine"}, "lot-lot_number",
                       "lot_number"),
    "lot expiry": Case("quentin", lambda c: "/masterdata/lots", lambda c: {
        "lot-material": "IL-2", "lot-lot_number": "IL2-777", "lot-qc_status": "quarantine"}, "lot-expiry", "expiry"),
    "lot reason": Case("quentin", lambda c: f"/masterdata/lots/{c['lot']}/status", lambda c: {
        "qc_status": "released"}, "reason", "reason"),
    "donor code": Case("clara", lambda c: "/clinical/donors", lambda c: {
        "donor-abo_rh": "A+", "donor-relationship": "matched_sibling"}, "donor-code", "donor_code"),
    "subject code": Case("clara", lambda c: "/clinical/subjects", lambda c: {
        "subject-donor_id": c["donor"], "subject-weight_kg": "62.4", "subject-measured_on": date.today().isoformat()},
                         "subject-code", "subject_code"),
    "weight": Case("clara", lambda c: "/clinical/subjects", lambda c: {
        "subject-code": "S-02", "subject-donor_id": c["donor"], "subject-measured_on": date.today().isoformat()},
                   "subject-weight_kg", "weight_kg"),
    "weighing date": Case("clara", lambda c: "/clinical/subjects", lambda c: {
        "subject-code": "S-02", "subject-donor_id": c["donor"], "subject-weight_kg": "62.4"},
                          "subject-measured_on", "measured_on"),
    "specimen date": Case("clara", lambda c: f"/clinical/donors/{c['donor']}/tests", lambda c: {
        "test-test": "HBsAg", "test-result": "negative"}, "test-specimen_date", "specimen_date"),
    "eligibility summary": Case("clara", lambda c: f"/clinical/donors/{c['donor']}/eligibility", lambda c: {
        "elig-eligible": "ineligible"}, "elig-summary", "summary"),
    "custody location": Case("olivia", lambda c: f"/batches/{c['batch']}/custody/handoff", lambda c: {
        "handoff-scanned_din": c["din"], "handoff-to_location": "Ward 3", "handoff-condition": "sealed",
        "handoff-password": PASSWORD}, "handoff-from_location", "location"),
    "custody condition": Case("olivia", lambda c: f"/batches/{c['batch']}/custody/handoff", lambda c: {
        "handoff-scanned_din": c["din"], "handoff-from_location": "GMP facility", "handoff-to_location": "Ward 3",
        "handoff-password": PASSWORD}, "handoff-condition", "condition"),
    "deviation": Case("olivia", lambda c: f"/review/batches/{c['batch']}/deviations", lambda c: {},
                      "deviation-description", "description"),
    "decision comment": Case("quentin", lambda c: f"/review/batches/{c['batch']}/decide", lambda c: {
        "decide-decision": "recalled", "decide-password": PASSWORD}, "decide-comment", "comment"),
}


@pytest.fixture
def evidence(app, make_user, nk_batch) -> dict:  # noqa: F811 - the imported fixture
    """The records the evidence forms act on: a donor, a piece of equipment, a lot, an administrator."""
    make_user("ada", "admin", full_name="Ada Admin")
    with app.app_context():
        s = db.session
        audit.set_actor(s, name="test-setup")
        clara = s.scalar(sa.select(User).where(User.username == "clara"))
        donor = clinical.register_donor(s, code="D-002", abo_rh="O+", relationship="matched_sibling", user=clara)
        equipment = masterdata.add_equipment(s, identifier="BSC-01", equipment_type="Biosafety cabinet",
                                             calibration_due=None)
        lot = masterdata.receive_lot(s, material="IL-2", lot_number="IL2-001", expiry=date(2030, 1, 1))
        olivia = s.scalar(sa.select(User).where(User.username == "olivia"))
        s.commit()
        return {"donor": donor.id, "equipment": equipment.id, "lot": lot.id, "olivia": olivia.id,
                "batch": nk_batch["id"], "din": nk_batch["bag"]}


def _message(rule: inputs.Rule, value: str) -> str:
    with pytest.raises(ValidationFailed) as refused:
        rule.clean(value, today=date.today())
    return refused.value.problems[0]


def _try(app, client, login, evidence: dict, case: str) -> int:  # noqa: ANN001 - app, client, login fixture
    """Post the evidence's and generated refused inputs into the field of ``case``; how many were tried."""
    spec = CASES[case]
    rule = inputs.RULES[spec.rule]
    client.post("/auth/logout")
    if spec.user:
        assert login(spec.user).status_code == 302
    tried = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(value=bad_values(rule))
    def refused(value: str) -> None:
        before = _table_counts(app)
        # a form posted from another page may flash its messages there: follow the redirect to read them
        response = client.post(spec.address(evidence), data=spec.data(evidence) | {spec.field: value},
                               follow_redirects=True)
        page = html.unescape(response.get_data(as_text=True))
        assert response.status_code < 500
        assert _message(rule, value) in page, (case, value, response.status_code)
        assert _table_counts(app) == before
        tried.append(value)

    for value in evidence_values(rule):
        refused = example(value=value)(refused)
    refused()
    return len(tried)


def test_refused_inputs_store_nothing_and_say_why(app, client, login, evidence) -> None:
    """Every evidence form, one after the other on one set of records (set up once: it is the slow part)."""
    tried = {case: _try(app, client, login, evidence, case) for case in CASES}
    assert all(tried.values())
    print(f"\n{len(tried)} forms' fields, {sum(tried.values())} refused inputs tried")
