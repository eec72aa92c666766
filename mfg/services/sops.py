"""Controlled master records (21 CFR 211.186): load, list, read, approve.

A definition file is stored once per (code, version) with the sha256 of its bytes; loading a changed
file under an existing version is refused. A loaded version is a draft until a QA user other than the
one who loaded it approves it with an e-signature; it then becomes effective and the previously
effective version of that code is superseded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain import guards
from ..domain.documents import Document, parse_document
from ..domain.errors import NotFound, ValidationFailed
from ..domain.signing import Meaning
from ..domain.sop_schema import DefinitionError
from ..domain.status import SOP_STATUS
from ..domain.trial_config import TrialConfiguration
from ..models import SopVersion, User, utcnow
from . import audit, rows, signatures


@dataclass(frozen=True)
class LoadResult:
    loaded: list[SopVersion]
    unchanged: list[str]  # "CODE v1" already stored with the same sha256


def definition_files(directory: Path) -> list[Path]:
    """The definition files under ``directory``. A folder that does not exist or holds no definition file
    is refused: it is a wrong setting or an incomplete installation, never "nothing new to load"."""
    if not directory.is_dir():
        raise ValidationFailed(f"the master record folder {directory} does not exist (SOPS_DIR or --dir)")
    files = sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise ValidationFailed(f"no master records in {directory}: it holds no .yaml or .yml file")
    return files


def _read(path: Path, root: Path) -> tuple[str, str, str, Document]:
    name = str(path.relative_to(root))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DefinitionError([f"{name}: (root): not UTF-8 text"]) from None
    record = parse_document(text, name)
    expected = f"{record.code}_v{record.version}"
    if path.stem != expected:
        raise DefinitionError([f"{name}: (root): file name must be {expected}{path.suffix} "
                               f"for code {record.code} version {record.version}"])
    return name, text, hashlib.sha256(raw).hexdigest(), record


def load_directory(session: Session, directory: Path, *, loader: User) -> LoadResult:
    """Load every definition under ``directory`` (:func:`definition_files`); all or nothing: any problem
    loads no file."""
    guards.enforce(guards.load_master_records(guards.person(loader)))
    problems: list[str] = []
    pending: list[tuple[str, str, str, Document]] = []
    unchanged: list[str] = []
    seen: dict[tuple[str, int], str] = {}
    for path in definition_files(directory):
        try:
            name, text, digest, record = _read(path, directory)
        except DefinitionError as exc:
            problems.extend(exc.errors)
            continue
        key = (record.code, record.version)
        if key in seen:
            problems.append(f"{name}: (root): {record.code} v{record.version} is also defined in {seen[key]}")
            continue
        seen[key] = name
        stored = session.scalar(sa.select(SopVersion).where(SopVersion.code == record.code,
                                                             SopVersion.version == record.version))
        if stored is None:
            pending.append((name, text, digest, record))
        elif stored.sha256 == digest:
            unchanged.append(f"{record.code} v{record.version}")
        else:
            problems.append(f"{name}: (root): {record.code} v{record.version} is already loaded with sha256 "
                            f"{stored.sha256[:12]}… and this file differs ({digest[:12]}…): a change needs a "
                            "new version number")
    if problems:
        raise ValidationFailed(*problems)
    loaded = []
    for name, text, digest, record in pending:
        version = SopVersion(code=record.code, version=record.version, kind=record.kind, title=record.title,
                             source_name=name, content=text, sha256=digest, status="draft",
                             loaded_at=utcnow(), loaded_by_id=loader.id)
        session.add(version)
        loaded.append(version)
    audit.flush(session, reason="master record loaded as draft")
    return LoadResult(loaded, unchanged)


def list_versions(session: Session) -> list[SopVersion]:
    return list(session.scalars(sa.select(SopVersion).order_by(SopVersion.code, SopVersion.version.desc())))


def effective_codes(session: Session, *, kind: str) -> list[str]:
    """The codes of the effective versions of ``kind`` (master batch records, trial configurations)."""
    return list(session.scalars(sa.select(SopVersion.code).where(
        SopVersion.status == "effective", SopVersion.kind == kind).order_by(SopVersion.code)))


def get(session: Session, sop_id: int) -> SopVersion:
    version = session.get(SopVersion, sop_id)
    if version is None:
        raise NotFound(f"no master record version with id {sop_id}")
    return version


def effective(session: Session, code: str) -> SopVersion | None:
    return session.scalar(sa.select(SopVersion).where(SopVersion.code == code, SopVersion.status == "effective"))


def definition(version: SopVersion) -> Document:
    return parse_document(version.content, version.source_name)


TRIAL_KIND = "trial_configuration"


def trial_configuration_version(session: Session) -> SopVersion:
    """The effective version of the site's one trial configuration (the document of kind
    ``trial_configuration``, whatever its code); refused when none or more than one is effective."""
    found = list(session.scalars(sa.select(SopVersion).where(SopVersion.kind == TRIAL_KIND,
                                                             SopVersion.status == "effective")))
    if not found:
        raise ValidationFailed("no effective trial configuration: QA must approve one first")
    if len(found) > 1:
        raise ValidationFailed("more than one trial configuration is effective ("
                               + ", ".join(f"{v.code} v{v.version}" for v in found) + "): one trial per site")
    return found[0]


def trial_configuration(session: Session) -> TrialConfiguration:
    """The effective trial and site configuration; refused when none is effective."""
    document = definition(trial_configuration_version(session))
    assert isinstance(document, TrialConfiguration)
    return document


def guard_approve(session: Session, user: User, version: SopVersion, *, site_timezone: str) -> list[guards.Refusal]:
    """``site_timezone``: the site's ``SITE_TIMEZONE`` (the screens' zone), which a trial configuration's
    ``site_timezone`` (the documents' zone) must state: one site, one clock, on screens and on paper."""
    document = definition(version)
    stated = document.site_timezone if isinstance(document, TrialConfiguration) else None
    return guards.approve_master_record(guards.person(user), status=version.status, loaded_by_id=version.loaded_by_id,
                                        stated_timezone=stated, site_timezone=site_timezone)


def approve(session: Session, version: SopVersion, *, site_timezone: str, signer: User, password: str,
            username: str | None, require_username: bool, comment: str | None = None) -> SopVersion:
    """QA approves a draft with an e-signature; the loader may not approve their own upload; a trial
    configuration must state the site's time zone (``guard_approve``). Two approvals of the same draft run one
    after the other (its row lock); the second is told who approved it first."""
    rows.lock(session, version)
    if version.status == "effective" and version.approved_at is not None:
        raise rows.already_done(session, f"{version.code} v{version.version} was already approved",
                                user_id=version.approved_by_id, at=version.approved_at)
    guards.enforce(guard_approve(session, signer, version, site_timezone=site_timezone))
    SOP_STATUS.check(version.status, "effective")
    current = effective(session, version.code)
    if current is not None and current.version > version.version:
        raise ValidationFailed(f"{version.code} v{current.version} is already effective; "
                               f"v{version.version} cannot replace a newer version")
    signature = signatures.sign(session, signer=signer, password=password, meaning=Meaning.APPROVED,
                                record=version, username=username, require_username=require_username,
                                comment=comment)
    now = utcnow()
    if current is not None:
        SOP_STATUS.check(current.status, "superseded")
        current.status = "superseded"
        current.superseded_at = now
    version.status = "effective"
    version.approved_at = now
    version.approved_by_id = signer.id
    version.approval_signature_id = signature.id
    audit.flush(session, reason=f"approved by {signer.full_name}")
    return version
