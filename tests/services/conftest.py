from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mfg.services import sops

from tests.support import DEMO_SOP, PASSWORD


@pytest.fixture
def sops_dir(app) -> Path:
    return Path(app.config["SOPS_DIR"])


@pytest.fixture
def approved_sop(session, make_user, sops_dir):
    """DEMO-PROC v1 loaded by one QA user and approved (signed) by another."""
    shutil.copy(DEMO_SOP, sops_dir / DEMO_SOP.name)
    loader = make_user("loader", "qa")
    approver = make_user("approver", "qa")
    session.add_all([loader, approver])
    version = sops.load_directory(session, sops_dir, loader=loader).loaded[0]
    sops.approve(session, version, signer=approver, password=PASSWORD, username="approver",
                 require_username=True)
    session.commit()
    return version
