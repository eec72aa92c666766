"""The pipeline every signed PDF of the product goes through: render, sign, verify.

* :func:`render_pdf`: HTML (rendered from a plain snapshot, usually through ``reports/_document.html``) to
  PDF/A-3b with WeasyPrint, the machine-readable snapshot embedded as a file (``/AFRelationship /Data``,
  ``application/json``). WeasyPrint may load ``data:`` URIs only: anything else (http, file, paths) is
  refused before a connection or file is opened, and the document renders without it (or, with
  ``strict_resources``, not at all). The same inputs give the same bytes: nothing reads the clock.
* :func:`sign_pdf`: a PAdES baseline B-B signature (pyHanko, ``/ETSI.CAdES.detached``, SHA-256) in an
  incremental update, with the site's key. No timestamp authority is reachable on site, so the signing
  time is the signer's claim. The signature is invisible: the printed signature manifestation belongs in
  the HTML (pyHanko's default stamp font would break PDF/A).
* :func:`verify_pdf`: never raises on a damaged or foreign file; says valid or why not.

Pure functions (no Flask, no database); the site's signer is loaded once (:func:`load_site_signer`).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import importlib.resources
import io
import logging
import struct
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from asn1crypto import keys, x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509 import Certificate as CryptographyCertificate
from pyhanko.keys import load_cert_from_pemder, load_private_key_from_pemder
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import CertificateStore, SimpleCertificateStore
from pyhanko_certvalidator.util import get_pyca_cryptography_hash

if TYPE_CHECKING:
    from pypdf.generic import DictionaryObject

log = logging.getLogger(__name__)

PDF_VARIANT = "pdf/a-3b"
ATTACHMENT_MIME_TYPE = "application/json"
_OUTPUT_INTENT = "--srgb"  # a CSS color profile name (see _output_intent_profiles)
# The embedded file's dates are fixed (WeasyPrint would stamp "now"): the time that matters is the
# signing time, which the signature carries.
_ATTACHMENT_DATE = datetime(2000, 1, 1, tzinfo=timezone.utc)
# The site certificate must allow signing documents: either key usage will do (the certificate that
# ``flask --app mfg init`` creates has both; a certificate authority may issue digitalSignature only).
_SIGNER_KEY_USAGE = KeyUsageConstraints(key_usage={"non_repudiation", "digital_signature"},
                                        match_all_key_usages=False)

# Reasons verify_pdf gives.
NOT_A_PDF = "not a readable PDF file"
NOT_SIGNED = "not signed"
CHANGED = "the document was changed after it was signed"
BAD_SIGNATURE = "the signature is not cryptographically valid"
UNTRUSTED = "signed by an untrusted certificate"
APPENDED = "content was added to the document after it was signed"
SEVERAL = "more than one signature (the product signs each document once)"


class SigningMaterialError(RuntimeError):
    """The site's key or certificate cannot be loaded (missing file, wrong passphrase, bad format)."""


class DocumentResourceError(ValueError):
    """``strict_resources``: the HTML names a resource that was refused or could not be loaded."""


# ------------------------------------------------------------------------------------------- rendering

def _data_only_fetcher(*, strict: bool):  # noqa: ANN202 - WeasyPrint is imported lazily
    from weasyprint.urls import URLFetcher

    class DataOnlyFetcher(URLFetcher):
        """Loads ``data:`` URIs; refuses anything else before opening it, and remembers what it refused."""

        def __init__(self) -> None:
            super().__init__(allowed_protocols={"data"}, allow_redirects=False, fail_on_errors=strict)
            self.refused: list[str] = []

        def fetch(self, url: str, headers: Mapping[str, str] | None = None):  # noqa: ANN201
            if url[:5].lower() != "data:":
                self.refused.append(url)
                raise ValueError(f"only data: URIs may be used in a document, refused {url[:200]!r}")
            return super().fetch(url, headers)

    return DataOnlyFetcher()


