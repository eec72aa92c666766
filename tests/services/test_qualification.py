"""Installation qualification (`flask --app mfg qualify`): every check passes on a fresh instance, and each
fails with its own message when its condition is broken; the signed report verifies with verify-pdf."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pypdf import PdfReader

from mfg.config import RESOURCE_ROOT
from mfg.domain.audit_chain import parse_anchor_keyword
from mfg.extensions import db
from mfg.migrate import alembic_config
from mfg.models import AuditEntry, QualificationRecord
from mfg.reports import pdf as pdfs
from mfg.reports.pdf import DOCUMENT_FONTS
from mfg.services import qualification
from tests.support import DEMO_SOP, attacker_engine, drop_audit_update_guard, owner_url, two_roles

TITLES = [title for _key, title, _function in qualification.CHECKS]


@pytest.fixture
def instance(app, site_certificate) -> Path:
    """An instance as `flask --app mfg init` leaves it (its secret key file, the site key and certificate)."""
    app.config["SOPS_DIR"] = str(DEMO_SOP.parent)
    result = app.test_cli_runner().invoke(args=["init"])
    assert result.exit_code == 0, result.output
    return Path(app.instance_path)


def _qualify(app, out: Path):
    result = app.test_cli_runner().invoke(args=["qualify", "--out", str(out)])
    failed = [title for title in TITLES if f"FAIL  {title}" in result.output]
    return result, failed


def _engine(app) -> sa.Engine:
    """Whoever can write the database (the attacker's engine: tests.support.attacker_engine)."""
    return attacker_engine(app)


def test_a_fresh_instance_qualifies_and_its_signed_report_verifies(app, instance, tmp_path):
    result, failed = _qualify(app, tmp_path / "iq")
    assert result.exit_code == 0, result.output
    assert failed == [] and all(f"PASS  {title}" in result.output for title in TITLES)
    assert f"QUALIFICATION PASSED: {len(TITLES)} of {len(TITLES)} checks" in result.output
    (report,) = (tmp_path / "iq").glob("IQ-*.pdf")
    verified = app.test_cli_runner().invoke(args=["verify-pdf", str(report)])
    assert verified.exit_code == 0, verified.output
    assert "installation qualification of" in verified.output and ", passed, " in verified.output
    # it carries the audit position at its issue (issue [3.5] item 4), checked against the trail
    anchor = parse_anchor_keyword(pdfs.keywords(report.read_bytes()))
    assert anchor is not None and f"audit position: entry {anchor.seq}" in verified.output
    assert f"Audit position at issue: entry {anchor.seq}" in " ".join(
        " ".join(page.extract_text().split()) for page in PdfReader(report).pages)
    with app.app_context():
        (record,) = db.session.scalars(sa.select(QualificationRecord)).all()
        assert record.passed and record.failed == "" and record.filename == report.name
        entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.entity_type == "qualification_record"))
        assert entry.action == "qualification_record.create" and entry.reason == "installation qualification passed"
    tampered = tmp_path / "tampered.pdf"
    data = bytearray(report.read_bytes())
    data[len(data) // 3] ^= 0x01
    tampered.write_bytes(bytes(data))
    assert app.test_cli_runner().invoke(args=["verify-pdf", str(tampered)]).exit_code == 1
    # the run left the trail intact: qualifying again passes
    assert _qualify(app, tmp_path / "iq-2")[0].exit_code == 0


def test_the_report_names_the_checks_versions_lock_host_and_time(app, instance, tmp_path):
    from pypdf import PdfReader

    _qualify(app, tmp_path / "iq")
    (report,) = (tmp_path / "iq").glob("IQ-*.pdf")
    text = " ".join(page.extract_text() for page in PdfReader(report).pages)
    for title in TITLES:
        assert " ".join(title.split()) in " ".join(text.split())
    assert "Result: PASSED" in text and "Page 1 of" in text
    with app.app_context():
        record = db.session.scalar(sa.select(QualificationRecord))
        assert record.lock_sha256 in text.replace("\n", "") and record.host in text
    assert re.search(r"flask \S+ \S+ equal", text)  # each locked package, its installed version and the verdict


def _drop_trigger(app, name: str, table: str) -> None:
    engine = _engine(app)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TRIGGER {name}" if engine.dialect.name == "sqlite" else
                             f"DROP TRIGGER {name} ON {table}"))


