"""Installation qualification (IQ): ``flask --app mfg qualify`` checks the installation it runs in and
writes the signed PDF/A record a validation engineer files.

The checks, in order (each names every problem it finds):

1. ``packages``: every package of the run lock installed at its locked version, on the Python and platform
   the lock was made for, and the lock file as ``make lock`` wrote it;
2. ``schema``: the database at the newest migration;
3. ``guards``: every append-only guard trigger present, enabled and as the migrations made it
   (``mfg.migrate.GUARDS``);
4. ``secrets``: the instance's secret key file and the site's private key (or PKCS#12 and its password file)
   readable by their owner only;
5. ``certificate``: the site certificate loads with its key, is valid now and for at least
   ``CERTIFICATE_RENEWAL_DAYS`` more days;
6. ``fonts``: every font the documents name is found by WeasyPrint (``reports.pdf.DOCUMENT_FONTS``);
7. ``pdf``: a PDF/A-3b rendered, signed with the site key and verified against the site certificate;
8. ``audit``: the audit trail's hash chain and every signature's content hash verify;
9. ``roles``: on PostgreSQL, the application's role can do no more than its grants (``mfg.db_roles``): not a
   superuser, no UPDATE on append-only tables, no DELETE, TRUNCATE or CREATE. When it owns the tables (one role,
   no ``OWNER_DATABASE_URL``) the check passes with a warning: it could disable the guards. SQLite has no roles.

A finding that starts with ``WARNING`` is shown as such on a passed check.

A check that raises fails with the error as its finding (an IQ reports; it does not stop half-way). The
report is written whatever the outcome. It is signed when the site's signing material loads, and stored
(append-only, audited) when it is signed and the database is at the newest schema: ``verify-pdf`` then
accepts a filed copy. A report that could not be stored says so on its first page.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.metadata
import platform
import socket
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .. import db_roles, migrate
from ..audit_key import AuditKeyError
from ..config import RUN_LOCK
from ..domain import lockfile
from ..domain.audit_chain import Anchor, anchor_keyword
from ..domain.canonical import canonical_json, iso_utc
from ..domain.errors import DomainError
from ..models import QualificationRecord, utcnow
from ..reports import pdf as pdfs
from . import audit, audit_anchors, documents, signatures


@dataclass(frozen=True)
class Check:
    key: str
    title: str
    passed: bool
    details: tuple[str, ...]  # what was found; when failed, every problem

    @property
    def warned(self) -> bool:
        return any(line.startswith("WARNING") for line in self.details)


@dataclass
class Installation:
    """What is checked: the application's configuration, its instance folder and database session."""

    session: Session
    config: Mapping[str, Any]
    instance_path: Path
    lock_file: Path = RUN_LOCK
    fonts: tuple[tuple[str, str], ...] = pdfs.DOCUMENT_FONTS
    now: datetime = field(default_factory=utcnow)
    _signer: pdfs.SiteSigner | None = None
    _signer_error: str | None = None

    def signer(self) -> pdfs.SiteSigner:
        if self._signer is None and self._signer_error is None:
            try:
                self._signer = pdfs.load_site_signer(self.config, self.instance_path)
            except pdfs.SigningMaterialError as error:
                self._signer_error = str(error)
        if self._signer is None:
            raise pdfs.SigningMaterialError(self._signer_error or "no signing material")
        return self._signer


def _installed() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        found.setdefault(lockfile.normalise(dist.metadata["Name"]), dist.version)
    return found


def check_packages(target: Installation) -> tuple[bool, list[str]]:
    lock = lockfile.parse(target.lock_file.read_text(encoding="utf-8"))
    python = ".".join(platform.python_version_tuple()[:2])
    problems = lockfile.differences(lock, _installed(), python=python, machine=platform.machine(),
                                    system=platform.system())
    if problems:
        return False, problems
    return True, [f"{len(lock.pins)} packages at their locked versions on {platform.python_implementation()} "
                  f"{platform.python_version()}, {platform.machine()} {platform.system()}",
                  f"lock {target.lock_file} sha256 {lock.sha256}"]


def check_schema(target: Installation) -> tuple[bool, list[str]]:
    current, newest = migrate.schema_revisions(target.session.connection())
    if current != newest:
        return False, [f"the database is at revision {', '.join(sorted(current)) or 'none'}; the newest is "
                       f"{', '.join(sorted(newest))}: run `flask --app mfg init` to migrate it"]
    return True, [f"revision {', '.join(sorted(current))} ({target.session.get_bind().dialect.name})"]


def check_guards(target: Installation) -> tuple[bool, list[str]]:
    problems = migrate.guard_problems(target.session.connection())
    if problems:
        return False, problems
    count = len(migrate.guard_triggers(target.session.get_bind().dialect.name))
    return True, [f"{count} guard triggers on {len(migrate.GUARDS)} tables, enabled and as migrated"]


