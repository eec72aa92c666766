"""The signed-PDF pipeline, end to end with the real libraries: WeasyPrint renders PDF/A-3b from the
``reports/_document.html`` layout, pypdf reads it back, pyHanko signs and validates. Keys and certificates
are made here (the site generator from ``mfg.reports.site_certificate``, plus a small CA for PKCS#12)."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import xml.dom.minidom
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jinja2
import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from PIL import Image
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pypdf import PdfReader

from mfg.config import RESOURCE_ROOT
from mfg.reports.pdf import (
    DocumentResourceError,
    SigningMaterialError,
    SiteSigner,
    load_site_signer,
    render_pdf,
    sha256_hex,
    sign_pdf,
    verify_pdf,
)
from mfg.reports.site_certificate import ensure_site_certificate

HEADER = "Lot NK-0001 · COI W1234 26 000123 & <Subject 07>"
TITLE = "Batch record NK-0001"
WATERMARK = "DEMO — NOT FOR CLINICAL USE"
SNAPSHOT = json.dumps({"batch": "NK-0001", "volume": "50 mL", "note": "µL — ünïcode"}, ensure_ascii=False,
                      sort_keys=True).encode()
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
PDFAID = "http://www.aiim.org/pdfa/ns/id/"
DC = "http://purl.org/dc/elements/1.1/"
PARAGRAPH = "<p>Step {n}: viable cells counted, within limits, performed and verified.</p>"


@pytest.fixture(autouse=True)
def quiet_pyhanko() -> Iterator[None]:
    """pyHanko logs tracebacks for untrusted certificates and broken files; the verdicts are asserted."""
    loggers = [logging.getLogger(name) for name in ("pyhanko", "pyhanko_certvalidator")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    yield
    for logger, level in zip(loggers, levels, strict=False):
        logger.setLevel(level)


# ------------------------------------------------------------------------------------------- helpers

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(RESOURCE_ROOT / "templates"), autoescape=True)


def document_html(body: str, *, header: str = HEADER, watermark: bool = False, title: str = TITLE) -> str:
    """A document on the base layout, as a report template would extend it."""
    child = "{% extends 'reports/_document.html' %}{% block content %}" + body + "{% endblock %}"
    return _ENV.from_string(child).render(header=header, watermark=watermark, title=title)


def two_pages() -> str:
    return "<h1>Batch record</h1>" + "".join(PARAGRAPH.format(n=n) for n in range(1, 61))


def render(html: str, **options: object) -> bytes:
    return render_pdf(html, attachment=SNAPSHOT, attachment_name="batch.json", title=TITLE, **options)


def page_texts(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def png_data_uri(size: tuple[int, int]) -> str:
    import base64

    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 0, 0)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclass(frozen=True)
class Issued:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def asn1(self) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(self.cert.public_bytes(serialization.Encoding.DER))


def issue(common_name: str, *, issuer: Issued | None = None, ca: bool = False,
          not_after: datetime | None = None, elliptic: bool = False) -> Issued:
    """A certificate (RSA 2048, or EC P-256): self-signed, or issued by ``issuer``; a leaf has
    digitalSignature only."""
    key = ec.generate_private_key(ec.SECP256R1()) if elliptic else rsa.generate_private_key(
        public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer.cert.subject if issuer else name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5)).not_valid_after(not_after or now + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                            crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    return Issued(key, builder.sign(issuer.key if issuer else key, hashes.SHA256()))


# ------------------------------------------------------------------------------------------- fixtures

def _site(directory: Path, name: str) -> SiteSigner:
    ensure_site_certificate(directory / "site-key.pem", directory / "site-cert.pem", name, demo=True)
    return SiteSigner.from_files(directory / "site-key.pem", directory / "site-cert.pem")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> SiteSigner:
    return _site(tmp_path_factory.mktemp("site"), "Test site")


@pytest.fixture(scope="module")
def other_site(tmp_path_factory: pytest.TempPathFactory) -> SiteSigner:
    return _site(tmp_path_factory.mktemp("other"), "Other site")


@pytest.fixture(scope="module")
def demo_pdf() -> bytes:
    """Two pages, watermarked."""
    return render(document_html(two_pages(), watermark=True))


@pytest.fixture(scope="module")
def plain_pdf() -> bytes:
    return render(document_html("<h1>Certificate of analysis</h1><p>All results within specification.</p>"))


@pytest.fixture(scope="module")
def signed_pdf(demo_pdf: bytes, site: SiteSigner) -> bytes:
    return sign_pdf(demo_pdf, site, reason="Batch record NK-0001 released", location="Test site, clean room 2")


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str]]]:
    """A local web server that records every request made to it."""
    requests: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ------------------------------------------------------------------------------------------- rendering

def test_a_rendered_document_is_pdf_a_3b_with_its_title(demo_pdf: bytes) -> None:
    reader = PdfReader(io.BytesIO(demo_pdf))
    xmp = reader.xmp_metadata
    assert xmp is not None
    descriptions = xmp.rdf_root.getElementsByTagNameNS(RDF, "Description")
    parts = {d.getAttributeNS(PDFAID, "part") for d in descriptions} - {""}
    conformances = {d.getAttributeNS(PDFAID, "conformance") for d in descriptions} - {""}
    assert (parts, conformances) == ({"3"}, {"B"})
    titles = [_text(li) for title in xmp.rdf_root.getElementsByTagNameNS(DC, "title")
              for li in title.getElementsByTagNameNS(RDF, "li")]
    assert titles == [TITLE]
    assert reader.metadata is not None and reader.metadata.title == TITLE
    intents = reader.trailer["/Root"]["/OutputIntents"]
    assert [intent.get_object()["/S"] for intent in intents] == ["/GTS_PDFA1"]


def _text(node: xml.dom.minidom.Element) -> str:
    return "".join(child.data for child in node.childNodes if child.nodeType == child.TEXT_NODE)


def test_the_snapshot_is_attached_as_json_data_and_comes_back_byte_identical(demo_pdf: bytes) -> None:
    reader = PdfReader(io.BytesIO(demo_pdf))
    assert reader.attachments == {"batch.json": [SNAPSHOT]}
    catalog = reader.trailer["/Root"]
    file_specs = [entry.get_object() for entry in catalog["/AF"]]
    assert len(file_specs) == 1  # WeasyPrint 70 lists it twice unless render_pdf fixes that
    spec = file_specs[0]
    assert (spec["/UF"], spec["/AFRelationship"]) == ("batch.json", "/Data")
    assert spec["/EF"]["/F"].get_object()["/Subtype"] == "/application/json"


def test_the_file_name_does_not_decide_the_media_type() -> None:
    pdf = render_pdf(document_html("<p>x</p>"), attachment=b"{}", attachment_name="snapshot.dat", title="x")
    spec = PdfReader(io.BytesIO(pdf)).trailer["/Root"]["/AF"][0].get_object()
    assert spec["/EF"]["/F"].get_object()["/Subtype"] == "/application/json"


def test_every_page_has_the_header_and_page_n_of_m(demo_pdf: bytes) -> None:
    texts = page_texts(demo_pdf)
    assert len(texts) == 2
    for number, text in enumerate(texts, start=1):
        assert HEADER in text  # escaped in the HTML, shown literally
        assert f"Page {number} of 2" in text
    assert "Step 1:" in texts[0] and "Step 60:" in texts[1]


def test_the_watermark_is_on_every_page_only_when_asked(demo_pdf: bytes, plain_pdf: bytes) -> None:
    assert all(WATERMARK in text for text in page_texts(demo_pdf))
    plain = page_texts(plain_pdf)
    assert plain and not any("NOT FOR CLINICAL USE" in text for text in plain)
    assert "Page 1 of 1" in plain[0]


def test_only_dejavu_sans_is_used_and_every_font_is_embedded(demo_pdf: bytes) -> None:
    reader = PdfReader(io.BytesIO(demo_pdf))
    fonts = {}
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            descendant = font["/DescendantFonts"][0].get_object()
            fonts[font["/BaseFont"]] = "/FontFile2" in descendant["/FontDescriptor"].get_object()
    assert fonts and all(name.split("+", 1)[1].startswith("DejaVu-Sans") for name in fonts)
    assert all(fonts.values())


def test_the_same_input_gives_the_same_bytes(demo_pdf: bytes) -> None:
    assert render(document_html(two_pages(), watermark=True)) == demo_pdf


def test_the_same_input_gives_the_same_bytes_when_fonttools_subsets_the_fonts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libharfbuzz-subset, WeasyPrint falls back to fontTools, which stamps the current time
    (SOURCE_DATE_EPOCH when set) into each font subset."""
    import weasyprint.pdf.fonts

    monkeypatch.setattr(weasyprint.pdf.fonts, "harfbuzz_subset", None)
    html = document_html("<h1>Batch record</h1><p>Viable cells <b>within</b> limits.</p>")
    outputs = []
    for epoch in ("1000000000", "1700000000"):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        outputs.append(render(html))
    assert outputs[0] == outputs[1]