def render_pdf(html: str, *, attachment: bytes, attachment_name: str, title: str,
               strict_resources: bool = False, keywords: list[str] | None = None) -> bytes:
    """``html`` as PDF/A-3b, with ``attachment`` embedded as ``attachment_name`` (application/json,
    relationship Data), ``title`` as the document title and ``keywords`` as its keywords (the document
    information dictionary and the XMP metadata alike, as PDF/A wants). Deterministic for the same inputs.

    A resource other than a ``data:`` URI is refused and left out (logged); with ``strict_resources``
    any resource that is refused or fails to load raises :class:`DocumentResourceError` instead (labels:
    better no label than one without its barcode)."""
    from weasyprint import HTML, Attachment
    from weasyprint.urls import FatalURLFetchingError

    fetcher = _data_only_fetcher(strict=strict_resources)
    options = {"pdf_variant": PDF_VARIANT, "output_intent": _OUTPUT_INTENT}
    try:
        document = HTML(string=html, url_fetcher=fetcher, base_url=None).render(
            color_profiles=_output_intent_profiles(), **options)
        document.metadata.title = title
        document.metadata.keywords = list(keywords or [])
        # Only the snapshot is embedded, never a file the HTML itself names (<link rel=attachment>).
        document.metadata.attachments = []
        # As a data: URI, so that WeasyPrint records the media type as given whatever the file name.
        snapshot = Attachment(url=f"data:{ATTACHMENT_MIME_TYPE};base64,{base64.b64encode(attachment).decode()}",
                              url_fetcher=fetcher, name=attachment_name, relationship="Data",
                              created=_ATTACHMENT_DATE, modified=_ATTACHMENT_DATE)
        pdf = document.write_pdf(attachments=[snapshot], finisher=_finish, **options)
    except FatalURLFetchingError as error:  # a BaseException: never let it past this module
        raise DocumentResourceError(f"{error}: {error.__cause__}") from error.__cause__
    if fetcher.refused:
        log.warning("refused %d resource(s) that are not data: URIs while rendering %r: %s",
                    len(fetcher.refused), title, ", ".join(url[:80] for url in fetcher.refused))
    return pdf


# The fonts the documents name (templates/reports/*.html; a test holds this list to them), as (family,
# weight). WeasyPrint falls back to another font without a word when one is missing, so that a document
# would print in a font nobody validated: :func:`missing_fonts` renders each and reads what was embedded.
DOCUMENT_FONTS: tuple[tuple[str, str], ...] = (("DejaVu Sans", "normal"), ("DejaVu Sans", "bold"))


def _font_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def missing_fonts(fonts: tuple[tuple[str, str], ...] = DOCUMENT_FONTS) -> list[str]:
    """The fonts of ``fonts`` that WeasyPrint cannot find here, as "family weight"; empty when all are.

    Each is rendered in a probe document and looked for among the fonts embedded in it (their PostScript
    names, e.g. ``DejaVu-Sans-Bold``, without the subset prefix)."""
    from pypdf import PdfReader
    from weasyprint import HTML

    html = "".join(f'<p style="font-family: \'{family}\'; font-weight: {weight}">Installation 0123456789</p>'
                   for family, weight in fonts)
    pdf = HTML(string=html, url_fetcher=_data_only_fetcher(strict=True), base_url=None).write_pdf()
    embedded = set()
    for page in PdfReader(io.BytesIO(pdf)).pages:
        # a page's /Resources is a dictionary (pypdf resolves the reference; its stubs say PdfObject)
        for font in cast("DictionaryObject", page["/Resources"]).get("/Font", {}).values():
            embedded.add(_font_key(str(font.get_object()["/BaseFont"]).split("+")[-1]))
    return [f"{family} {weight}" for family, weight in fonts
            if _font_key(family + ("" if weight == "normal" else weight)) not in embedded]


def _output_intent_profiles() -> dict[str, object]:
    """The sRGB output intent that PDF/A needs. WeasyPrint's own (``output_intent="srgb"``) opens its ICC
    file and never closes it (a ResourceWarning, an error under pytest); this is the same profile, read
    properly, under another name. A fresh object per document: WeasyPrint writes its PDF reference on it."""
    from weasyprint.css import ColorProfile

    return {_OUTPUT_INTENT: ColorProfile(io.BytesIO(_srgb_profile()), "sRGB2014.icc", "relative-colorimetric",
                                         (["r"], ["g"], ["b"]))}


@functools.cache
def _srgb_profile() -> bytes:
    return (importlib.resources.files("weasyprint.pdf") / "sRGB2014.icc").read_bytes()


def _finish(document: object, pdf: object) -> None:
    """Last touches on WeasyPrint's PDF objects, before they are written."""
    _single_af_entries(pdf)
    _fixed_font_timestamps(pdf)