def secret_files(config: Mapping[str, Any], instance_path: Path) -> list[Path]:
    """The files whose reading would let someone sign or forge sessions: the instance configuration (the
    secret key), the audit key ring that seals the audit trail, and the site's private key, or its PKCS#12
    file and password file."""
    names: list[str | None] = ["config.py", config.get("AUDIT_KEY_FILE", "audit.key")]
    if config.get("SIGNING_PKCS12_FILE"):
        names += [config["SIGNING_PKCS12_FILE"], config.get("SIGNING_PKCS12_PASSWORD_FILE")]
    else:
        names.append(config["SIGNING_KEY_FILE"])
    return [instance_path / str(name) for name in names if name]


def check_secrets(target: Installation) -> tuple[bool, list[str]]:
    problems, found = [], []
    for path in secret_files(target.config, target.instance_path):
        if not path.is_file():
            problems.append(f"{path} is missing: run `flask --app mfg init`")
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            problems.append(f"{path} can be read or written by others (mode {mode:04o}): chmod 600 it")
        else:
            found.append(f"{path} mode {mode:04o}")
    return not problems, problems or found


def check_certificate(target: Installation) -> tuple[bool, list[str]]:
    signer = target.signer()  # loading also checks that the key belongs to the certificate
    cert = signer.certificate
    start, end = cert.not_valid_before, cert.not_valid_after
    renewal = int(target.config.get("CERTIFICATE_RENEWAL_DAYS", 60))
    described = f"{signer.subject}, valid {iso_utc(start)} to {iso_utc(end)}"
    if target.now < start:
        return False, [f"{described}: not valid yet"]
    if target.now >= end:
        return False, [f"{described}: expired"]
    left = (end - target.now) // timedelta(days=1)
    if end - target.now < timedelta(days=renewal):
        return False, [f"{described}: expires in {left} days, within the renewal period of {renewal} days: "
                       "renew it (SIGNING_CERT_FILE or SIGNING_PKCS12_FILE)"]
    return True, [f"{described} ({left} days left); the key belongs to it"]


def check_fonts(target: Installation) -> tuple[bool, list[str]]:
    missing = pdfs.missing_fonts(target.fonts)
    if missing:
        return False, [f"font {name} is not installed: documents would print in another font" for name in missing]
    return True, [", ".join(f"{family} {weight}" for family, weight in target.fonts)]


def check_pdf(target: Installation) -> tuple[bool, list[str]]:
    signer = target.signer()
    probe = canonical_json({"probe": "installation qualification", "at": target.now}).encode()
    html = documents.document_html("reports/qualification_probe.html", title="Qualification probe",
                                   header="Qualification probe", watermark=False)
    unsigned = pdfs.render_pdf(html, attachment=probe, attachment_name="probe.json", title="Qualification probe")
    signed = pdfs.sign_pdf(unsigned, signer, reason="installation qualification probe", location="qualify")
    check = pdfs.verify_pdf(signed, signer.certificate)
    if not check.valid:
        return False, [f"the signed probe does not verify: {check.reason}"]
    if check.attachment != probe:
        return False, ["the signed probe's embedded file is not the one rendered into it"]
    return True, [f"PDF/A-3b rendered ({len(unsigned):,} bytes), signed by {check.signer} and verified: "
                  "intact, trusted, embedded file intact"]


def check_audit(target: Installation) -> tuple[bool, list[str]]:
    result = audit.verify(target.session)
    checked, mismatches = signatures.check_all(target.session)
    problems = [] if result.ok else [f"audit trail broken after {result.checked} good entries: {result.problem}"]
    problems += [f"signature {m.signature_id} on {m.record_type} {m.record_id}: {m.problem}" for m in mismatches]
    if problems:
        return False, problems
    return True, [f"audit trail intact: {result.checked} entries", f"signatures intact: {checked}"]


def check_roles(target: Installation) -> tuple[bool, list[str]]:
    connection = target.session.connection()
    if connection.dialect.name != "postgresql":
        return True, ["SQLite has no database roles: the database file and its backups are owner-only"]
    problems, warnings = db_roles.app_role_findings(connection)
    if problems:
        return False, problems
    role, schema = connection.execute(sa.text("SELECT current_user, current_schema()")).one()
    return True, warnings or [f"the application's role {role} owns nothing in schema {schema} and holds only its "
                              "grants: no UPDATE on append-only tables, no DELETE, TRUNCATE or CREATE"]


CHECKS: tuple[tuple[str, str, Callable[[Installation], tuple[bool, list[str]]]], ...] = (
    ("packages", "Installed packages equal the lock", check_packages),
    ("schema", "Database schema at the newest migration", check_schema),
    ("guards", "Append-only guards present on the database", check_guards),
    ("secrets", "Instance keys and secrets readable only by their owner", check_secrets),
    ("certificate", "Site certificate valid and not near expiry", check_certificate),
    ("fonts", "Fonts the documents need present", check_fonts),
    ("pdf", "PDF rendered, signed and verified", check_pdf),
    ("audit", "Audit trail and signatures verify", check_audit),
    ("roles", "The application's database role cannot alter the record's tables", check_roles),
)