def test_nothing_but_data_uris_is_fetched(tmp_path: Path, http_server: tuple[str, list[str]],
                                          caplog: pytest.LogCaptureFixture) -> None:
    base, requests = http_server
    local = tmp_path / "logo.png"
    Image.new("RGB", (3, 3), (0, 0, 200)).save(local)
    external = [f"{base}/logo.png", f"{base}/style.css", f"{base}/imported.css", local.as_uri(),
                "file:///etc/passwd", f"{base}/background.png"]
    html = document_html(
        f"<style>@import url('{external[2]}'); .bg {{ background-image: url('{external[5]}'); }}</style>"
        f"<link rel='stylesheet' href='{external[1]}'>"
        f"<p class='bg'>Images:</p><img src='{external[0]}'><img src='{external[3]}'><img src='{external[4]}'>"
        f"<img src='{png_data_uri((2, 2))}'>")
    with caplog.at_level(logging.WARNING):
        pdf = render(html)
    assert requests == []  # the server was never contacted
    images = [image.image.size for page in PdfReader(io.BytesIO(pdf)).pages for image in page.images]
    assert images == [(2, 2)]  # the data: image only; the local file was not read into the document
    refused = " ".join(record.getMessage() for record in caplog.records)
    for url in external:
        assert f"refused {url!r}" in refused
    assert "Images:" in page_texts(pdf)[0]