def _single_af_entries(pdf: object) -> None:
    """WeasyPrint 70 lists each embedded file twice in the catalog's /AF array (once from the name tree,
    once from the file specification): keep each once."""
    catalog = pdf.catalog  # type: ignore[attr-defined]
    if "AF" in catalog:
        unique = list(dict.fromkeys(catalog["AF"]))
        catalog["AF"].clear()
        catalog["AF"].extend(unique)


def _fixed_font_timestamps(pdf: object) -> None:
    """Without the HarfBuzz subset library (Debian ``libharfbuzz-subset0``), WeasyPrint subsets fonts with
    fontTools, which writes the current time into each subset's ``head`` table: the same document rendered
    a second later had other bytes. Set each embedded font's modification time to its creation time (the
    font file's own), so that the bytes depend on the input only."""
    objects = pdf.objects  # type: ignore[attr-defined]
    for item in objects:
        if not isinstance(item, dict) or item.get("Type") != "/FontDescriptor":
            continue
        for key in ("FontFile2", "FontFile3"):
            if (reference := item.get(key)) is not None:
                stream = objects[int(bytes(reference).split()[0])]
                font = b"".join(chunk if isinstance(chunk, bytes) else str(chunk).encode() for chunk in stream.stream)
                stream.stream[:] = [_font_modified_as_created(font)]


def _font_modified_as_created(font: bytes) -> bytes:
    """An sfnt font (TrueType, OpenType) with head.modified = head.created and its checksums updated;
    anything else unchanged."""
    if len(font) < 12 or font[:4] not in (b"\x00\x01\x00\x00", b"OTTO", b"true"):
        return font
    (count,) = struct.unpack_from(">H", font, 4)
    for record in range(12, 12 + 16 * count, 16):
        if record + 16 > len(font):
            return font
        tag, _, offset, length = struct.unpack_from(">4sLLL", font, record)
        if tag == b"head":
            break
    else:
        return font
    if length < 54 or offset + length > len(font) or font[offset + 28:offset + 36] == font[offset + 20:offset + 28]:
        return font
    data = bytearray(font)
    data[offset + 28:offset + 36] = data[offset + 20:offset + 28]  # modified := created
    data[offset + 8:offset + 12] = bytes(4)  # checkSumAdjustment counts as 0 in both sums
    struct.pack_into(">L", data, record + 4, _sfnt_checksum(data[offset:offset + length]))
    struct.pack_into(">L", data, offset + 8, (0xB1B0AFBA - _sfnt_checksum(data)) & 0xFFFFFFFF)
    return bytes(data)


def _sfnt_checksum(data: bytes | bytearray) -> int:
    padded = bytes(data) + bytes(-len(data) % 4)
    return sum(struct.unpack(f">{len(padded) // 4}L", padded)) & 0xFFFFFFFF


# ------------------------------------------------------------------------------------------- signing

