"""Page helpers shared by the browser tests: people signed in to browser contexts of their own, signing
fields, and small locators."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from tests.support import PASSWORD


@dataclass

class Person:
    page: Page
    username: str
    full_name: str
    signed: bool = False  # has signed in this session: later signatures take the password only (11.200)


def sign_in(page: Page, username: str, full_name: str) -> None:
    page.goto("/auth/login")
    page.get_by_label("User name", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name=f"Welcome, {full_name}")).to_be_visible()


def credentials(person: Person, scope: Page | Locator) -> None:
    """The signing fields: the user name only on the session's first signature, then the password."""
    user_name = scope.get_by_label("User name", exact=True)
    if person.signed:
        expect(user_name).to_have_count(0)
    else:
        user_name.fill(person.username)
    scope.get_by_label("Password", exact=True).fill(PASSWORD)


def flash(page: Page, text: str) -> Locator:
    return page.get_by_role("status").filter(has_text=text)


def row(scope: Page | Locator, cell: str) -> Locator:
    """The table rows, in the page or in one table, with a cell reading exactly ``cell``."""
    page = scope if isinstance(scope, Page) else scope.page
    return scope.get_by_role("row").filter(has=page.get_by_role("cell", name=cell, exact=True))


def go(locator: Locator) -> None:
    """Click a link or a submit button and wait for the page it leads to."""
    with locator.page.expect_navigation(wait_until="domcontentloaded"):
        locator.click()


@contextmanager

def people(browser: Browser, base_url: str) -> Iterator[Callable[[str, str], Person]]:
    """Makes a person signed in to a browser context of their own; closes every context at the end."""
    opened: list[BrowserContext] = []

    def person(username: str, full_name: str) -> Person:
        context = browser.new_context(base_url=base_url, accept_downloads=True)
        opened.append(context)
        page = context.new_page()
        sign_in(page, username, full_name)
        return Person(page, username, full_name)

    try:
        yield person
    finally:
        for context in opened:
            context.close()
