"""Every route, every method, every role (issue [3.6] proof): generated from the application's url_map, so a new
route without a declared rule fails here.

The rule of each cell comes from one declaration, never restated here: a page (GET) names its roles
(``roles_required``) or is declared open to every signed-in user (``actions.OPEN_PAGES``) or public
(``actions.PUBLIC``); an action (POST) names its guard (``actions.GUARDS``), whose roles are
``domain.refusal.ROLES``, or is one of the sign-in endpoints (``actions.UNGUARDED``). The test asserts:

* anonymous: every route but the public ones sends to the sign-in page, and writes nothing;
* a role a page does not name gets 403; one it names (or an open page) never gets 403;
* a role an action's guard refuses gets 403 before the view runs, and the audit trail does not move;
* an administrator is refused every action but account administration (it signs nothing), whatever the table
  says;
* no cell answers 500.

Objects are not created: ids in the URL name nothing (a 404 is a fine answer to a role that may act), because
the role decision comes before anything is loaded, which is what this test holds.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from mfg.domain import refusal
from mfg.extensions import db
from mfg.models import AuditEntry
from mfg.web import actions
from tests.support import PASSWORD

ROLES = ("operator", "qa", "clinical", "admin")
ARGUMENT_VALUES = {"action": "edit", "step_id": "x", "filename": "app.css"}
SIGNED_IN_ONLY_LAST = {"auth.logout"}
# the only actions an administrator may take: accounts, and confirming another's role grant (none signs)
ADMINISTRATION = {"manage_accounts", "confirm_role_grant"}  # ends the client's session: run last


def _url(rule) -> str:
    url = rule.rule
    for name in rule.arguments:
        url = re.sub(rf"<(?:[a-z]+:)?{name}>", str(ARGUMENT_VALUES.get(name, 1)), url)
    return url


def _cells(app):
    cells = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) & {"GET", "POST"}):
            cells.append((rule.endpoint, method, _url(rule)))
    return sorted(cells, key=lambda cell: (cell[0] in SIGNED_IN_ONLY_LAST, cell))


def _seq(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.coalesce(sa.func.max(AuditEntry.seq), 0)))


def _expected(app, endpoint: str, method: str, role: str | None) -> str:
    """"login", "forbidden", "allowed" (anything but 403 and 500) or "any" (anything but 500)."""
    if endpoint in actions.PUBLIC:
        return "any"
    if role is None:
        return "login"
    if method == "GET":
        roles = getattr(app.view_functions[endpoint], "required_roles", None)
        if endpoint in actions.OPEN_PAGES:
            assert roles is None, f"{endpoint}: declared open and names roles"
            return "allowed"
        assert roles, f"{endpoint}: a page with no rule (roles_required or actions.OPEN_PAGES)"
        return "allowed" if role in roles else "forbidden"
    if endpoint in actions.UNGUARDED:
        return "any"
    assert endpoint in actions.GUARDS, f"{endpoint}: an action with no guard (actions.GUARDS)"
    action = actions.GUARDS[endpoint][0]
    refused = refusal.role_refusals(action, refusal.Person(0, frozenset({role}), role))
    if role == "admin":
        assert bool(refused) == (action not in ADMINISTRATION), f"an administrator may {action}"
    return "forbidden" if refused else "allowed"


def test_every_route_method_and_role(app, make_user):
    clients = {None: app.test_client()}
    for role in ROLES:
        make_user(f"{role}1", role)
        clients[role] = app.test_client()
        assert clients[role].post("/auth/login", data={"username": f"{role}1", "password": PASSWORD}).status_code == 302
    cells = _cells(app)
    wrong = []
    counted = 0
    for endpoint, method, url in cells:
        for role, client in clients.items():
            expected = _expected(app, endpoint, method, role)
            before = _seq(app)
            response = client.open(url, method=method, data={} if method == "POST" else None)
            status = response.status_code
            response.close()  # a static file's answer holds the file open
            counted += 1
            moved = _seq(app) != before
            if status == 500:
                wrong.append((endpoint, method, role, "500"))
            elif expected == "login" and not (status in (302, 401) and "/auth/login" in (response.location or "")
                                              or status == 401):
                wrong.append((endpoint, method, role, f"{status}, not the sign-in page"))
            elif expected == "forbidden" and status != 403:
                wrong.append((endpoint, method, role, f"{status}, not 403"))
            elif expected == "allowed" and status == 403:
                wrong.append((endpoint, method, role, "403"))
            if expected in ("login", "forbidden") and moved:
                wrong.append((endpoint, method, role, "the audit trail moved"))
    assert not wrong, wrong
    assert counted == len(cells) * len(clients) and len(cells) >= 68
