"""Configuration defaults and environment overrides.

Order of precedence (last wins): the defaults below, ``instance/config.py`` (written once by
``flask --app mfg init``: secret key and the demo flag), environment variables prefixed ``MFG_``
(e.g. ``MFG_DATABASE_URL``, ``MFG_LOCKOUT_THRESHOLD=3``), then the ``test_config`` mapping given to
``create_app``. Values from the environment are parsed as JSON when they parse (numbers, booleans),
else taken as text.

The security figures are this site's validated choices (21 CFR 11.300): change them here or in the
instance configuration, never in code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# Where templates/, sops/ and requirements/ are: a wheel carries them inside the package (pyproject.toml,
# force-include), a source checkout (and an editable install of it) beside the package, at its root.
RESOURCE_ROOT = PACKAGE_DIR if (PACKAGE_DIR / "templates").is_dir() else PACKAGE_DIR.parent
TEMPLATES_DIR = RESOURCE_ROOT / "templates"
# The run lock: every package and version the product was tested with (`make lock`).
RUN_LOCK = RESOURCE_ROOT / "requirements" / "run.lock"

DEFAULTS: dict[str, object] = {
    # None: SQLite file ``mfg.sqlite3`` inside the instance folder.
    "DATABASE_URL": None,
    # PostgreSQL only: the role that owns the schema. When set, `flask --app mfg init` migrates as this role and
    # grants DATABASE_URL's role only what the application needs (mfg/db_roles.py). Give it to `init` only,
    # never to the application server's environment.
    "OWNER_DATABASE_URL": None,
    "SOPS_DIR": str(RESOURCE_ROOT / "sops"),
    "SITE_NAME": "NK-cell manufacturing facility",
    "SITE_TIMEZONE": "UTC",
    # Demo instances say so on every page and watermark their PDFs.
    "DEMO": False,
    # Accounts and sessions (21 CFR 11.300).
    "PASSWORD_MIN_LENGTH": 12,
    "PASSWORD_MAX_AGE_DAYS": 180,
    "LOCKOUT_THRESHOLD": 5,
    # A new password differs from the account's current one and the ones before it: this many in all.
    "PASSWORD_HISTORY": 5,
    # Failed sign-ins allowed per submitted user name (known or not) and per client address, in a moving
    # window (the ``limits`` library's notation); more are refused without checking the password, with one
    # message whatever the account. Counted in each server process's memory (docs/sessions.md).
    "SIGNIN_LIMIT_PER_ACCOUNT": "5 per 15 minutes",
    "SIGNIN_LIMIT_PER_ADDRESS": "20 per 15 minutes",
    # How many reverse proxies in front of the app server set X-Forwarded-For (0: none; the app server sees the
    # client). Behind a TLS proxy set 1, or every client shares the proxy's address for sign-in throttling.
    "TRUSTED_PROXIES": 0,
    # The two-person rule: a signing role (operator, qa, clinical) an administrator grants counts only once a
    # second administrator or QA confirms it (Administration, Role grants). False: it counts at once.
    "ROLE_GRANT_TWO_PERSON": True,
    "IDLE_TIMEOUT_MINUTES": 15,
    # A session ends this long after its sign-in however active it is (a shift and a half; 0: no limit).
    "SESSION_LIFETIME_HOURS": 12,
    # Activity is written to the session's row at most this often; the idle timeout can fall this much early.
    "SESSION_TOUCH_SECONDS": 15,
    # The screens warn this long before the idle timeout, with "Stay signed in" (mfg/static/session.js).
    "IDLE_WARNING_SECONDS": 60,
    # Cookies: HttpOnly and SameSite=Lax always; Secure where the site serves HTTPS.
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_SECURE": False,  # when True, every answer also carries HSTS (web.security)
    "SESSION_COOKIE_NAME": "mfg_session",
    # Flask-WTF: tokens do not expire on their own; the idle timeout ends the session instead.
    "WTF_CSRF_TIME_LIMIT": None,
    "AUDIT_PAGE_SIZE": 50,
    # Site signing material, relative to the instance folder.
    "SIGNING_KEY_FILE": "signing/site-key.pem",
    "SIGNING_CERT_FILE": "signing/site-cert.pem",
    # Or a PKCS#12 (.p12/.pfx) file from the site's own certificate authority, used instead of the two
    # files above when set; its passphrase, if any, in a separate file (trailing newline ignored).
    "SIGNING_PKCS12_FILE": None,
    "SIGNING_PKCS12_PASSWORD_FILE": None,
    # The audit trail's key ring (mfg/audit_key.py), relative to the instance folder: it seals the audit head.
    # Never in the database; back it up apart from the database backups.
    "AUDIT_KEY_FILE": "audit.key",
    # `flask --app mfg qualify` fails when the site certificate expires within this many days.
    "CERTIFICATE_RENEWAL_DAYS": 60,
    # Bag label size in inches (width, height): the site's label stock.
    "LABEL_SIZE_IN": [4, 4],
    # The documents worker (mfg/document_worker.py): a thread in every app server process makes the documents
    # QA's decisions ask for. Off (false): none starts, and `flask --app mfg documents work` makes them.
    "DOCUMENT_WORKER": True,
    "DOCUMENT_WORKER_POLL_SECONDS": 10,
    # A claimed job whose worker has not finished within this time (a killed process) is taken again.
    "DOCUMENT_JOB_LEASE_SECONDS": 120,
    # An open batch page asks the server this often whether someone changed the batch (static/flow.js).
    "BATCH_PAGE_POLL_SECONDS": 5,
}

ENV_PREFIX = "MFG_"


def from_environment(environ: dict[str, str] | None = None) -> dict[str, object]:
    """Return the ``MFG_*`` overrides for keys the application knows (others are ignored)."""
    environ = dict(os.environ if environ is None else environ)
    overrides: dict[str, object] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):]
        if key not in DEFAULTS and key != "SECRET_KEY":
            continue
        try:
            overrides[key] = json.loads(raw)
        except ValueError:
            overrides[key] = raw
    return overrides
