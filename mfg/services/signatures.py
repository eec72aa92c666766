"""The one e-signature service (21 CFR 11.50, 11.70, 11.200).

A signature is executed only after the signer re-enters the password (and the user name on the
first signature of a session); it stores the printed name, UTC time, meaning and the sha256 of the
canonical JSON of exactly what was signed. A wrong password raises ``AuthenticationFailed``; the edge
rolls the action back and records the failure (``accounts.record_authentication_failure``).

Check the password before the first write of the transaction (``authenticate``, then ``sign`` with the
``Credentials`` it returns): a write takes locks held until commit (the database write lock on SQLite; on
PostgreSQL the rows written, and the audit chain's head row, which ``services.audit`` locks only at commit),
and an argon2 verification held inside them made every signature of the site wait for the one before it
(bench/load.py: see README "Performance").
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain import guards, inputs
from ..domain.audit_chain import SignatureManifest, seal_signature, signature_seal_problem
from ..domain.canonical import canonical_json, content_hash, sha256_hex
from ..domain.errors import AuthenticationFailed, DomainError, ValidationFailed
from ..domain.signing import ROLE_FOR_MEANING, Meaning
from ..models import SIGNABLE, AuditEntry, Signable, Signature, SignatureInvalidation, SignatureSeal, User, utcnow
from . import accounts, audit


def _meaning(value: Meaning | str) -> Meaning:
    try:
        return Meaning(value)
    except ValueError:
        raise ValidationFailed(f"unknown signature meaning '{value}'; "
                               f"allowed: {', '.join(m.value for m in Meaning)}") from None


BAD_CREDENTIALS = "User name or password is not correct."


def signer_named(session: Session, username: str) -> User:
    """The user a second signer names on a shared screen (the bedside check). An unknown name fails
    exactly like a wrong password, so the screen never tells whether a user name exists."""
    user = accounts.get_by_username(session, (username or "").strip())
    if user is None:
        raise AuthenticationFailed((username or "").strip()[:64], context="signature", message=BAD_CREDENTIALS)
    return user


@dataclass(eq=False)
class Credentials:
    """``signer`` re-entered user name and password for one signature (made by ``authenticate`` only;
    ``sign`` spends it, so one password entry never executes two signatures)."""

    signer_id: int
    _issued: object
    spent: bool = False

    def __post_init__(self) -> None:
        if self._issued is not _ISSUED:
            raise TypeError("Credentials come from signatures.authenticate")


_ISSUED = object()


def authenticate(signer: User, *, password: str, username: str | None = None,
                 require_username: bool = True) -> Credentials:
    """Check the re-entered user name and password of ``signer``; writes nothing (call it before any write)."""
    if require_username and (username or "").strip() != signer.username:
        raise AuthenticationFailed(signer.username, context="signature", message=BAD_CREDENTIALS)
    if not signer.is_active or not accounts.password_matches(signer, password):
        raise AuthenticationFailed(signer.username, context="signature", message=BAD_CREDENTIALS)
    return Credentials(signer.id, _ISSUED)


def sign(session: Session, *, signer: User, meaning: Meaning | str, record: Signable, password: str | None = None,
         credentials: Credentials | None = None, username: str | None = None, require_username: bool = True,
         comment: str | None = None) -> Signature:
    """Execute an e-signature of ``signer`` on ``record``, bound to ``record.signed_content()``.

    Either ``password`` (checked here) or the ``credentials`` of an earlier ``authenticate`` of the same
    signer in this transaction."""
    meaning = _meaning(meaning)
    if credentials is None:
        authenticate(signer, password=password or "", username=username, require_username=require_username)
    elif credentials.signer_id != signer.id or credentials.spent:
        raise AuthenticationFailed(signer.username, context="signature", message=BAD_CREDENTIALS)
    else:
        credentials.spent = True
    guards.enforce(guards.sign(guards.person(signer), roles=ROLE_FOR_MEANING[meaning], what=meaning.label,
                               own_password=signer.password_set_by_self))
    content = canonical_json(record.signed_content())
    record_type = record.__tablename__  # type: ignore[attr-defined]
    signature = Signature(user_id=signer.id, username=signer.username, printed_name=signer.full_name,
                          meaning=meaning.value, signed_at=utcnow(), comment=inputs.text("comment", comment) or None,
                          record_type=record_type, record_id=str(sa.inspect(record).identity[0]),
                          content=content, content_sha256=sha256_hex(content),
                          own_password=signer.password_set_by_self, password_set_at=signer.password_changed_at)
    session.add(signature)
    audit.flush(session, reason=f"e-signature: {meaning.label}")
    _seal(session, [signature])
    return signature


def manifest(signature: Signature) -> SignatureManifest:
    """What the seal of ``signature`` covers."""
    return SignatureManifest(signature.user_id, signature.username, signature.printed_name, signature.meaning,
                             signature.signed_at, signature.record_type, signature.record_id,
                             signature.content_sha256, signature.comment)


def _seal(session: Session, made: list[Signature]) -> None:
    """Seal each signature's manifest with the current audit key, in this transaction."""
    key_id, key = audit.key_ring(session).current
    session.connection().execute(sa.insert(SignatureSeal.__table__), [  # type: ignore[arg-type]
        {"signature_id": s.id, "key_id": key_id, "seal": seal_signature(key, key_id, manifest(s))} for s in made])


