"""E-signatures: re-authentication, meaning, printed name, UTC time, hash binding, refusal and audit."""

from __future__ import annotations

import json
import shutil

import pytest
import sqlalchemy as sa

from mfg.domain.canonical import content_hash
from mfg.domain.errors import AuthenticationFailed, PermissionDenied, ValidationFailed
from mfg.models import AuditEntry, Signature
from mfg.services import accounts, signatures, sops
from tests.support import DEMO_SOP, PASSWORD, attacker_engine


@pytest.fixture
def draft(session, make_user, sops_dir):
    shutil.copy(DEMO_SOP, sops_dir / DEMO_SOP.name)
    loader = session.merge(make_user("loader", "qa"))
    version = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    session.commit()
    return version


def test_signature_records_name_time_meaning_and_hash_of_the_content(session, make_user, draft):
    signer = session.merge(make_user("quinn", "qa", full_name="Quinn Quality"))
    sig = signatures.sign(session, signer=signer, password=PASSWORD, meaning="approved", record=draft,
                          username="quinn", comment="looks right")
    session.commit()
    assert (sig.printed_name, sig.meaning, sig.comment) == ("Quinn Quality", "approved", "looks right")
    assert sig.signed_at.tzinfo is not None and sig.signed_at.utcoffset().total_seconds() == 0
    assert sig.content_sha256 == content_hash(draft.signed_content())
    assert json.loads(sig.content)["sha256"] == draft.sha256
    entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "signature.create"))
    assert entry.entity_id == str(sig.id) and entry.username == "test-setup" or entry.username


@pytest.mark.parametrize("password,username,require", [
    ("wrong-password-1", "quinn", True),
    (PASSWORD, "", True),          # first signature of a session needs the user name too
    (PASSWORD, "qa2", True),       # and it must be the signer's own
])
def test_wrong_credentials_create_no_signature(session, make_user, draft, password, username, require):
    signer = session.merge(make_user("quinn", "qa"))
    with pytest.raises(AuthenticationFailed):
        signatures.sign(session, signer=signer, password=password, meaning="approved", record=draft,
                        username=username, require_username=require)
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(Signature)) == 0


def test_later_signatures_in_a_session_need_only_the_password(session, make_user, draft):
    signer = session.merge(make_user("quinn", "qa"))
    sig = signatures.sign(session, signer=signer, password=PASSWORD, meaning="reviewed", record=draft,
                          username=None, require_username=False)
    assert sig.id is not None


def test_wrong_signature_password_counts_toward_lockout_and_is_audited(session, make_user, draft):
    signer = session.merge(make_user("quinn", "qa"))
    policy = accounts.Policy(lockout_threshold=3)
    for _ in range(3):
        with pytest.raises(AuthenticationFailed) as info:
            signatures.sign(session, signer=signer, password="not-my-password", meaning="approved",
                            record=draft, username="quinn")
        session.rollback()
        accounts.record_authentication_failure(session, info.value, policy)
        session.commit()
    actions = list(session.scalars(sa.select(AuditEntry.action).order_by(AuditEntry.seq)))
    assert actions.count("signature.failure") == 3 and actions[-1] == "account.locked"
    assert signer.locked
    with pytest.raises(AuthenticationFailed):  # a locked account cannot sign, even with its password
        signatures.sign(session, signer=signer, password=PASSWORD, meaning="approved", record=draft,
                        username="quinn")


def test_meaning_needs_the_matching_role_and_a_known_value(session, make_user, draft):
    operator = session.merge(make_user("olivia", "operator"))
    admin = session.merge(make_user("adam", "admin"))
    with pytest.raises(PermissionDenied, match="qa role"):
        signatures.sign(session, signer=operator, password=PASSWORD, meaning="released", record=draft,
                        username="olivia")
    with pytest.raises(PermissionDenied):  # administrators sign nothing
        signatures.sign(session, signer=admin, password=PASSWORD, meaning="performed", record=draft,
                        username="adam")
    with pytest.raises(ValidationFailed, match="unknown signature meaning"):
        signatures.sign(session, signer=operator, password=PASSWORD, meaning="blessed", record=draft,
                        username="olivia")


def test_check_reports_records_changed_after_signing(app, session, make_user, approved_sop):
    checked, mismatches = signatures.check_all(session)
    assert checked == 1 and mismatches == []
    session.rollback()  # end the read transaction: DROP TRIGGER waits for every lock on the table
    engine = attacker_engine(app)
    with engine.begin() as conn:  # an edit outside the application, guards dropped first
        if engine.dialect.name == "sqlite":
            conn.execute(sa.text("DROP TRIGGER sop_version_immutable"))
        else:
            conn.execute(sa.text("DROP TRIGGER sop_version_immutable ON sop_version"))
        conn.execute(sa.text("UPDATE sop_version SET title = 'Quietly changed'"))
    session.expire_all()
    checked, mismatches = signatures.check_all(session)
    assert [(m.record_type, m.record_id) for m in mismatches] == [("sop_version", str(approved_sop.id))]
    assert "changed after it was signed" in mismatches[0].problem
