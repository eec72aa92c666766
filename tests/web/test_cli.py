"""The administrator commands, run through Flask's CLI runner on the real database."""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa

from mfg.config import RESOURCE_ROOT
from mfg.demo.seed import DEMO_USERS
from mfg.extensions import db
from mfg.models import SopVersion, User
from tests.support import DEMO_SOP, drop_audit_update_guard


def test_users_create_reads_the_password_from_stdin_and_file(app, tmp_path):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "--username", "olivia", "--full-name", "Olivia Op",
                                 "--roles", "operator", "--password-file", "-"], input="a-long-secret-1\n")
    assert result.exit_code == 0, result.output
    secret = tmp_path / "pw"
    secret.write_text("another-secret-2\n")
    assert "pending a second person's confirmation: operator" in result.output  # the two-person rule
    combined = runner.invoke(args=["users", "create", "--username", "quinn", "--full-name", "Quinn",
                                   "--roles", "qa,admin", "--password-file", str(secret)])
    assert combined.exit_code == 1 and "cannot be combined with qa" in combined.output
    result = runner.invoke(args=["users", "create", "--username", "quinn", "--full-name", "Quinn",
                                 "--roles", "admin", "--password-file", str(secret)])
    assert result.exit_code == 0, result.output
    listing = runner.invoke(args=["users", "list"]).output
    assert "olivia\tOlivia Op\t (pending: operator)\tactive" in listing and "quinn\tQuinn\tadmin\t" in listing
    refused = runner.invoke(args=["users", "create", "--username", "bad", "--full-name", "B", "--roles", "x",
                                  "--password-file", "-"], input="short\n")
    assert refused.exit_code == 1 and "unknown role" in refused.output and "at least 12" in refused.output


def test_users_unlock_deactivate_and_reset(app, make_user):
    make_user("olivia")
    runner = app.test_cli_runner()
    assert runner.invoke(args=["users", "unlock", "olivia", "--reason", "x"]).exit_code == 1  # not locked
    result = runner.invoke(args=["users", "reset-password", "olivia", "--password-file", "-",
                                 "--reason", "forgotten"], input="temporary-secret-3\n")
    assert result.exit_code == 0, result.output
    assert runner.invoke(args=["users", "deactivate", "olivia", "--reason", "left"]).exit_code == 0
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.username == "olivia"))
        assert user.must_change_password and not user.active


def test_sops_load_refuses_a_changed_file(app, make_user):
    make_user("loader", "qa")
    target = shutil.copy(DEMO_SOP, app.config["SOPS_DIR"])
    runner = app.test_cli_runner()
    result = runner.invoke(args=["sops", "load", "--user", "loader"])
    assert result.exit_code == 0 and "loaded DEMO-PROC v1 (draft)" in result.output
    with open(target, "a") as handle:
        handle.write("\n# edited\n")
    result = runner.invoke(args=["sops", "load", "--user", "loader"])
    assert result.exit_code == 1 and "new version number" in result.output
    assert "DEMO-PROC\tv1\tdraft" in runner.invoke(args=["sops", "list"]).output


def test_audit_verify_exit_codes(app, make_user):
    make_user("olivia")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0 and "audit trail intact: 1 entries checked" in result.output
    engine = drop_audit_update_guard(app)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_entry SET username = 'someone-else' WHERE seq = 1"))
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1 and "entry 1 was altered" in result.output


def test_audit_signatures_command(app, make_user):
    result = app.test_cli_runner().invoke(args=["audit", "signatures"])
    assert result.exit_code == 0 and "signatures intact: 0 checked" in result.output