def seal_existing(session: Session) -> int:
    """Seal every signature that has none, made before signatures were sealed (migration 0017); the number sealed.

    Recorded as ``signature.sealed_existing`` (the first time even when there is none to seal: the entry marks
    the point from which every signature is sealed as it is made). The seal vouches that those signatures do not
    change from now on, not that the application made them. Once that entry exists, or any signature is sealed,
    a signature found without a seal had it removed or was made outside the application: it is evidence, and
    nothing is sealed over it.
    """
    unsealed = list(session.scalars(sa.select(Signature).outerjoin(
        SignatureSeal, SignatureSeal.signature_id == Signature.id).where(SignatureSeal.signature_id.is_(None))
        .order_by(Signature.id)))
    marked = session.scalar(sa.select(AuditEntry.seq).where(AuditEntry.action == "signature.sealed_existing")
                            .limit(1)) is not None
    if marked or session.scalar(sa.select(SignatureSeal.signature_id).limit(1)) is not None:
        if unsealed:
            raise DomainError(f"not sealed: {len(unsealed)} signature(s) (first {unsealed[0].id}) have no seal "
                              "although this trail's signatures were sealed before; run `flask --app mfg audit "
                              "signatures` and investigate")
        if marked:
            return 0
    if unsealed:
        _seal(session, unsealed)
    audit.record_event(session, "signature.sealed_existing", details={
        "sealed": len(unsealed), "first_id": unsealed[0].id if unsealed else None,
        "last_id": unsealed[-1].id if unsealed else None,
        "note": "every signature from here on is sealed as it is made; the signatures sealed here were made "
                "before signatures were sealed: the seal vouches that they do not change from now on, not that "
                "they are what the application made"})
    return len(unsealed)


def for_record(session: Session, record: Signable) -> list[Signature]:
    return list(session.scalars(
        sa.select(Signature).where(Signature.record_type == record.__tablename__,  # type: ignore[attr-defined]
                                   Signature.record_id == str(sa.inspect(record).identity[0]))
        .order_by(Signature.signed_at, Signature.id)))


@dataclass(frozen=True)
class Mismatch:
    signature_id: int
    record_type: str
    record_id: str
    problem: str


def check_all(session: Session) -> tuple[int, list[Mismatch]]:
    """Recompute every signed record's content hash; report each signature it no longer matches."""
    mismatches = []
    checked = 0
    # A signature invalidated by a recorded correction is expected not to match the corrected record;
    # its own stored content must still match its hash.
    invalidated = set(session.scalars(sa.select(SignatureInvalidation.signature_id)))
    keys = audit.key_ring(session)
    seals = {row.signature_id: (row.key_id, row.seal) for row in session.execute(
        sa.select(SignatureSeal.signature_id, SignatureSeal.key_id, SignatureSeal.seal))}
    for signature in session.scalars(sa.select(Signature).order_by(Signature.id)):
        checked += 1
        problem = signature_seal_problem(keys, manifest(signature), *seals.get(signature.id, (None, None)))
        if problem is not None:
            mismatches.append(Mismatch(signature.id, signature.record_type, signature.record_id, problem))
            continue
        if sha256_hex(signature.content) != signature.content_sha256:
            mismatches.append(Mismatch(signature.id, signature.record_type, signature.record_id,
                                       "the stored signed content does not match its hash"))
            continue
        if signature.id in invalidated:
            continue
        model = SIGNABLE.get(signature.record_type)
        record = session.get(model, int(signature.record_id)) if model else None
        if record is None:
            mismatches.append(Mismatch(signature.id, signature.record_type, signature.record_id,
                                       "the signed record no longer exists"))
        elif content_hash(record.signed_content_as(signature.content)) != signature.content_sha256:
            mismatches.append(Mismatch(signature.id, signature.record_type, signature.record_id,
                                       "the record's content changed after it was signed"))
    return checked, mismatches