def test_strict_resources_refuse_to_render_without_them(http_server: tuple[str, list[str]]) -> None:
    base, requests = http_server
    html = document_html(f"<img src='{base}/barcode.svg'>")
    with pytest.raises(DocumentResourceError, match="refused"):
        render(html, strict_resources=True)
    assert requests == []
    assert render(document_html(f"<img src='{png_data_uri((2, 2))}'>"), strict_resources=True).startswith(b"%PDF-")


# ------------------------------------------------------------------------------------------- signing

def test_a_signed_document_verifies_with_its_snapshot(demo_pdf: bytes, signed_pdf: bytes, site: SiteSigner) -> None:
    assert signed_pdf.startswith(demo_pdf)  # an incremental update: the rendered bytes are kept as they are
    result = verify_pdf(signed_pdf, site.certificate)
    assert (result.valid, result.intact, result.trusted, result.reason) == (True, True, True, "")
    assert result.signer == site.subject and "Test site batch record signing (DEMO)" in result.signer
    assert result.signed_at is not None
    assert abs(datetime.now(timezone.utc) - result.signed_at) < timedelta(minutes=10)
    assert (result.attachment_name, result.attachment) == ("batch.json", SNAPSHOT)
    assert result


def test_the_signature_is_pades_with_reason_and_location(signed_pdf: bytes) -> None:
    (signature,) = PdfFileReader(io.BytesIO(signed_pdf)).embedded_regular_signatures
    assert signature.field_name == "SiteSignature"
    assert signature.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    assert signature.sig_object["/Reason"] == "Batch record NK-0001 released"
    assert signature.sig_object["/Location"] == "Test site, clean room 2"
    xmp = PdfReader(io.BytesIO(signed_pdf)).xmp_metadata
    assert xmp is not None and any(d.getAttributeNS(PDFAID, "part") == "3"
                                   for d in xmp.rdf_root.getElementsByTagNameNS(RDF, "Description"))