def test_a_dropped_trigger_fails_the_guards_check_by_name(app, instance, tmp_path):
    name = "signature_refuse_delete" if _engine(app).dialect.name == "sqlite" else "signature_refuse_change"
    _drop_trigger(app, name, "signature")
    result, failed = _qualify(app, tmp_path)
    assert result.exit_code == 1 and failed == ["Append-only guards present on the database"]
    assert f"trigger {name} on signature is missing" in result.output
    assert "QUALIFICATION FAILED: 1 of 9 checks: Append-only guards present on the database" in result.output


def test_a_disabled_or_rewritten_guard_fails_the_guards_check(app, instance, tmp_path):
    engine = _engine(app)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(sa.text("DROP TRIGGER audit_entry_refuse_update"))
            conn.execute(sa.text("CREATE TRIGGER audit_entry_refuse_update BEFORE UPDATE ON audit_entry WHEN 0 "
                                 "BEGIN SELECT RAISE(ABORT, 'GMP record guard: UPDATE on audit_entry refused'); END"))
            expected = ["trigger audit_entry_refuse_update on audit_entry was changed"]
        else:
            conn.execute(sa.text("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_refuse_change"))
            conn.execute(sa.text("CREATE OR REPLACE FUNCTION batch_immutable() RETURNS trigger LANGUAGE plpgsql "
                                 "AS $$ BEGIN RETURN NEW; END $$"))
            conn.execute(sa.text("CREATE OR REPLACE FUNCTION mfg_refuse_change() RETURNS trigger LANGUAGE plpgsql "
                                 "AS $$ BEGIN RETURN NULL; END $$"))
            expected = ["trigger audit_entry_refuse_change on audit_entry is disabled",
                        "function mfg_refuse_change() of trigger signature_refuse_change was changed"]
        conn.execute(sa.text("CREATE TABLE scratch (id INTEGER)"))
        conn.execute(sa.text("CREATE TRIGGER scratch_quiet BEFORE DELETE ON scratch " + (
            "BEGIN SELECT 1; END" if engine.dialect.name == "sqlite" else
            "FOR EACH ROW EXECUTE FUNCTION mfg_refuse_change()")))
    result, failed = _qualify(app, tmp_path)
    assert result.exit_code == 1 and failed == ["Append-only guards present on the database"]
    for line in [*expected, "trigger scratch_quiet on scratch is not part of the schema"]:
        assert line in result.output


def test_a_world_readable_key_fails_the_secrets_check(app, instance, tmp_path):
    key = instance / app.config["SIGNING_KEY_FILE"]
    key.chmod(0o644)
    result, failed = _qualify(app, tmp_path)
    assert result.exit_code == 1 and failed == ["Instance keys and secrets readable only by their owner"]
    assert f"{key} can be read or written by others (mode 0644): chmod 600 it" in result.output
    (instance / "config.py").unlink()
    result, _failed = _qualify(app, tmp_path)
    assert f"{instance / 'config.py'} is missing: run `flask --app mfg init`" in result.output


def test_a_database_one_migration_behind_fails_and_its_report_is_not_stored(app, instance, tmp_path, database_url):
    command.downgrade(alembic_config(owner_url(database_url)), "-1")  # as the schema's owner migrates it
    result, failed = _qualify(app, tmp_path / "iq")
    assert result.exit_code == 1 and "Database schema at the newest migration" in failed
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_revision("head")
    assert head is not None  # the package carries its migrations
    assert (f"the database is at revision {head.down_revision}; the newest is {head.revision}: "
            "run `flask --app mfg init`") in result.output
    assert "signed but not stored in the database, whose schema check failed" in result.output
    (report,) = (tmp_path / "iq").glob("IQ-*.pdf")
    if two_roles(app):  # init migrates as the owner (README: Two PostgreSQL roles)
        app.config["OWNER_DATABASE_URL"] = owner_url(database_url)
    assert app.test_cli_runner().invoke(args=["init"]).exit_code == 0  # migrated: the report is still not stored
    refused = app.test_cli_runner().invoke(args=["verify-pdf", str(report)])
    assert refused.exit_code == 1 and "the file is not a document this site stored" in refused.output
    assert _qualify(app, tmp_path / "iq-2")[0].exit_code == 0