def test_init_demo_is_idempotent(app):
    runner = app.test_cli_runner()
    app.config["SOPS_DIR"] = str(DEMO_SOP.parent)
    first = runner.invoke(args=["init", "--demo"])
    assert first.exit_code == 0, first.output
    assert "created demo users" in first.output and "loaded and approved DEMO-PROC v1" in first.output
    instance = Path(app.instance_path)
    key, config = instance / "signing" / "site-key.pem", instance / "config.py"
    key_bytes, secret = key.read_bytes(), config.read_text()
    assert "SECRET_KEY" in secret and "DEMO = True" in secret and oct(key.stat().st_mode)[-3:] == "600"
    second = runner.invoke(args=["init", "--demo"])
    assert second.exit_code == 0 and "created" not in second.output
    assert key.read_bytes() == key_bytes and config.read_text() == secret
    with app.app_context():
        assert db.session.scalar(sa.select(SopVersion.status)) == "effective"
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == len(DEMO_USERS) == 7
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0


def test_demo_batch_writes_signed_documents_that_verify_pdf_accepts_and_a_tampered_copy_fails(app, tmp_path):
    """The validation and training data set: one NK batch as the demo users, intake to conditional release."""
    runner = app.test_cli_runner()
    app.config["SOPS_DIR"] = str(RESOURCE_ROOT / "sops")
    assert runner.invoke(args=["init", "--demo"]).exit_code == 0
    out = tmp_path / "out"
    result = runner.invoke(args=["demo-batch", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "conditionally released (sterility pending)" in result.output
    files = sorted(p.name for p in out.iterdir())
    assert [name.split("-", 1)[1] for name in files] == ["batch_record-r1.pdf", "coa-r1.pdf", "labels-r1.pdf"]
    record = next(out.glob("*-batch_record-r1.pdf"))
    good = runner.invoke(args=["verify-pdf", str(record)])
    assert good.exit_code == 0, good.output
    assert "signature: valid, intact" in good.output and "snapshot: matches the stored record" in good.output
    tampered = tmp_path / "tampered.pdf"
    data = bytearray(record.read_bytes())
    data[len(data) // 2] ^= 0x20
    tampered.write_bytes(bytes(data))
    bad = runner.invoke(args=["verify-pdf", str(tampered)])
    assert bad.exit_code == 1 and "INVALID: the document was changed after it was signed" in bad.output
    unstored = tmp_path / "unsigned.pdf"
    unstored.write_bytes(b"%PDF-1.7\n%%EOF\n")
    assert "INVALID" in runner.invoke(args=["verify-pdf", str(unstored)]).output


def test_sops_load_from_a_folder_that_does_not_exist_or_is_empty_fails_loudly(app, make_user, tmp_path):
    make_user("loader", "qa")
    runner = app.test_cli_runner()
    missing = runner.invoke(args=["sops", "load", "--user", "loader", "--dir", "/no/such/folder"])
    assert missing.exit_code == 1
    assert "the master record folder /no/such/folder does not exist" in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(args=["sops", "load", "--user", "loader", "--dir", str(empty)])
    assert result.exit_code == 1 and f"no master records in {empty}: it holds no .yaml or .yml file" in result.output


def test_init_refuses_an_installation_without_its_master_records(app, tmp_path):
    """A package installed without sops/ (or SOPS_DIR set wrong) stops at once, before writing anything."""
    runner = app.test_cli_runner()
    app.config["SOPS_DIR"] = str(tmp_path / "nowhere")
    result = runner.invoke(args=["init", "--demo"])
    assert result.exit_code == 1 and f"the master record folder {tmp_path / 'nowhere'} does not exist" in result.output
    assert not (Path(app.instance_path) / "config.py").exists()
    app.config["SOPS_DIR"] = str(tmp_path)  # exists, but holds no definition file
    result = runner.invoke(args=["init"])
    assert result.exit_code == 1 and f"no master records in {tmp_path}" in result.output


def _scenario(app, tmp_path, scenario):
    runner = app.test_cli_runner()
    app.config["SOPS_DIR"] = str(RESOURCE_ROOT / "sops")
    assert runner.invoke(args=["init", "--demo"]).exit_code == 0
    out = tmp_path / scenario
    result = runner.invoke(args=["demo-batch", "--out", str(out), "--scenario", scenario])
    assert result.exit_code == 0, result.output
    return runner, result.output, sorted(p.name.split("-", 1)[1] for p in out.iterdir()) if out.exists() else []


def _pdf_text(path):
    import io

    from pypdf import PdfReader

    return " ".join(" ".join((page.extract_text() or "").split()) for page in PdfReader(io.BytesIO(
        path.read_bytes())).pages)


def _actors(action):
    from mfg.extensions import db
    from mfg.models import AuditEntry

    return {e.username for e in db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action.like(action)))}


def test_the_final_scenario_ends_with_a_supplemental_certificate_and_a_second_batch_record(app, tmp_path):
    runner, output, files = _scenario(app, tmp_path, "final")
    assert "released on its final results" in output
    assert sorted(files) == ["batch_record-r1.pdf", "batch_record-r2.pdf", "coa-r1.pdf", "coa-r2.pdf", "labels-r1.pdf"]
    first, supplemental = (next((tmp_path / "final").glob(f"*-coa-r{n}.pdf")) for n in (1, 2))
    assert "Supplemental" not in _pdf_text(first) and "PENDING" in _pdf_text(first)
    text = _pdf_text(supplemental)
    assert "Supplemental: supersedes revision 1" in text and "No growth · meets" in text  # final results only
    assert "PENDING" not in text and "not yet" not in text
    for document in (first, supplemental):  # both revisions stay valid
        assert runner.invoke(args=["verify-pdf", str(document)]).exit_code == 0
    with app.app_context():
        assert _actors("batch.create") == {"operator1"}  # not the command line's account
        assert runner.invoke(args=["audit", "verify"]).exit_code == 0


def test_the_sterility_positive_scenario_blocks_the_other_bag_alerts_the_clinic_and_rejects(app, tmp_path):
    runner, output, files = _scenario(app, tmp_path, "sterility-positive")
    assert "infused after the two-person bedside check" in output
    assert "refused at the bedside: BAG" in output and "IS BLOCKED" in output
    assert "rejected" in output
    with app.app_context():
        assert _actors("product.blocked") == {"clinical1"}
        assert runner.invoke(args=["audit", "verify"]).exit_code == 0
    assert "batch_record-r2.pdf" in files


def test_the_cancelled_scenario_cancels_before_any_starting_material(app, tmp_path):
    runner, output, files = _scenario(app, tmp_path, "cancelled")
    assert "cancelled before any starting material was received" in output and files == []


def test_the_in_progress_scenario_stops_a_batch_of_another_subject_before_the_step_named(app, tmp_path):
    """The screens' states for training and `make screenshots`: a batch performed up to a step, which stays open."""
    from mfg.extensions import db
    from mfg.models import Batch, Subject
    from mfg.services import batches

    runner = app.test_cli_runner()
    app.config["SOPS_DIR"] = str(RESOURCE_ROOT / "sops")
    assert runner.invoke(args=["init", "--demo"]).exit_code == 0
    result = runner.invoke(args=["demo-batch", "--out", str(tmp_path / "out"), "--scenario", "in-progress",
                                 "--subject", "NK-002", "--until", "NK-INTAKE:intake_counts"])
    assert result.exit_code == 0, result.output
    assert "of subject NK-002 open at NK-INTAKE intake_counts (in progress)" in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no document issued
    with app.app_context():
        batch = db.session.scalars(sa.select(Batch).join(Subject, Batch.subject_id == Subject.id)
                                   .where(Subject.code == "NK-002")).one()
        done = [e.step_id for e in batches.executions(db.session, batch)]
        assert done[0] == "identify_bag" and "label_data" in done and "intake_counts" not in done
        assert "intake_counts" in {item.step.id for item in batches.open_steps(db.session, batch)}
    wrong = runner.invoke(args=["demo-batch", "--out", str(tmp_path / "x"), "--until", "NK-INTAKE:intake_counts"])
    assert wrong.exit_code == 2 and "only with --scenario in-progress" in wrong.output