def test_one_flipped_byte_in_the_signed_range_is_detected(signed_pdf: bytes, site: SiteSigner) -> None:
    (signature,) = PdfFileReader(io.BytesIO(signed_pdf)).embedded_regular_signatures
    start, length, _, _ = (int(value) for value in signature.sig_object["/ByteRange"])
    position = signed_pdf.index(b"stream", len(signed_pdf) // 3) + 40  # inside a compressed stream
    assert start <= position < start + length
    tampered = bytearray(signed_pdf)
    tampered[position] ^= 0x01
    result = verify_pdf(bytes(tampered), site.certificate)
    assert (result.valid, result.intact) == (False, False)
    assert result.reason == "the document was changed after it was signed"
    assert result.attachment is None


def test_an_update_appended_after_signing_is_not_valid(signed_pdf: bytes, site: SiteSigner) -> None:
    writer = IncrementalPdfFileWriter(io.BytesIO(signed_pdf))
    writer.root["/Lang"] = generic.TextStringObject("de")
    writer.update_root()
    output = io.BytesIO()
    writer.write(output)
    result = verify_pdf(output.getvalue(), site.certificate)
    assert (result.valid, result.intact, result.trusted) == (False, True, True)
    assert result.reason == "content was added to the document after it was signed"


def test_a_document_signed_by_another_certificate_is_not_trusted(signed_pdf: bytes, other_site: SiteSigner) -> None:
    result = verify_pdf(signed_pdf, other_site.certificate)
    assert (result.valid, result.intact, result.trusted) == (False, True, False)
    assert result.reason == "signed by an untrusted certificate"
    assert result.attachment is None


def test_an_unsigned_document_is_not_valid(demo_pdf: bytes, site: SiteSigner) -> None:
    result = verify_pdf(demo_pdf, site.certificate)
    assert (result.valid, result.reason, result.signer) == (False, "not signed", None)


@pytest.mark.parametrize("data", [b"", b"garbage", b"%PDF-1.7\n1 0 obj <<\n%%EOF", b"\x00" * 4096],
                         ids=["empty", "text", "pdf-header-only", "zeros"])
def test_garbage_is_not_valid_and_does_not_raise(data: bytes, site: SiteSigner) -> None:
    result = verify_pdf(data, site.certificate)
    assert (result.valid, result.intact, result.trusted) == (False, False, False)
    assert result.reason


def test_a_truncated_signed_document_is_not_valid(signed_pdf: bytes, site: SiteSigner) -> None:
    for size in (len(signed_pdf) // 2, len(signed_pdf) - 200):
        result = verify_pdf(signed_pdf[:size], site.certificate)
        assert not result.valid and result.reason


def test_sha256_hex() -> None:
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ------------------------------------------------------------------------------------------- signing material

@pytest.fixture(scope="module")
def authority() -> Issued:
    return issue("Test site CA", ca=True)


@pytest.fixture(scope="module")
def pkcs12_file(tmp_path_factory: pytest.TempPathFactory, authority: Issued) -> Path:
    leaf = issue("Test site document signing", issuer=authority)
    path = tmp_path_factory.mktemp("p12") / "site.p12"
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"site", leaf.key, leaf.cert, [authority.cert], serialization.BestAvailableEncryption(b"s3cret pass")))
    return path


def test_a_pkcs12_signer_signs_and_verifies_against_its_authority(pkcs12_file: Path, authority: Issued,
                                                                  plain_pdf: bytes) -> None:
    signer = SiteSigner.from_pkcs12(pkcs12_file, b"s3cret pass")
    assert signer.subject == "Common Name: Test site document signing"
    signed = sign_pdf(plain_pdf, signer, reason="Certificate of analysis", location="Test site")
    for trusted in (authority.asn1, signer.certificate):  # the authority, or the site's own certificate
        result = verify_pdf(signed, trusted)
        assert (result.valid, result.reason, result.attachment) == (True, "", SNAPSHOT)


def test_an_elliptic_curve_key_signs_too(tmp_path: Path, plain_pdf: bytes, authority: Issued) -> None:
    leaf = issue("EC site", issuer=authority, elliptic=True)
    signed = sign_pdf(plain_pdf, signer_from(leaf, tmp_path / "ec"), reason="r", location="l")
    assert verify_pdf(signed, authority.cert).valid  # a cryptography certificate is accepted too


