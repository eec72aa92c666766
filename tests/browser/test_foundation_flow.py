"""End to end through the browser: an administrator creates a QA user, one QA user loads a master record,
another approves it with an e-signature (after a refused wrong password), and the audit trail shows it all."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from flask import Flask
from playwright.sync_api import Locator, Page, expect

from mfg.models import User
from tests.support import DEMO_SOP, PASSWORD

BOSS_NAME = "Quinn Boss-Approver"
BOSS_TEMPORARY = "temporary-pass-4-boss"
BOSS_PASSWORD = "approver-own-secret-77"


def sign_in(page: Page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/auth/login")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("User name", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status").filter(has_text="You are signed out.")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/auth/login$"))


def nav(page: Page, name: str) -> None:
    page.get_by_role("banner").get_by_role("link", name=name, exact=True).click()


def flash(page: Page, text: str) -> Locator:
    return page.get_by_role("status").filter(has_text=text)


def audit_rows(page: Page, action_prefix: str) -> Locator:
    page.get_by_label("What", exact=True).select_option(value=action_prefix)
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"[?&]action=" + re.escape(action_prefix)))
    return page.get_by_role("row")


def row_with(rows: Locator, page: Page, action: str, user: str, *texts: str) -> Locator:
    """The audit rows with exactly this action (in words) and user whose text also contains each of ``texts``."""
    row = (rows.filter(has=page.get_by_role("cell", name=action, exact=True))
           .filter(has=page.get_by_role("cell", name=user, exact=True)))
    for text in texts:
        row = row.filter(has_text=text)
    return row


def test_load_approve_and_audit(live_server: str, live_app: Flask, page: Page,
                                make_user: Callable[..., User]) -> None:
    base = live_server
    make_user("admin", "admin", full_name="Ada Admin")
    make_user("qaload", "qa", full_name="Lou Loader")
    shutil.copy(DEMO_SOP, Path(live_app.config["SOPS_DIR"]) / "DEMO-PROC_v1.yaml")

    # --- the administrator creates qaboss with a temporary password, through the screens --------------
    sign_in(page, base, "admin", PASSWORD)
    expect(page.get_by_role("heading", name="Welcome, Ada Admin")).to_be_visible()
    page.goto(f"{base}/admin/users/new")
    expect(page.get_by_role("heading", name="New user")).to_be_visible()
    page.get_by_label("User name", exact=True).fill("qaboss")
    page.get_by_label("Full (printed) name", exact=True).fill(BOSS_NAME)
    page.get_by_label("Quality assurance", exact=True).check()
    page.get_by_label("Temporary password", exact=True).fill(BOSS_TEMPORARY)
    page.get_by_role("button", name="Create user").click()
    expect(flash(page, "User qaboss created with a temporary password; pending a second person's "
                       "confirmation: qa.")).to_be_visible()
    expect(page.get_by_role("heading", name=f"qaboss · {BOSS_NAME}")).to_be_visible()
    sign_out(page)

    # --- qaload loads DEMO-PROC v1 as a draft and may not approve it -----------------------------------
    sign_in(page, base, "qaload", PASSWORD)
    expect(page.get_by_role("heading", name="Welcome, Lou Loader")).to_be_visible()
    # --- ... and, as the second person of the two-person rule, confirms qaboss's QA role ----------------
    nav(page, "QA review")  # the grants are on QA's review page (the navigation keeps one row at 1024 px)
    page.get_by_role("link", name="Role grants").click()
    page.get_by_role("button", name="Confirm qa for qaboss").click()
    expect(flash(page, "qaboss: role qa confirmed.")).to_be_visible()
    nav(page, "Master records")
    expect(page.get_by_role("heading", name="Master records")).to_be_visible()
    expect(page.get_by_role("cell", name="No master records loaded yet.")).to_be_visible()
    page.get_by_role("button", name="Load new versions from the definitions folder").click()
    expect(flash(page, "Loaded DEMO-PROC v1 as a draft.")).to_be_visible()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="DEMO-PROC", exact=True))
    expect(row).to_have_count(1)
    expect(row.get_by_role("cell").nth(1)).to_have_text("1")
    expect(row.get_by_role("cell").nth(3)).to_have_text("draft")
    row.get_by_role("link", name="DEMO-PROC", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("DEMO-PROC v1")
    expect(page.locator(".facts .status")).to_have_text("draft")
    expect(page.get_by_text("Sign: Approved by")).to_have_count(0)
    expect(page.get_by_role("button", name="Sign as Approved by")).to_have_count(0)
    expect(page.get_by_text("A draft becomes effective when a QA user other than the one who loaded it "
                            "approves it.")).to_be_visible()
    sign_out(page)

    # --- qaboss signs in with the temporary password and must change it first --------------------------
    sign_in(page, base, "qaboss", BOSS_TEMPORARY)
    expect(page).to_have_url(re.compile(r"/auth/password$"))
    expect(flash(page, "You must set a new password before you continue.")).to_be_visible()
    expect(page.get_by_role("heading", name="Change your password")).to_be_visible()
    page.get_by_label("Current password", exact=True).fill(BOSS_TEMPORARY)
    page.get_by_label("New password", exact=True).fill(BOSS_PASSWORD)
    page.get_by_label("Repeat the new password", exact=True).fill(BOSS_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(flash(page, "Your password was changed.")).to_be_visible()
    expect(page.get_by_role("heading", name=f"Welcome, {BOSS_NAME}")).to_be_visible()

    # --- qaboss approves DEMO-PROC v1: a wrong password first, then the right one ------------------------
    nav(page, "Master records")
    page.get_by_role("link", name="DEMO-PROC", exact=True).click()
    expect(page.locator(".facts .status")).to_have_text("draft")
    expect(page.get_by_role("button", name="Sign as Approved by")).to_be_hidden()
    page.get_by_text("Sign: Approved by").click()
    dialog = page.locator("details.sign-dialog")
    expect(dialog).to_have_attribute("open", "")
    expect(dialog).to_contain_text(f"({BOSS_NAME})")
    dialog.get_by_label("User name", exact=True).fill("qaboss")
    dialog.get_by_label("Password", exact=True).fill("not-my-password-at-all")
    dialog.get_by_role("button", name="Sign as Approved by").click()
    dialog = page.locator("details.sign-dialog")
    expect(dialog).to_have_attribute("open", "")  # re-rendered open because the attempt failed
    expect(dialog.get_by_text("User name or password is not correct.")).to_be_visible()
    expect(page.locator(".facts .status")).to_have_text("draft")
    expect(page.locator(".manifestation")).to_have_count(0)

    dialog.get_by_label("User name", exact=True).fill("qaboss")  # still the session's first signature
    dialog.get_by_label("Password", exact=True).fill(BOSS_PASSWORD)
    dialog.get_by_label("Comment (optional)", exact=True).fill("Reviewed against the change request.")
    dialog.get_by_role("button", name="Sign as Approved by").click()
    expect(flash(page, "DEMO-PROC v1 approved: it is now effective.")).to_be_visible()
    expect(page.locator(".facts .status")).to_have_text("effective")
    manifestation = page.locator(".manifestation")
    expect(manifestation).to_have_count(1)
    expect(manifestation).to_contain_text(f"Approved by {BOSS_NAME} (qaboss)")
    expect(page.get_by_text("Reviewed against the change request.")).to_be_visible()
    expect(page.get_by_text("Sign: Approved by")).to_have_count(0)  # an effective version has no dialog

    nav(page, "Master records")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="DEMO-PROC", exact=True))
    expect(row.get_by_role("cell").nth(3)).to_have_text("effective")
    expect(row.get_by_role("cell").nth(5)).to_contain_text(BOSS_NAME)

    # --- the audit trail shows what happened, filtered by action ----------------------------------------
    nav(page, "Audit trail")
    expect(page.get_by_role("heading", name="Audit trail")).to_be_visible()

    rows = audit_rows(page, "signature.")
    expect(row_with(rows, page, "Signature failure", "qaboss")).to_have_count(1)
    expect(row_with(rows, page, "Signature recorded", "qaboss", "e-signature: Approved by")).to_have_count(1)
    expect(rows.filter(has=page.get_by_role("cell", name="Master record changed", exact=True))).to_have_count(0)

    rows = audit_rows(page, "login.success")
    for username in ("admin", "qaload", "qaboss"):
        expect(row_with(rows, page, "Login success", username)).to_have_count(1)

    rows = audit_rows(page, "user_account.")
    expect(row_with(rows, page, "User account recorded", "admin", "account created", "username: qaboss")
           ).to_have_count(1)
    expect(row_with(rows, page, "User account changed", "qaboss", "password changed by its owner")).to_have_count(1)

    rows = audit_rows(page, "sop_version.")
    expect(row_with(rows, page, "Master record recorded", "qaload", "master record loaded as draft")).to_have_count(1)
    expect(row_with(rows, page, "Master record changed", "qaboss", f"approved by {BOSS_NAME}",
                    "status: draft → effective")).to_have_count(1)

    rows = audit_rows(page, "logout")
    expect(row_with(rows, page, "Logout", "admin")).to_have_count(1)
    expect(row_with(rows, page, "Logout", "qaload")).to_have_count(1)