def _certificate(key: rsa.RSAPrivateKey, *, days: int) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Short-lived test certificate")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_a_certificate_near_its_expiry_fails_the_certificate_check(app, instance, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (instance / app.config["SIGNING_KEY_FILE"]).write_bytes(_pem(key))
    (instance / app.config["SIGNING_CERT_FILE"]).write_bytes(_certificate(key, days=30))
    result, failed = _qualify(app, tmp_path)
    assert result.exit_code == 1 and failed == ["Site certificate valid and not near expiry"]
    assert "expires in 29 days, within the renewal period of 60 days: renew it" in result.output
    app.config["CERTIFICATE_RENEWAL_DAYS"] = 20
    assert _qualify(app, tmp_path)[0].exit_code == 0


def test_a_key_that_is_not_the_certificates_fails_and_the_report_is_written_unsigned(app, instance, tmp_path):
    key_file = instance / app.config["SIGNING_KEY_FILE"]
    site_key = key_file.read_bytes()
    key_file.write_bytes(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    result, failed = _qualify(app, tmp_path / "iq")
    assert result.exit_code == 1
    assert failed == ["Site certificate valid and not near expiry", "PDF rendered, signed and verified"]
    assert "does not belong to its certificate" in result.output
    assert "not signed and not stored: the site signing material cannot be loaded" in result.output
    (report,) = (tmp_path / "iq").glob("IQ-*.pdf")
    refused = app.test_cli_runner().invoke(args=["verify-pdf", str(report)])
    assert refused.exit_code == 1 and "does not belong to its certificate" in refused.output  # nothing to check with
    key_file.write_bytes(site_key)
    refused = app.test_cli_runner().invoke(args=["verify-pdf", str(report)])
    assert refused.exit_code == 1 and "INVALID: not signed" in refused.output
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(QualificationRecord)) == 0


def test_a_font_that_is_not_installed_fails_the_fonts_check(app, instance):
    with app.app_context():
        target = qualification.Installation(session=db.session, config=app.config, instance_path=instance,
                                            fonts=(*DOCUMENT_FONTS, ("No Such Font", "normal")))
        passed, details = qualification.check_fonts(target)
    assert not passed and details == ["font No Such Font normal is not installed: documents would print in "
                                      "another font"]


def test_an_altered_audit_trail_fails_the_audit_check(app, instance, tmp_path, make_user):
    make_user("olivia")
    engine = drop_audit_update_guard(app)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_entry SET username = 'someone-else' WHERE seq = 1"))
    result, failed = _qualify(app, tmp_path)
    assert result.exit_code == 1
    assert failed == ["Append-only guards present on the database", "Audit trail and signatures verify"]
    assert "audit trail broken after 0 good entries: entry 1 was altered" in result.output
    (report,) = tmp_path.glob("IQ-*.pdf")  # nothing vouches for a broken trail: no audit position
    assert parse_anchor_keyword(pdfs.keywords(report.read_bytes())) is None


def test_every_font_the_documents_name_is_one_qualify_checks():
    families = set()
    for template in (RESOURCE_ROOT / "templates" / "reports").glob("*.html"):
        for declaration in re.findall(r"font-family:\s*([^;}]+)", template.read_text()):
            families.add(declaration.split(",")[0].strip().strip("\"'"))
    assert families == {family for family, _weight in DOCUMENT_FONTS}
    assert {weight for _family, weight in DOCUMENT_FONTS} == {"normal", "bold"}