def test_a_wrong_pkcs12_passphrase_is_a_clear_error(pkcs12_file: Path) -> None:
    with pytest.raises(SigningMaterialError, match="PKCS#12"):
        SiteSigner.from_pkcs12(pkcs12_file, b"wrong")
    with pytest.raises(SigningMaterialError, match="PKCS#12"):
        SiteSigner.from_pkcs12(pkcs12_file.with_name("missing.p12"), None)


def test_a_key_that_does_not_belong_to_the_certificate_is_refused(tmp_path: Path) -> None:
    ensure_site_certificate(tmp_path / "a" / "key.pem", tmp_path / "a" / "cert.pem", "Site A", demo=True)
    ensure_site_certificate(tmp_path / "b" / "key.pem", tmp_path / "b" / "cert.pem", "Site B", demo=True)
    with pytest.raises(SigningMaterialError, match="does not belong"):
        SiteSigner.from_files(tmp_path / "a" / "key.pem", tmp_path / "b" / "cert.pem")
    with pytest.raises(SigningMaterialError, match="cannot load"):
        SiteSigner.from_files(tmp_path / "a" / "missing.pem", tmp_path / "a" / "cert.pem")


def test_the_configuration_names_the_signing_material(tmp_path: Path, pkcs12_file: Path) -> None:
    instance = tmp_path / "instance"
    ensure_site_certificate(instance / "signing" / "site-key.pem", instance / "signing" / "site-cert.pem",
                            "Configured site", demo=False)
    config = {"SIGNING_KEY_FILE": "signing/site-key.pem", "SIGNING_CERT_FILE": "signing/site-cert.pem",
              "SIGNING_PKCS12_FILE": None, "SIGNING_PKCS12_PASSWORD_FILE": None}
    assert "Configured site batch record signing" in load_site_signer(config, instance).subject
    (instance / "p12-password").write_bytes(b"s3cret pass\n")
    config |= {"SIGNING_PKCS12_FILE": str(pkcs12_file), "SIGNING_PKCS12_PASSWORD_FILE": "p12-password"}
    assert load_site_signer(config, instance).subject == "Common Name: Test site document signing"


def test_a_certificate_is_judged_at_the_signing_time(tmp_path: Path, plain_pdf: bytes, authority: Issued) -> None:
    """No timestamp authority: a document signed while the certificate was valid stays valid after it
    expires; one signed with a certificate that had already expired is not trusted. (The validity of the
    trusted certificate itself is never checked: it is a trust anchor, as a self-signed site certificate is.)"""
    now = datetime.now(timezone.utc)
    short_lived = issue("Short-lived site", issuer=authority, not_after=now + timedelta(seconds=2))
    expired = issue("Expired site", issuer=authority, not_after=now - timedelta(minutes=1))
    signed_in_time = sign_pdf(plain_pdf, signer_from(short_lived, tmp_path / "short"), reason="r", location="l")
    signed_expired = sign_pdf(plain_pdf, signer_from(expired, tmp_path / "expired"), reason="r", location="l")
    time.sleep(max(0.0, (short_lived.cert.not_valid_after_utc - datetime.now(timezone.utc)).total_seconds()) + 1)
    result = verify_pdf(signed_in_time, authority.asn1)
    assert (result.valid, result.reason) == (True, "")
    result = verify_pdf(signed_expired, authority.asn1)
    assert (result.valid, result.intact, result.trusted) == (False, True, False)
    assert result.reason == "signed by an untrusted certificate"


def signer_from(issued: Issued, directory: Path) -> SiteSigner:
    directory.mkdir()
    (directory / "key.pem").write_bytes(issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / "cert.pem").write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    return SiteSigner.from_files(directory / "key.pem", directory / "cert.pem")


def test_signing_and_verifying_work_inside_a_running_event_loop(demo_pdf: bytes, site: SiteSigner) -> None:
    """pyHanko's synchronous API calls asyncio.run: under a running loop (Playwright's sync API in the
    same test session, an ASGI server) the pipeline must still sign and verify."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    async def inside() -> bool:
        signed = sign_pdf(demo_pdf, site, reason="test", location="lab")
        return verify_pdf(signed, site.certificate).valid

    # a thread of its own: the test session's main thread may already run Playwright's loop
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(asyncio.run, inside()).result()
