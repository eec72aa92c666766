"""Run by the interpreter of an installed wheel (tests/install/test_wheel.py), not by pytest: sign in as each
demo user and follow every link on this site from the work queue, as a person clicking through would;
print one JSON line: the endpoints reached and every page that failed. Standard library and mfg only.

Expects the demo instance with its demo batch (conditionally released). So that the pages of work in
progress render too, it first starts a DEMO-PROC batch (open steps) and opens a deviation on the demo
batch, through the services, as operator1."""

from __future__ import annotations

import json
import re
import sys
from urllib.parse import urldefrag, urlsplit

from mfg import create_app
from mfg.extensions import db
from mfg.models import Batch
from mfg.services import accounts, audit, deviations, starting

USERS = ("operator1", "operator2", "qa1", "clinical1", "admin1")
PASSWORD = sys.argv[1]
LINK = re.compile(r'(?:href|src)="(/[^"]*)"')
TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')

app = create_app()
with app.app_context():
    operator = accounts.get_by_username(db.session, "operator1")
    audit.set_actor(db.session, operator)
    demo_batch = db.session.get(Batch, 1)
    starting.start_batch(db.session, codes=["DEMO-PROC"], user=operator)
    deviations.open_by_hand(db.session, demo_batch, description="opened by the crawl", user=operator)
    db.session.commit()
reached: set[str] = set()
failures: list[str] = []
for user in USERS:
    client = app.test_client()
    login = client.get("/auth/login")
    if login.status_code != 200 or b"csrf_token" not in login.data:
        failures.append(f"{user}: GET /auth/login {login.status_code}")
        continue
    token = TOKEN.search(login.get_data(as_text=True)).group(1)
    signed_in = client.post("/auth/login", data={"username": user, "password": PASSWORD, "csrf_token": token})
    if signed_in.status_code != 302:
        failures.append(f"{user}: sign-in answered {signed_in.status_code}")
        continue
    queue, seen = ["/", "/auth/password"], {"/", "/auth/password"}
    while queue and len(seen) < 400:
        url = queue.pop(0)
        response = client.get(url)
        endpoint = app.url_map.bind("localhost").match(urlsplit(url).path, "GET")[0]
        reached.add(endpoint)
        if response.status_code >= 400 and response.status_code != 403:
            failures.append(f"{user}: GET {url} {response.status_code}")
        if response.mimetype != "text/html":
            continue
        for link in LINK.findall(response.get_data(as_text=True)):
            link = urldefrag(link.replace("&amp;", "&"))[0]
            if link and link not in seen:
                seen.add(link)
                queue.append(link)
print(json.dumps({"reached": sorted(reached), "failures": failures}))