def run_checks(target: Installation) -> list[Check]:
    results = []
    for key, title, function in CHECKS:
        try:
            passed, details = function(target)
        except Exception as error:  # noqa: BLE001 - an IQ reports every failure; it does not stop at one
            target.session.rollback()
            passed, details = False, [f"{type(error).__name__}: {error}"]
        results.append(Check(key, title, passed, tuple(details)))
    return results


@dataclass(frozen=True)
class Report:
    filename: str
    content: bytes
    passed: bool
    signed: bool
    stored: QualificationRecord | None
    not_stored: str | None  # why not, when it is not


def _facts(target: Installation, checks: list[Check]) -> dict[str, Any]:
    url = sa.engine.make_url(target.config["DATABASE_URL"])
    lock_text = target.lock_file.read_text(encoding="utf-8") if target.lock_file.is_file() else ""
    lock = lockfile.parse(lock_text)
    installed = _installed()
    try:
        version = importlib.metadata.version("mfg")
    except importlib.metadata.PackageNotFoundError:
        version = "not installed (source checkout)"
    return {
        "record": "installation_qualification", "run_at": target.now, "run_by": f"cli:{getpass.getuser()}",
        "host": socket.gethostname(), "site": target.config.get("SITE_NAME"), "demo": bool(target.config.get("DEMO")),
        "product": {"name": "mfg", "version": version},
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": f"{platform.machine()} {platform.system()} {platform.release()}",
        "lock": {"file": str(target.lock_file), "sha256": lock.sha256 if lock_text else None,
                 "target": f"Python {lock.python} on {lock.platform}"},
        "database": {"dialect": url.get_backend_name(), "url": url.render_as_string(hide_password=True)},
        "instance_path": str(target.instance_path),
        "passed": all(c.passed for c in checks),
        "checks": [{"key": c.key, "title": c.title, "passed": c.passed, "details": list(c.details)} for c in checks],
        "packages": [{"name": name, "locked": locked, "installed": installed.get(name),
                      "equal": installed.get(name) == locked} for name, locked in sorted(lock.pins.items())],
    }


def report(target: Installation, checks: list[Check]) -> Report:
    """Render the IQ report of ``checks``; sign it and store it when it can be (in the caller's transaction)."""
    facts = _facts(target, checks)
    passed = facts["passed"]
    stamp = target.now.strftime("%Y%m%dT%H%M%SZ")
    filename = f"IQ-{facts['host']}-{stamp}.pdf"
    failed = ", ".join(c.key for c in checks if not c.passed)
    by_key = {c.key: c for c in checks}
    not_stored: str | None
    try:
        signer = target.signer()
    except pdfs.SigningMaterialError as error:
        signer, not_stored = None, f"not signed and not stored: the site signing material cannot be loaded ({error})"
    else:
        not_stored = None if by_key["schema"].passed else (
            "signed but not stored in the database, whose schema check failed (not reachable, or not at the "
            "newest migration), so verify-pdf cannot check this copy: mend it, then qualify again")
    snapshot = canonical_json(facts).encode()
    anchor = _anchor(target) if by_key["schema"].passed and by_key["audit"].passed else None
    html = documents.document_html(
        "reports/qualification.html", f=facts, checks=checks, not_stored=not_stored, signed=signer is not None,
        watermark=facts["demo"], audit_position=documents.position_line(anchor),
        generated_at=iso_utc(target.now), title=f"Installation qualification {facts['host']} {stamp}",
        header=f"Installation qualification · {facts['host']} · {iso_utc(target.now)} · "
               f"{'PASSED' if passed else 'FAILED'}")
    content = pdfs.render_pdf(html, attachment=snapshot, attachment_name="qualification.json",
                              title=f"Installation qualification {facts['host']} {stamp}",
                              keywords=[anchor_keyword(anchor)] if anchor else [])
    if signer is None:
        return Report(filename, content, passed, False, None, not_stored)
    content = pdfs.sign_pdf(content, signer, reason=f"installation qualification: {'passed' if passed else 'FAILED'}",
                            location=facts["host"])
    if not_stored is not None:
        return Report(filename, content, passed, True, None, not_stored)
    record = QualificationRecord(run_at=target.now, run_by=facts["run_by"], host=facts["host"], passed=passed,
                                 failed=failed, lock_sha256=facts["lock"]["sha256"] or "", filename=filename,
                                 sha256=pdfs.sha256_hex(content), snapshot_sha256=hashlib.sha256(snapshot).hexdigest(),
                                 pages=documents.page_count(content), content=content)
    target.session.add(record)
    audit.flush(target.session, reason=f"installation qualification {'passed' if passed else 'failed: ' + failed}")
    return Report(filename, content, passed, True, record, None)


def _anchor(target: Installation) -> Anchor | None:
    """The audit position the report is issued at (only when the trail verified: nothing vouches for a broken one)."""
    try:
        return audit_anchors.current_anchor(target.session)
    except (DomainError, AuditKeyError):
        return None


def qualify(target: Installation) -> tuple[list[Check], Report]:
    checks = run_checks(target)
    return checks, report(target, checks)

