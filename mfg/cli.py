"""Administrator commands: ``flask --app mfg <command>``. Non-interactive; passwords never on argv.

This module is longer than 600 lines because it holds every administrator command, each a thin click wrapper
over a service (init, users, SOPs, the audit trail and its anchors, documents, demo data), and they share the
unit-of-work and session helpers kept private here; split by command group once a group grows logic of its own.
"""

from __future__ import annotations

import getpass
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from . import audit_key, db_roles
from .demo import seed as demo_data
from .domain.errors import DomainError
from .extensions import db
from .migrate import upgrade
from .reports.site_certificate import ensure_site_certificate
from .services import accounts, audit, audit_anchors, signatures, sops
from .unit_of_work import unit_of_work

if TYPE_CHECKING:
    from .models import QualificationRecord


def _policy() -> accounts.Policy:
    return accounts.Policy.from_config(current_app.config)


def _read_password(source: str) -> str:
    """A password from a file, or from standard input with '-': its first line, newline removed."""
    if source == "-":
        line = sys.stdin.readline()
    else:
        with open(source, encoding="utf-8") as handle:
            line = handle.readline()
    password = line.rstrip("\r\n")
    if not password:
        raise click.ClickException("no password read (empty first line)")
    return password


def _cli_session():
    session = db.session
    audit.set_actor(session, name=f"cli:{getpass.getuser()}")
    return session


def _run(action, *, actor=None):
    """Run ``action(session)`` as one unit of work (``mfg.unit_of_work``: a wrong password or an identity
    mismatch is recorded as on the web, ``actor`` being the person acting); domain errors become a message
    and exit code 1."""
    session = _cli_session()
    if actor is not None:
        audit.set_actor(session, actor)  # the command acts as this person, as a signed-in user does on screen
    try:
        with unit_of_work(session, actor=actor, policy=_policy()):
            return action(session)
    except DomainError as exc:
        raise click.ClickException("\n".join(exc.problems)) from None


def _migrate(app: Flask) -> None:
    """The database at the newest schema: as the owner role when OWNER_DATABASE_URL is set, the application's
    role then granted only what it needs (``mfg.db_roles``); else as the application's role, which on
    PostgreSQL then owns the tables (said as a warning)."""
    owner_url = app.config.get("OWNER_DATABASE_URL")
    if owner_url:
        try:
            done = db_roles.setup(owner_url, app.config["DATABASE_URL"])
        except db_roles.RoleSetupError as exc:
            raise click.ClickException(str(exc)) from None
        for line in done:
            click.echo(line)
        return
    upgrade(app.config["DATABASE_URL"])
    click.echo("database schema at head")
    with db.engine.connect() as connection:
        problems, warnings = db_roles.app_role_findings(connection)
    for line in warnings + problems:
        click.echo(line, err=True)