class _SiteKeySigner(signers.SimpleSigner):
    """pyHanko's SimpleSigner parses the private key again for every raw signature, twice per PDF (a dry run
    sizes the signature container), and cryptography checks an RSA key on each parse: ~0.15 s a time for
    RSA 3072. This one keeps the key parsed (and checked) once, for RSA PKCS#1 v1.5, pyHanko's default;
    other mechanisms go through pyHanko unchanged."""

    def __init__(self, *, private_key: PrivateKeyTypes, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._private_key = private_key

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        try:
            algorithm = self.get_signature_mechanism_for_digest(digest_algorithm).signature_algo
        except ValueError:
            algorithm = None
        if algorithm == "rsassa_pkcs1v15" and isinstance(self._private_key, rsa.RSAPrivateKey):
            return self._private_key.sign(data, PKCS1v15(), get_pyca_cryptography_hash(digest_algorithm))
        return super().sign_raw(data, digest_algorithm)


@dataclass(frozen=True)
class SiteSigner:
    """The site's signing key and certificate, loaded once."""

    signer: signers.SimpleSigner
    certificate: x509.Certificate

    @property
    def subject(self) -> str:
        """The certificate's subject as text, e.g. "Common Name: ..., Organization: ..."."""
        return self.certificate.subject.human_friendly

    @classmethod
    def from_files(cls, key_file: Path, cert_file: Path, passphrase: bytes | None = None) -> SiteSigner:
        """A PEM or DER private key and certificate (``flask --app mfg init`` writes PEM)."""
        try:
            key = load_private_key_from_pemder(str(key_file), passphrase=passphrase)
            cert = load_cert_from_pemder(str(cert_file))
        except (OSError, ValueError, TypeError) as error:
            raise SigningMaterialError(f"cannot load the signing key {key_file} and certificate {cert_file}: "
                                       f"{error}") from error
        return cls._checked(cert, key, SimpleCertificateStore(), f"{key_file} and {cert_file}")

    @classmethod
    def from_pkcs12(cls, path: Path, passphrase: bytes | None) -> SiteSigner:
        """A PKCS#12 (.p12/.pfx) file with the key, its certificate and optionally the issuing chain (which
        is then embedded in each signature)."""
        try:
            data = Path(path).read_bytes()
            loaded = signers.SimpleSigner.load_pkcs12_data(data, other_certs=(), passphrase=passphrase)
        except (OSError, ValueError) as error:
            cause = error.__cause__ or error
            raise SigningMaterialError(f"cannot load the PKCS#12 file {path}: {cause}") from error
        return cls._checked(loaded.signing_cert, loaded.signing_key, loaded.cert_registry, str(path))

    @classmethod
    def _checked(cls, cert: x509.Certificate | None, key: keys.PrivateKeyInfo | None,
                 registry: CertificateStore, source: str) -> SiteSigner:
        if cert is None or key is None:
            raise SigningMaterialError(f"{source} holds no key and certificate")
        private_key = serialization.load_der_private_key(key.dump(), password=None)
        public_key = private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)
        if public_key != cert.public_key.dump():
            raise SigningMaterialError(f"the key in {source} does not belong to its certificate")
        signer = _SiteKeySigner(private_key=private_key, signing_cert=cert, signing_key=key, cert_registry=registry)
        return cls(signer=signer, certificate=cert)


def load_site_signer(config: Mapping[str, object], instance_path: Path) -> SiteSigner:
    """The site's signer as configured: ``SIGNING_PKCS12_FILE`` when set (its passphrase, if any, in
    ``SIGNING_PKCS12_PASSWORD_FILE``; a trailing newline is ignored), else ``SIGNING_KEY_FILE`` and
    ``SIGNING_CERT_FILE``. Relative paths are inside the instance folder."""

    def path(key: str) -> Path | None:
        value = config.get(key)
        return None if value in (None, "") else Path(instance_path) / str(value)

    if (pkcs12 := path("SIGNING_PKCS12_FILE")) is not None:
        passphrase = None
        if (password_file := path("SIGNING_PKCS12_PASSWORD_FILE")) is not None:
            try:
                passphrase = password_file.read_bytes().rstrip(b"\r\n")
            except OSError as error:
                raise SigningMaterialError(f"cannot read the PKCS#12 password file {password_file}: "
                                           f"{error}") from error
        return SiteSigner.from_pkcs12(pkcs12, passphrase)
    key_file, cert_file = path("SIGNING_KEY_FILE"), path("SIGNING_CERT_FILE")
    if key_file is None or cert_file is None:
        raise SigningMaterialError("no signing material configured: SIGNING_KEY_FILE and SIGNING_CERT_FILE, "
                                   "or SIGNING_PKCS12_FILE")
    return SiteSigner.from_files(key_file, cert_file)


T = TypeVar("T")


