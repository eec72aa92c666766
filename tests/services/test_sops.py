"""Controlled master records: load once with sha256, refuse changed files, approve by a second QA user."""

from __future__ import annotations

import shutil

import pytest
import sqlalchemy as sa

from mfg.domain.errors import InvalidTransition, PermissionDenied, ValidationFailed
from mfg.models import AuditEntry, SopVersion
from mfg.services import sops
from tests.support import DEMO_SOP, PASSWORD


@pytest.fixture
def qa(session, make_user):
    return session.merge(make_user("loader", "qa")), session.merge(make_user("approver", "qa"))


def _v2(sops_dir, title="Demo process v2"):
    text = DEMO_SOP.read_text().replace("version: 1", "version: 2", 1)
    text = text.replace(text.split("title: ", 1)[1].split("\n", 1)[0], title, 1)
    (sops_dir / "DEMO-PROC_v2.yaml").write_text(text)


def test_load_stores_each_version_once_with_its_sha256(session, qa, sops_dir):
    loader, _ = qa
    shutil.copy(DEMO_SOP, sops_dir)
    result = sops.load_directory(session, sops_dir, loader=loader)
    session.commit()
    (version,) = result.loaded
    import hashlib
    assert version.sha256 == hashlib.sha256(DEMO_SOP.read_bytes()).hexdigest()
    assert version.status == "draft" and version.content == DEMO_SOP.read_text()
    again = sops.load_directory(session, sops_dir, loader=loader)
    assert again.loaded == [] and again.unchanged == ["DEMO-PROC v1"]
    assert session.scalar(sa.select(sa.func.count()).select_from(SopVersion)) == 1


def test_a_changed_file_under_an_existing_version_is_refused(session, qa, sops_dir):
    loader, _ = qa
    shutil.copy(DEMO_SOP, sops_dir)
    sops.load_directory(session, sops_dir, loader=loader)
    session.commit()
    path = sops_dir / DEMO_SOP.name
    path.write_text(path.read_text() + "\n# an innocent-looking edit\n")
    with pytest.raises(ValidationFailed, match="already loaded.*new version number"):
        sops.load_directory(session, sops_dir, loader=loader)


def test_invalid_files_are_reported_with_file_and_path_and_nothing_loads(session, qa, sops_dir):
    loader, _ = qa
    shutil.copy(DEMO_SOP, sops_dir)
    (sops_dir / "BAD_v1.yaml").write_text("kind: master_batch_record\ncode: BAD\nversion: 1\ntitle: x\n"
                                          "stages:\n  - id: s\n    title: S\n    steps:\n"
                                          "      - id: a\n        title: A\n        colour: red\n")
    with pytest.raises(ValidationFailed) as info:
        sops.load_directory(session, sops_dir, loader=loader)
    assert any(p.startswith("BAD_v1.yaml: stages[0].steps[0].colour") for p in info.value.problems)
    assert session.scalar(sa.select(sa.func.count()).select_from(SopVersion)) == 0


def test_file_name_must_match_code_and_version(session, qa, sops_dir):
    loader, _ = qa
    shutil.copy(DEMO_SOP, sops_dir / "something.yaml")
    with pytest.raises(ValidationFailed, match="file name must be DEMO-PROC_v1.yaml"):
        sops.load_directory(session, sops_dir, loader=loader)


def test_only_qa_loads(session, make_user, sops_dir):
    operator = session.merge(make_user("olivia", "operator"))
    with pytest.raises(PermissionDenied):
        sops.load_directory(session, sops_dir, loader=operator)


def test_the_loader_cannot_approve(session, qa, sops_dir):
    loader, _ = qa
    shutil.copy(DEMO_SOP, sops_dir)
    version = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    with pytest.raises(PermissionDenied, match="cannot approve"):
        sops.approve(session, version, site_timezone="UTC", signer=loader, password=PASSWORD, username="loader",
                     require_username=True)
    assert version.status == "draft"


def test_approval_makes_effective_and_supersedes_the_previous_version(session, qa, sops_dir):
    loader, approver = qa
    shutil.copy(DEMO_SOP, sops_dir)
    v1 = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    sops.approve(session, v1, site_timezone="UTC",
                 signer=approver, password=PASSWORD, username="approver", require_username=True)
    session.commit()
    assert v1.status == "effective" and v1.approval_signature.meaning == "approved"
    assert sops.effective(session, "DEMO-PROC").id == v1.id
    _v2(sops_dir)
    v2 = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    session.commit()
    assert sops.effective(session, "DEMO-PROC").id == v1.id  # a draft changes nothing
    sops.approve(session, v2, site_timezone="UTC",
                 signer=approver, password=PASSWORD, username=None, require_username=False)
    session.commit()
    assert (v1.status, v2.status) == ("superseded", "effective")
    with pytest.raises(InvalidTransition):
        sops.approve(session, v1, site_timezone="UTC",
                     signer=approver, password=PASSWORD, username=None, require_username=False)
    updates = list(session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "sop_version.update")))
    assert any('"status":"superseded"' in (e.after or "") for e in updates)


def test_the_definition_is_read_back_from_the_stored_text(session, approved_sop):
    record = sops.definition(approved_sop)
    assert record.code == "DEMO-PROC" and record.stages


def test_only_qa_approves_a_master_record(session, qa, sops_dir, make_user):
    loader, _ = qa
    clinical = session.merge(make_user("clara", "clinical"))
    shutil.copy(DEMO_SOP, sops_dir)
    version = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    with pytest.raises(PermissionDenied, match="QA role"):
        sops.approve(session, version, site_timezone="UTC",
                     signer=clinical, password=PASSWORD, username="clara", require_username=True)


def test_a_trial_configuration_must_state_the_sites_time_zone(session, qa, sops_dir):
    """Screens show times in the site's SITE_TIMEZONE and documents in the trial configuration's
    site_timezone: approving a configuration that states another zone is refused, naming both."""
    from mfg.config import RESOURCE_ROOT

    loader, approver = qa
    text = (RESOURCE_ROOT / "sops" / "trial" / "NK-TRIAL_v1.yaml").read_text()
    assert "site_timezone: UTC" in text
    (sops_dir / "NK-TRIAL_v1.yaml").write_text(text.replace("site_timezone: UTC", "site_timezone: Asia/Shanghai"))
    version = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    refusals = sops.guard_approve(session, approver, version, site_timezone="UTC")
    assert [str(r) for r in refusals] == [
        "This trial configuration states the site's time zone as Asia/Shanghai, but this site runs on UTC "
        "(SITE_TIMEZONE): screens and documents must use one zone."]
    with pytest.raises(ValidationFailed, match="Asia/Shanghai"):
        sops.approve(session, version, site_timezone="UTC",
                     signer=approver, password=PASSWORD, username=None, require_username=False)
    assert version.status == "draft"
    sops.approve(session, version, site_timezone="Asia/Shanghai",
                 signer=approver, password=PASSWORD, username=None, require_username=False)
    assert version.status == "effective"