@click.command("init")
@with_appcontext
@click.option("--demo", is_flag=True, help="Flag the instance DEMO and create demo users and master records.")
def init_command(demo: bool) -> None:
    """Prepare instance/: secret key, audit key ring, database at the newest schema (its audit trail sealed),
    site signing key and certificate.

    Safe to run again: existing data, keys and settings are kept.
    """
    app = current_app
    try:  # before anything is written: an installation without its master records is incomplete
        sops.definition_files(Path(app.config["SOPS_DIR"]))
    except DomainError as exc:
        raise click.ClickException("\n".join(exc.problems)) from None
    instance = Path(app.instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    config_file = instance / "config.py"
    if not config_file.exists():
        config_file.write_text(
            "# Written once by `flask --app mfg init`; local to this installation, never committed.\n"
            f"SECRET_KEY = {secrets.token_hex(32)!r}\n"
            f"DEMO = {demo!r}\n", encoding="utf-8")
        config_file.chmod(0o600)
        click.echo(f"created {config_file}")
        app.config["DEMO"] = demo
    key_file = _audit_key_file()
    key_created = audit_key.create_key_file(key_file)
    if key_created:
        click.echo(f"created the audit key ring {key_file} (mode 0600): back it up apart from the database backups")
    inspector = sa.inspect(db.engine)
    # no audit head yet (a new database) or one without seal columns (migration 0016 is about to add them)
    before_sealing = not inspector.has_table("audit_head") or "seal" not in {
        column["name"] for column in inspector.get_columns("audit_head")}
    before_signature_seals = not inspector.has_table("signature_seal")  # migration 0017 is about to add it
    _migrate(app)
    if key_created or before_sealing:  # a new installation, or the upgrade that brings sealing: seal it as it is
        _seal_existing()
    elif not audit.head_sealed(_cli_session()):
        # The key ring was here before: whoever sealed this trail has, so a head without a seal had it removed
        # (init runs at every `make run`: it must never seal over that on its own).
        raise click.ClickException(
            "the audit trail's head is not sealed although this instance's audit key ring already exists: "
            "the seal was removed outside the application, or the database is not this instance's. Run "
            "`flask --app mfg audit verify` and investigate; a trail written before sealing is sealed with "
            "`flask --app mfg audit seal-existing`.")
    if before_signature_seals:  # a new installation, or the upgrade that brings signature seals
        _seal_existing_signatures()
    if ensure_site_certificate(instance / app.config["SIGNING_KEY_FILE"], instance / app.config["SIGNING_CERT_FILE"],
                               app.config["SITE_NAME"], demo=bool(app.config["DEMO"])):
        click.echo("created the site signing key and self-signed certificate")
    if demo:
        if not app.config["DEMO"]:
            raise click.ClickException("this instance is not a demo instance: demo data is refused")
        created = _run(lambda s: demo_data.seed_users(s, _policy()))
        if created:
            click.echo(f"created demo users: {', '.join(created)} (password: {demo_data.DEMO_PASSWORD})")
        loaded = _run(lambda s: demo_data.seed_master_records(
            s, Path(app.config["SOPS_DIR"]), site_timezone=app.config["SITE_TIMEZONE"]))
        for version in loaded:
            click.echo(f"loaded and approved {version.code} v{version.version}")
        created = _run(demo_data.seed_master_data)
        if created:
            click.echo(f"created demo equipment and material lots: {', '.join(created)}")
        created = _run(demo_data.seed_subjects)
        if created:
            click.echo(f"created demo subject: {', '.join(created)}")


users_cli = AppGroup("users", help="Manage user accounts.")


@users_cli.command("create")
@click.option("--username", required=True)
@click.option("--full-name", required=True, help="Printed name, as shown in every signature.")
@click.option("--roles", required=True, help="Comma-separated: operator, qa, clinical, admin.")
@click.option("--password-file", required=True, help="File whose first line is the password, or - for stdin.")
@click.option("--permanent", is_flag=True, help="Do not force a password change at first sign-in (the password "
                                               "still signs nothing until its owner has replaced it).")
def users_create(username: str, full_name: str, roles: str, password_file: str, permanent: bool) -> None:
    """Create an account. The admin role is never combined with a signing role (operator, qa, clinical); a
    signing role is pending until a second administrator or QA confirms it (Administration, Role grants) unless
    ROLE_GRANT_TWO_PERSON is off."""
    password = _read_password(password_file)

    def create(session):  # noqa: ANN001, ANN202
        user = accounts.create_user(session, username=username, full_name=full_name, roles=roles,
                                    password=password, policy=_policy(), temporary=not permanent)
        return user.username, user.roles, [g.role for g in accounts.pending_grants(session, user)]

    name, granted, pending = _run(create)
    click.echo(f"created {name} ({granted or 'no role yet'})"
               + (f"; pending a second person's confirmation: {', '.join(pending)}" if pending else ""))


@users_cli.command("list")
def users_list() -> None:
    session = _cli_session()
    pending: dict[int, list[str]] = {}
    for grant in accounts.pending_grants(session):
        pending.setdefault(grant.user_id, []).append(grant.role)
    for user in accounts.list_users(session):
        state = "inactive" if not user.active else "locked" if user.locked else "active"
        waiting = f" (pending: {','.join(pending[user.id])})" if user.id in pending else ""
        click.echo(f"{user.username}\t{user.full_name}\t{user.roles}{waiting}\t{state}")


def _user(session, username: str):
    user = accounts.get_by_username(session, username)
    if user is None:
        raise DomainError(f"no user named {username}")
    return user


@users_cli.command("deactivate")
@click.argument("username")
@click.option("--reason", required=True)
def users_deactivate(username: str, reason: str) -> None:
    _run(lambda s: accounts.deactivate(s, _user(s, username), reason=reason))
    click.echo(f"deactivated {username}")


@users_cli.command("unlock")
@click.argument("username")
@click.option("--reason", required=True)
def users_unlock(username: str, reason: str) -> None:
    _run(lambda s: accounts.unlock(s, _user(s, username), reason=reason))
    click.echo(f"unlocked {username}")


@users_cli.command("reset-password")
@click.argument("username")
@click.option("--password-file", required=True, help="File whose first line is the password, or - for stdin.")
@click.option("--reason", required=True)
def users_reset_password(username: str, password_file: str, reason: str) -> None:
    password = _read_password(password_file)
    _run(lambda s: accounts.reset_password(s, _user(s, username), temporary_password=password,
                                           policy=_policy(), reason=reason))
    click.echo(f"temporary password set for {username}; it must be changed at next sign-in")


sops_cli = AppGroup("sops", help="Controlled master records.")


@sops_cli.command("load")
@click.option("--user", "username", required=True, help="The QA user loading the files (they cannot approve them).")
@click.option("--dir", "directory", type=click.Path(path_type=Path),
              help="The folder of definition files (default: SOPS_DIR).")
def sops_load(username: str, directory: Path | None) -> None:
    """Validate every definition file and store new versions as drafts (all or nothing)."""
    directory = directory or Path(current_app.config["SOPS_DIR"])

    def action(session):
        loader = _user(session, username)
        audit.set_actor(session, loader)
        return sops.load_directory(session, directory, loader=loader)

    result = _run(action)
    for version in result.loaded:
        click.echo(f"loaded {version.code} v{version.version} (draft) sha256 {version.sha256}")
    for name in result.unchanged:
        click.echo(f"unchanged {name}")


@sops_cli.command("list")
def sops_list() -> None:
    for v in sops.list_versions(_cli_session()):
        click.echo(f"{v.code}\tv{v.version}\t{v.status}\t{v.sha256}\t{v.title}")


audit_cli = AppGroup("audit", help="The audit trail and e-signatures.")


def _audit_key_file() -> Path:
    return Path(current_app.instance_path) / current_app.config["AUDIT_KEY_FILE"]


def _seal_existing_signatures() -> None:
    count = _run(signatures.seal_existing)
    if count:
        click.echo(f"sealed {count} signature(s) made before signatures were sealed (signature.sealed_existing): "
                   "the seal vouches that they do not change from now on, not that the application made them")


def _seal_existing() -> None:
    """Seal the head; `init` then seals the signatures made before sealing (every later entry needs a sealed head)."""
    sealed = _run(audit.seal_existing)
    if sealed.vouches_from is None:
        return
    if sealed.head_seq == 0:
        click.echo("sealed the audit trail (empty) with the audit key")
        return
    click.echo(f"sealed the audit trail with the audit key at entry {sealed.head_seq} (audit.sealed). "
               f"The seal vouches for the trail only from this point on: entries 1 to {sealed.vouches_from - 1} "
               "were written before it, and anyone who could write the database until now could have altered them "
               "unseen; from now on, no change to any entry goes unseen by `audit verify`.")


@audit_cli.command("seal-existing")
def audit_seal_existing() -> None:
    """Seal a trail written before the audit head was sealed (`init` does this too); nothing when it is
    sealed already. A head whose seal does not match is refused: it is evidence to investigate."""
    _seal_existing()
    _seal_existing_signatures()
    click.echo("audit trail sealed")


@audit_cli.command("rotate-key")
def audit_rotate_key() -> None:
    """Add a new key to the audit key ring: it seals from now on; the older keys stay, to verify older seals
    (a backup's head). Records audit.key_rotated, sealed with the new key."""
    key_file = _audit_key_file()
    try:
        key_id = audit_key.rotate(key_file)
    except audit_key.AuditKeyError as exc:
        raise click.ClickException(str(exc)) from None
    _run(lambda s: audit.record_event(s, "audit.key_rotated", details={"key_id": key_id}))
    click.echo(f"added audit key {key_id} to {key_file}; it seals from now on. Back up the key ring again.")


@audit_cli.command("verify")
@click.option("--since-last", is_flag=True,
              help="Check only the entries written since the last verified checkpoint (its seal and entry checked "
                   "first), then the head and its seal. Quick, for routine use; an inspection uses the full verify.")
@click.option("--anchors", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="After the full verify, check every anchor file in this folder (audit seal --out) against the "
                   "trail.")
def audit_verify(since_last: bool, anchors: Path | None) -> None:
    """Walk the whole hash chain and check the head's seal with the audit key ring, then check that every audited
    row holds what the trail says (``services.audit_state``): the full verify, what an inspection uses. Exit 0
    when all is intact; 1 naming the first bad entry or what is wrong with the seal, or every row changed,
    inserted or deleted outside the application. A broken chain is reported alone: the state check compares rows
    with a trail that cannot be trusted. --since-last checks the chain from the last checkpoint only (no state
    check: that reads the whole trail). A verify that passes (its state and anchors too) is recorded as a sealed
    checkpoint (audit.verified), where the next --since-last starts."""
    if since_last and anchors is not None:
        raise click.UsageError("--anchors goes with the full verify, not --since-last")
    session = _cli_session()
    try:
        if since_last:
            verification = audit_anchors.verify_since_last(session)
        else:
            verification = audit_anchors.verify_full(session, state=True)
        result = verification.result
        start = verification.start
        if since_last and start is None:
            click.echo("no verified checkpoint yet: full verify, from the first entry")
        elif start is not None:
            click.echo(f"incremental verify from checkpoint {start.id} at entry {start.seq} (verified "
                       f"{start.created_at:%Y-%m-%d %H:%M:%S} UTC by {start.created_by})")
        if result.ok:
            what = "new entries after the checkpoint" if start is not None else "entries checked"
            click.echo(f"audit trail intact: {result.checked} {what}" + (
                "" if since_last else " (full verify: what an inspection uses)"))
            key_id, current = audit.head_seal_key(session)
            if key_id != current:
                # a restored backup sealed before a rotation, or a head sealed with a retired (perhaps stolen) key
                click.echo(f"WARNING: the head is sealed with the older key {key_id}, not the current {current}: "
                           "expected only of a backup restored from before a key rotation", err=True)
        else:
            click.echo(f"audit trail BROKEN after {result.checked} good entries: {result.problem}", err=True)
        anchor_problems = _check_anchors(session, anchors) if anchors is not None else 0
    except audit_key.AuditKeyError as exc:
        raise click.ClickException(str(exc)) from None
    state_ok = True
    state = verification.state
    if result.ok and state is not None:
        for line in state.lines():
            click.echo(line, err=True)
        if state.not_checkable:
            click.echo(f"note: {len(state.not_checkable)} redacted values (password hashes) were last recorded "
                       "before the trail kept their digest: they are checked from their next change on", err=True)
        state_ok = state.ok
        if state_ok:
            click.echo(f"current state matches the trail: {state.rows_checked} audited rows checked against "
                       f"{state.entries_read} entries")
        else:
            click.echo(f"current state DOES NOT MATCH the trail: {len(state.lines())} findings in "
                       f"{state.rows_checked} audited rows", err=True)
    elif not result.ok:
        click.echo("current state not checked against the trail: the trail itself is broken", err=True)
    else:
        click.echo("current state not checked (--since-last): the full verify checks it")
    session.rollback()  # end the read before the unit of work that records the checkpoint
    if result.ok and state_ok and not anchor_problems:  # contradicted by an anchor or the rows: not verified
        checkpoint = _run(lambda s: audit_anchors.record_verified(s, verification))
        click.echo(f"checkpoint recorded at entry {checkpoint.seq} (audit.verified)")
    if not result.ok or not state_ok or anchor_problems:
        sys.exit(1)


def _check_anchors(session, directory: Path) -> int:
    """Print one line per anchor found in ``directory``; the number of problems."""
    problems = checked = 0
    for check in audit_anchors.check_anchor_files(session, directory):
        where = f"{check.source}" + ("" if check.anchor is None else f" (entry {check.anchor.seq})")
        if not check.checked:
            click.echo(f"NOT CHECKED  {where}: {check.problem}")
        elif check.problem is None:
            checked += 1
            click.echo(f"OK  {where}: the trail holds this anchor")
        else:
            checked += 1
            problems += 1
            click.echo(f"ANCHOR FAILED  {where}: {check.problem}", err=True)
    if checked == 0:
        click.echo(f"no anchor (a checkpoint file *.json or a signed document *.pdf) found in {directory}", err=True)
        return 1
    click.echo(f"anchors: {checked - problems} of {checked} held by the trail")
    return problems


@audit_cli.command("seal")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The checkpoint file to write (never overwritten): keep it off-site.")
def audit_seal(out: Path) -> None:
    """Export a checkpoint of the audit trail as it is now (its sequence number and hash, sealed with the audit
    key) to keep off-site, and record it (audit.checkpoint_exported). `audit verify --anchors DIR` later checks
    that the trail still holds it: a trail rewritten before it is caught even by someone holding the key."""
    if out.exists():
        raise click.ClickException(f"{out} exists: a checkpoint file is never overwritten")
    if not out.parent.is_dir():
        raise click.ClickException(f"{out.parent} is not a folder: nothing recorded")
    site = current_app.config.get("SITE_NAME")

    def action(session):
        checkpoint = audit_anchors.export_checkpoint(session, note=f"written to {out.name}")
        return checkpoint.seq, audit_anchors.anchor_file_text(checkpoint.anchor(), created_at=checkpoint.created_at,
                                                              site=site)

    seq, text = _run(action)
    try:
        audit_anchors.write_anchor_file(out, text)
    except OSError as exc:
        raise click.ClickException(f"the checkpoint at entry {seq} is recorded, but {out} was not written: {exc}") \
            from None
    click.echo(f"wrote the checkpoint of the audit trail at entry {seq} to {out}: keep it off-site, where whoever "
               "can reach this instance cannot")


@audit_cli.command("signatures")
def audit_signatures() -> None:
    """Recompute every signed record's hash; exit 1 listing each record that no longer matches."""
    checked, mismatches = signatures.check_all(_cli_session())
    for m in mismatches:
        click.echo(f"signature {m.signature_id} on {m.record_type} {m.record_id}: {m.problem}", err=True)
    if mismatches:
        sys.exit(1)
    click.echo(f"signatures intact: {checked} checked")


def _site_signer():
    from .reports.pdf import SigningMaterialError, load_site_signer

    try:
        return load_site_signer(current_app.config, Path(current_app.instance_path))
    except SigningMaterialError as error:
        raise click.ClickException(str(error)) from None


@click.command("verify-pdf")
@with_appcontext
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def verify_pdf_command(file: Path) -> None:
    """Check a document's signature (intact, by this site's certificate) and that its embedded snapshot
    matches the stored record; exit 0 when valid, 1 with the reason otherwise."""
    from .services import documents

    check = documents.verify(_cli_session(), file.read_bytes(), _site_signer().certificate)
    for line in check.summary:
        click.echo(line)
    if not check.valid:
        click.echo(f"INVALID: {check.reason}", err=True)
        sys.exit(1)
    click.echo(f"VALID: {file.name}")


@click.command("demo-batch")
@with_appcontext
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the signed documents the scenario issues (PDF).")
@click.option("--scenario", type=click.Choice(["conditional", "final", "sterility-positive", "cancelled",
                                               "in-progress", "cohorts"]),
              default="conditional", show_default=True, help="Which end of the lifecycle the batch reaches.")
@click.option("--subject", "subject_code", default=None,
              help="in-progress: the subject (created with the demo donor and dose when missing), e.g. NK-002.")
@click.option("--until", "until", default=None, metavar="RECORD:STEP",
              help="in-progress: stop before this step (e.g. NK-FORMULATE:dose_plan); default: every step.")
def demo_batch_command(out: Path, scenario: str, subject_code: str | None, until: str | None) -> None:
    """Drive one NK batch through the services as the demo people, with real signatures, to the end SCENARIO
    names (the OQ validation data sets: see mfg/demo/scenarios.py), and write its signed documents into OUT.
    Each action is its own unit of work acting as the person who does it."""
    from zoneinfo import ZoneInfo

    from . import document_worker
    from .demo import scenarios

    if not current_app.config["DEMO"]:
        raise click.ClickException("demo-batch runs on a demo instance only (flask --app mfg init --demo)")
    worker = document_worker.Settings.of(current_app)

    def make_documents() -> list:
        """The decision committed with its documents job: the CLI makes them inline, right after."""
        outcomes = document_worker.run_pending(worker)
        failed = [o for o in outcomes if not o.documents]
        if failed:
            raise click.ClickException(f"documents job {failed[0].job_id} was not made ({failed[0].error})")
        return [d for o in outcomes for d in o.documents]

    setting = scenarios.Setting(site=_site_signer(), tz=ZoneInfo(current_app.config["SITE_TIMEZONE"]),
                                password=demo_data.DEMO_PASSWORD, make_documents=make_documents)

    def act(username: str, action):  # noqa: ANN001, ANN202 - a scenario's action and its result
        session = _cli_session()
        person = _user(session, username)
        audit.set_actor(session, person)
        with unit_of_work(session, actor=person, policy=_policy()):
            return action(session)

    options: dict = {}
    if scenario == "in-progress":
        if subject_code:
            options["subject_code"] = subject_code
        if until:
            record, _, step_id = until.partition(":")
            if not record or not step_id:
                raise click.BadParameter("RECORD:STEP, e.g. NK-FORMULATE:dose_plan", param_hint="--until")
            options["until"] = (record, step_id)
    elif subject_code or until:
        raise click.BadParameter("only with --scenario in-progress", param_hint="--subject/--until")
    try:
        outcome = scenarios.RUN[scenario](act, setting, **options)
    except DomainError as exc:
        raise click.ClickException("\n".join(exc.problems)) from None
    out.mkdir(parents=True, exist_ok=True)
    for document in outcome.documents:
        (out / document.filename).write_bytes(document.content)
        click.echo(f"wrote {out / document.filename} ({document.pages} pages, sha256 {document.sha256})")
    for note in outcome.notes:
        click.echo(note)


documents_cli = AppGroup("documents", help="The documents QA's decisions ask for (the documents outbox).")


@documents_cli.command("work")
@click.option("--once", is_flag=True, help="Make what is pending now, then exit (else keep polling).")
def documents_work(once: bool) -> None:
    """Make the documents of pending decisions, as the app servers' worker threads do: claim a job, render
    and sign with no lock held, store. Several may run at once, on any machine of the site."""
    from . import document_worker

    settings = document_worker.Settings.of(current_app)
    poll = float(current_app.config["DOCUMENT_WORKER_POLL_SECONDS"])
    while True:
        for outcome in document_worker.run_pending(settings):
            if outcome.documents:
                click.echo(f"job {outcome.job_id}: " + ", ".join(d.filename for d in outcome.documents))
            else:
                click.echo(f"job {outcome.job_id}: not made ({outcome.error or 'the claim was lost'})", err=True)
        if once:
            return
        document_worker.wait(poll)


@documents_cli.command("retry")
@click.option("--batch", "lot", required=True, help="The batch's lot.")
def documents_retry(lot: str) -> None:
    """Give a failed documents job of the batch its attempts back (after fixing what made it fail)."""
    from .services import batches, document_jobs

    audit.set_actor(_cli_session(), name="cli:documents retry")
    job = _run(lambda s: document_jobs.retry(s, batches.by_lot(s, lot)))
    click.echo(f"job {job.id} of {lot} is pending again: a worker makes its documents")


custody_cli = AppGroup("custody", help="Chain of custody, from a station without a browser (a courier's scanner).")


@custody_cli.command("hand-off")
@click.option("--batch", "lot", required=True, help="The batch's lot (its DIN for an NK batch).")
@click.option("--user", "username", required=True, help="Who hands off; they sign \"Performed by\".")
@click.option("--password-file", required=True, help="File whose first line is the password, or - for stdin.")
@click.option("--scan", "scanned", required=True, help="The bag's DIN as scanned (=DIN+flags) or typed with its check.")
@click.option("--from", "from_location", required=True)
@click.option("--to", "to_location", required=True)
@click.option("--condition", required=True)
def custody_hand_off(lot: str, username: str, password_file: str, scanned: str, from_location: str,
                     to_location: str, condition: str) -> None:
    """Record a signed hand-off after the bag's scan matches the batch: the same service, guard and unit of
    work as the screen (a mismatch is a hard stop with its audit entry and deviation; a wrong password
    counts toward lockout). Exit 1 with the reason when refused."""
    from .services import batches, custody

    password = _read_password(password_file)
    session = _cli_session()
    try:
        signer, batch = _user(session, username), batches.by_lot(session, lot)
    except DomainError as exc:
        raise click.ClickException("\n".join(exc.problems)) from None
    event = _run(lambda s: custody.hand_off(s, batch, scanned_din=scanned, from_location=from_location,
                                            to_location=to_location, condition=condition, signer=signer,
                                            password=password, username=username, require_username=True),
                 actor=signer)
    click.echo(f"hand-off of {lot} from {event.from_location} to {event.to_location} recorded, signed by "
               f"{signer.full_name}")


@click.command("qualify")
@with_appcontext
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the signed IQ report (default: instance/qualification/).")
def qualify_command(out: Path | None) -> None:
    """Installation qualification: check this installation (packages against the lock, database schema and
    guards, instance secrets, site certificate, fonts, a signed PDF round trip, audit trail) and write the
    signed PDF/A report. Exit 0 when every check passed, 1 naming each failed check."""
    from .services import qualification

    session = _cli_session()
    target = qualification.Installation(session=session, config=current_app.config,
                                        instance_path=Path(current_app.instance_path))
    checks, report = qualification.qualify(target)
    session.commit()
    for check in checks:
        warned = " (with a warning)" if check.warned else ""
        click.echo(f"{'PASS' if check.passed else 'FAIL'}  {check.title}{warned}")
        for line in check.details:
            click.echo(f"      {line}", err=not check.passed)
    out = out or Path(current_app.instance_path) / "qualification"
    out.mkdir(parents=True, exist_ok=True)
    (out / report.filename).write_bytes(report.content)
    click.echo(f"wrote {out / report.filename}" + (
        f" ({report.not_stored})" if report.not_stored
        # a report is stored unless it says why not (qualification.report)
        else f" (stored, sha256 {cast('QualificationRecord', report.stored).sha256})"))
    failed = [check.title for check in checks if not check.passed]
    if failed:
        click.echo(f"QUALIFICATION FAILED: {len(failed)} of {len(checks)} checks: {'; '.join(failed)}", err=True)
        sys.exit(1)
    click.echo(f"QUALIFICATION PASSED: {len(checks)} of {len(checks)} checks")


@click.command("backup")
@with_appcontext
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the backup file and its .sha256 sidecar (created if missing).")
def backup_command(out: Path) -> None:
    """Write a consistent online copy of the database into OUT (SQLite backup API, or pg_dump -Fc)
    named with the UTC time, plus a sha256sum-compatible .sha256 file. Restore: see README.md."""
    from . import backup

    try:
        result = backup.backup(current_app.config["DATABASE_URL"], out)
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {result.path} ({result.size} bytes, sha256 {result.sha256}) in {result.seconds:.2f} s")
    click.echo(f"WARNING: the audit key ring {_audit_key_file()} is not in this backup, by design. Back it up "
               "separately and keep it apart from the database backups: without it a restored trail cannot be "
               "verified, and kept together with them it would let whoever holds both forge the trail.", err=True)


trial_cli = AppGroup("trial", help="The trial's own rules (dose escalation).")


@trial_cli.command("decision-table")
@click.option("--rule", type=click.Choice(["3+3", "boin"]), default="3+3", show_default=True)
@click.option("--target", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.25,
              show_default=True, help="BOIN: the target DLT rate.")
@click.option("--max-subjects", type=click.IntRange(1, 60), default=12, show_default=True,
              help="BOIN: the table's rows, 1 to this many subjects treated at a level.")
def trial_decision_table(rule: str, target: float, max_subjects: int) -> None:
    """Print the escalation rule's decision table (mfg/domain/escalation.py)."""
    from .domain import escalation

    if rule == "3+3":
        click.echo("3+3: the action for each count of DLTs among the evaluable subjects at a level")
        for evaluable, dlts, action in escalation.three_plus_three_table():
            click.echo(f"  {dlts} of {evaluable}: {action.value}")
        return
    bounds = escalation.boin_boundaries(target)
    click.echo(f"BOIN, target DLT rate {target:g}: lambda_e = {bounds.escalate:.3f}, "
               f"lambda_d = {bounds.de_escalate:.3f}")
    click.echo("subjects  escalate if DLTs <=  stay if DLTs  de-escalate if DLTs >=  eliminate if DLTs >=")

    def shown(value: int | None) -> str:
        return "-" if value is None else str(value)

    for row in escalation.boin_table(bounds, max_subjects):
        low = -1 if row.escalate_at_most is None else row.escalate_at_most
        high = row.evaluable + 1 if row.de_escalate_at_least is None else row.de_escalate_at_least
        stay = "-" if low + 1 > high - 1 else (f"{low + 1}" if low + 1 == high - 1 else f"{low + 1}-{high - 1}")
        click.echo(f"{row.evaluable:>8}  {shown(row.escalate_at_most):>19}  {stay:>12}  "
                   f"{shown(row.de_escalate_at_least):>22}  {shown(row.eliminate_at_least):>20}")


def init_app(app: Flask) -> None:
    app.cli.add_command(trial_cli)
    app.cli.add_command(verify_pdf_command)
    app.cli.add_command(demo_batch_command)
    app.cli.add_command(init_command)
    app.cli.add_command(users_cli)
    app.cli.add_command(sops_cli)
    app.cli.add_command(audit_cli)
    app.cli.add_command(backup_command)
    app.cli.add_command(qualify_command)
    app.cli.add_command(custody_cli)
    app.cli.add_command(documents_cli)