def _outside_event_loop(call: Callable[[], T]) -> T:
    """Run ``call`` here, or in a worker thread when this thread already runs an asyncio event loop:
    pyHanko's synchronous API calls ``asyncio.run``, which refuses to nest (a Playwright or ASGI caller)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def sign_pdf(pdf: bytes, signer: SiteSigner, *, reason: str, location: str,
             field_name: str = "SiteSignature") -> bytes:
    """``pdf`` with a PAdES signature by ``signer`` appended as an incremental update (the original bytes
    stay a prefix of the result)."""
    meta = signers.PdfSignatureMetadata(field_name=field_name, reason=reason, location=location,
                                        md_algorithm="sha256", subfilter=fields.SigSeedSubFilter.PADES)
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    output = _outside_event_loop(
        lambda: signers.PdfSigner(meta, signer=signer.signer).sign_pdf(writer, output=io.BytesIO()))
    return output.getvalue()


# ------------------------------------------------------------------------------------------- verifying

@dataclass(frozen=True)
class Verification:
    """What :func:`verify_pdf` found. ``valid`` only when the file carries exactly one signature, intact,
    cryptographically valid, by a certificate that chains to the trusted one, covering the whole file."""

    valid: bool
    intact: bool  # the signed bytes are unchanged
    trusted: bool  # the signing certificate chains to the trusted certificate
    signer: str | None  # subject of the signing certificate, as text
    signed_at: datetime | None  # the signer's claimed signing time, UTC (no timestamp authority)
    attachment: bytes | None  # the embedded snapshot: only when valid and there is exactly one
    attachment_name: str | None
    reason: str  # "" when valid, else why not

    def __bool__(self) -> bool:
        return self.valid


def verify_pdf(pdf: bytes, trusted: x509.Certificate | CryptographyCertificate) -> Verification:
    """Check the product's signature on ``pdf`` against ``trusted`` (the site certificate, or the
    authority that issued it; asn1crypto or cryptography). Never raises for a damaged, tampered, unsigned
    or non-PDF input.

    The certificate is judged at the claimed signing time (there is no timestamp authority), so documents
    stay verifiable after the certificate expires; the stored sha256 of each document is what anchors it
    in time."""
    if isinstance(trusted, CryptographyCertificate):
        trusted = x509.Certificate.load(trusted.public_bytes(serialization.Encoding.DER))
    if not isinstance(trusted, x509.Certificate):
        raise TypeError(f"trusted must be a certificate, not {type(trusted).__name__}")
    try:
        return _verify(pdf, trusted)
    except Exception as error:  # noqa: BLE001 - a hostile file may break the parser anywhere
        log.info("PDF verification failed: %s", error, exc_info=True)
        return _failed(f"{NOT_A_PDF} ({type(error).__name__})")


def _failed(reason: str, *, intact: bool = False, trusted: bool = False, signer: str | None = None,
            signed_at: datetime | None = None) -> Verification:
    return Verification(valid=False, intact=intact, trusted=trusted, signer=signer, signed_at=signed_at,
                        attachment=None, attachment_name=None, reason=reason)


def _verify(pdf: bytes, trusted: x509.Certificate) -> Verification:
    if b"%PDF-" not in bytes(pdf[:1024]):
        return _failed(NOT_A_PDF)
    signatures = PdfFileReader(io.BytesIO(pdf), strict=False).embedded_regular_signatures
    if not signatures:
        return _failed(NOT_SIGNED)
    embedded = signatures[-1]
    claimed = embedded.self_reported_timestamp
    claimed = claimed.astimezone(timezone.utc) if claimed is not None else None
    context = ValidationContext(trust_roots=[trusted], allow_fetching=False, moment=claimed)
    status = _outside_event_loop(
        lambda: validate_pdf_signature(embedded, context, key_usage_settings=_SIGNER_KEY_USAGE))
    found = {"intact": bool(status.intact), "trusted": bool(status.trusted),
             "signer": status.signing_cert.subject.human_friendly, "signed_at": claimed}
    if not status.intact:
        return _failed(CHANGED, **found)
    if not status.valid:
        return _failed(BAD_SIGNATURE, **found)
    if not status.trusted:
        return _failed(UNTRUSTED, **found)
    if len(signatures) > 1:
        return _failed(SEVERAL, **found)
    if status.coverage != SignatureCoverageLevel.ENTIRE_FILE:
        return _failed(APPENDED, **found)
    name, data = _attachment(pdf)
    return Verification(valid=True, reason="", attachment=data, attachment_name=name, **found)


def _attachment(pdf: bytes) -> tuple[str | None, bytes | None]:
    """The embedded file, or (None, None) if there is none or more than one."""
    from pypdf import PdfReader

    files = [(name, data) for name, versions in PdfReader(io.BytesIO(pdf)).attachments.items() for data in versions]
    return files[0] if len(files) == 1 else (None, None)


def keywords(pdf: bytes) -> str:
    """The document's keywords (its information dictionary), "" when it has none."""
    from pypdf import PdfReader

    metadata = PdfReader(io.BytesIO(pdf)).metadata
    value = metadata.get("/Keywords") if metadata else None
    return str(value) if value else ""


def embedded_file(pdf: bytes) -> bytes | None:
    """The one file a document embeds (its data), or None."""
    return _attachment(pdf)[1]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
