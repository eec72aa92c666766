"""Sign-in throttling (issue [3.6] item 3), with the ``limits`` library (the rate limiter Flask-Limiter is built
on): failed sign-ins are counted per submitted user name, known or not, and per client address, each in a moving
window (``SIGNIN_LIMIT_PER_ACCOUNT``, ``SIGNIN_LIMIT_PER_ADDRESS``). Past either limit a sign-in is refused before
its password is checked, with one message whatever the account, and the refusal is audited.

What it protects: guessing a password (a few tries per account per window, and a bounded number per address
across accounts), and the accounts themselves, since the consecutive failures that lock an account come at most
this fast from one address; the last active administrator is never locked by failures, only throttled
(``domain.accounts.should_lock``).

The counts live in each server process's memory (one limiter per application): a restart clears them, and with
several processes (``make run`` starts two) each counts alone, so the effective limit is that many times the
setting. Both are documented choices (docs/sessions.md); a shared store (``limits`` speaks Redis and others) would
lift them where a site runs one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import Flask, current_app
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

EXTENSION = "mfg.signin_throttle"


@dataclass
class SignInThrottle:
    limiter: MovingWindowRateLimiter
    per_account: RateLimitItem
    per_address: RateLimitItem

    @staticmethod
    def _account(username: str) -> str:
        return username.strip().casefold()[:64]

    def refused(self, username: str, address: str) -> str | None:
        """Which limit refuses a sign-in now (``"account"`` or ``"address"``), or None."""
        if not self.limiter.test(self.per_address, "address", address):
            return "address"
        if not self.limiter.test(self.per_account, "account", self._account(username)):
            return "account"
        return None

    def failed(self, username: str, address: str) -> None:
        self.limiter.hit(self.per_address, "address", address)
        self.limiter.hit(self.per_account, "account", self._account(username))

    def retry_minutes(self, scope: str, username: str, address: str) -> int:
        """Whole minutes until the limit that refuses lets one more sign-in through."""
        item, key = ((self.per_address, address) if scope == "address"
                     else (self.per_account, self._account(username)))
        reset = self.limiter.get_window_stats(item, scope, key).reset_time
        return max(1, -(-int(reset - time.time()) // 60))


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION] = SignInThrottle(MovingWindowRateLimiter(MemoryStorage()),
                                               parse(app.config["SIGNIN_LIMIT_PER_ACCOUNT"]),
                                               parse(app.config["SIGNIN_LIMIT_PER_ADDRESS"]))


def throttle() -> SignInThrottle:
    return current_app.extensions[EXTENSION]
