"""Bag labels: real WeasyPrint rendering, text read back with pypdf, barcodes decoded with zxing-cpp from
pypdfium2 page images. Expected barcode data is written out literally, not recomputed by the code under test."""

from __future__ import annotations

import base64
import io
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import barcode
import pypdfium2
import pytest
import weasyprint
import zxingcpp
from PIL import Image
from pypdf import PdfReader
from weasyprint.urls import FatalURLFetchingError

from mfg.domain import isbt128
from mfg.domain.errors import ValidationFailed
from mfg.reports import labels
from mfg.reports.labels import (
    DEFAULT_WARNINGS,
    DEMO_MARK,
    LabelData,
    barcode_svg_code128,
    datamatrix_content,
    datamatrix_svg,
    format_cells,
    label_html,
    render_labels_pdf,
)

DPI = 600
PX_PER_MM = DPI / 25.4

LABEL = LabelData(
    din="A123426000124",  # keyboard check character Z
    flags="00",
    product_code="S9999VA0",
    product_name="Allogeneic NK cells, expanded; for infusion",
    expires_at=datetime(2026, 6, 3, 16, 30, 45, tzinfo=ZoneInfo("Europe/Berlin")),  # 14:30 UTC
    subject_code="NK-001",
    coi="CHA123426000456",  # keyboard check character N
    nk_cells=187_000_000,
    volume_ml=Decimal("13.4"),
    dose_level="DL2 (3 x 10^6 NK cells/kg)",
    storage="Store at 2-8 °C. Do not freeze.",
    facility="University Cell Therapy Laboratory (FIN A1234)",
)
DIN_DATA = "=A12342600012400"
PRODUCT_DATA = "=<S9999VA0"
EXPIRY_DATA = "&>0261541430"  # 2026, day 154 (3 June), 14:30 UTC
COI_DATA = "&/CHA123426000456"
COMPOUND = "=+04000" + DIN_DATA + PRODUCT_DATA + EXPIRY_DATA + COI_DATA

DEMO_LABEL = replace(LABEL, din="X999926000124", coi="CHX999926000456", facility="Demo site (FIN X9999)")


# --- helpers -------------------------------------------------------------------------------------------


def pages_text(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def page_image(pdf: bytes, index: int = 0) -> Image.Image:
    document = pypdfium2.PdfDocument(pdf)
    try:
        page = document[index]
        try:
            return page.render(scale=DPI / 72).to_pil().convert("L")
        finally:
            page.close()
    finally:
        document.close()


def decoded(image: Image.Image) -> dict[str, list]:
    found: dict[str, list] = {}
    for result in zxingcpp.read_barcodes(image):
        found.setdefault(result.format.name, []).append(result)
    return found


def svg_of(data_uri: str) -> ET.Element:
    prefix = "data:image/svg+xml;base64,"
    assert data_uri.startswith(prefix)
    return ET.fromstring(base64.b64decode(data_uri[len(prefix):]))


def mm(value: str) -> float:
    return float(value.removesuffix("mm"))


# --- rendered once per module --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def original_pdf() -> bytes:
    return render_labels_pdf([LABEL], demo=False)


@pytest.fixture(scope="module")
def original_image(original_pdf: bytes) -> Image.Image:
    return page_image(original_pdf)


@pytest.fixture(scope="module")
def six_label_pdf() -> bytes:
    batch = [replace(LABEL, product_code=f"S9999V{isbt128.division_code(n)}", reprint=2 if n == 3 else 0)
             for n in range(1, 7)]
    return render_labels_pdf(batch, demo=False)


@pytest.fixture(scope="module")
def wide_pdf() -> bytes:
    return render_labels_pdf([LABEL], demo=False, width_in=6, height_in=4)


# --- pages ---------------------------------------------------------------------------------------------


def test_one_page_per_label_each_4_by_4_inches_in_the_order_given(six_label_pdf: bytes) -> None:
    reader = PdfReader(io.BytesIO(six_label_pdf))
    assert len(reader.pages) == 6
    for page in reader.pages:
        box = page.mediabox
        assert (float(box.width), float(box.height)) == (288.0, 288.0)
    divisions = [re.search(r"S9999V ?([A-Z]0)", text).group(1) for text in pages_text(six_label_pdf)]
    assert divisions == ["A0", "B0", "C0", "D0", "E0", "F0"]


def test_a_6_by_4_inch_label_has_a_432_by_288_point_page_and_its_barcodes_still_decode(wide_pdf: bytes) -> None:
    reader = PdfReader(io.BytesIO(wide_pdf))
    assert len(reader.pages) == 1
    assert (float(reader.pages[0].mediabox.width), float(reader.pages[0].mediabox.height)) == (432.0, 288.0)
    found = decoded(page_image(wide_pdf))
    assert sorted(r.text for r in found["Code128"]) == sorted([DIN_DATA, PRODUCT_DATA, EXPIRY_DATA, COI_DATA])
    assert [r.text for r in found["DataMatrix"]] == [COMPOUND]


# --- eye-readable text ---------------------------------------------------------------------------------


def test_the_eye_readable_text_carries_every_identifier_and_value(original_pdf: bytes) -> None:
    (text,) = pages_text(original_pdf)
    assert re.search(r"A1234 26 000124\s*(00\s*)?Z\b", text), "DIN eye-readable followed by its boxed check Z"
    assert re.search(r"CH A1234 26 000456\s*N\b", text), "COI eye-readable followed by its boxed check N"
    assert re.search(r"S9999V ?A0", text)
    flat = " ".join(text.split())  # lines wrap where the column ends
    for expected in ("Subject NK-001", "2026-06-03 14:30 UTC", "13.4 mL", "1.87 × 10⁸ NK cells",
                     "DL2 (3 x 10^6 NK cells/kg)", "Store at 2-8 °C. Do not freeze.",
                     "University Cell Therapy Laboratory (FIN A1234)"):
        assert expected in flat, expected
    assert "Allogeneic NK cells, expanded; for infusion" in flat


def test_every_warning_statement_is_printed_as_written(original_pdf: bytes) -> None:
    (text,) = pages_text(original_pdf)
    flat = " ".join(text.split())
    for statement in ("For allogeneic use only", "Rx only", "Do not irradiate", "Do not use leukoreduction filters"):
        assert statement in DEFAULT_WARNINGS
        assert statement in flat, statement


def test_warning_statements_come_from_the_label_data() -> None:
    pdf = render_labels_pdf([replace(LABEL, warnings=("For use by the intended recipient only",))], demo=False)
    flat = " ".join(pages_text(pdf)[0].split())
    assert "For use by the intended recipient only" in flat
    assert "Rx only" not in flat


def test_reprint_n_appears_only_on_a_reprint(six_label_pdf: bytes, original_pdf: bytes) -> None:
    texts = pages_text(six_label_pdf)
    assert ["REPRINT 2" in text for text in texts] == [False, False, True, False, False, False]
    assert "REPRINT" not in pages_text(original_pdf)[0]


def test_the_demo_mark_appears_only_on_demo_labels(original_pdf: bytes) -> None:
    assert DEMO_MARK == "DEMO — NOT FOR CLINICAL USE"
    assert DEMO_MARK not in pages_text(original_pdf)[0]
    assert "DEMO" not in pages_text(original_pdf)[0]
    demo_pdf = render_labels_pdf([LABEL, DEMO_LABEL], demo=True)
    assert [DEMO_MARK in text for text in pages_text(demo_pdf)] == [True, True]


def test_the_demonstration_fin_is_refused_on_a_label_not_marked_demo() -> None:
    with pytest.raises(ValidationFailed, match="demonstration FIN X9999"):
        label_html([LABEL, DEMO_LABEL], demo=False)
    with pytest.raises(ValidationFailed, match="demonstration FIN X9999"):
        label_html([replace(LABEL, coi="CHX999926000456")], demo=False)


# --- barcodes ------------------------------------------------------------------------------------------


def test_every_barcode_decodes_to_its_isbt_128_data(original_image: Image.Image) -> None:
    found = decoded(original_image)
    assert sorted(found) == ["Code128", "DataMatrix"]
    assert sorted(r.text for r in found["Code128"]) == sorted([DIN_DATA, PRODUCT_DATA, EXPIRY_DATA, COI_DATA])
    assert [r.text for r in found["DataMatrix"]] == [COMPOUND]


def test_the_decoded_data_parses_back_to_the_label_identifiers(original_image: Image.Image) -> None:
    texts = {r.text[:2] if r.text[:2] in ("=<", "&>", "&/") else "=": r.text
             for r in decoded(original_image)["Code128"]}
    din, flags = isbt128.parse_din_barcode(texts["="])
    assert (din.text, flags, din.check) == ("A123426000124", "00", "Z")
    assert isbt128.parse_product_code(texts["=<"]) == isbt128.ProductCode("S9999", "V", "A0")
    assert isbt128.parse_datetime(texts["&>"]) == ("&>", datetime(2026, 6, 3, 14, 30, tzinfo=timezone.utc))
    assert isbt128.parse_coi(texts["&/"]).text == "CHA123426000456"


def test_the_datamatrix_message_is_a_compound_message_of_the_four_data_structures() -> None:
    message = datamatrix_content(LABEL)
    assert message == COMPOUND
    header, rest = message[:7], message[7:]
    assert header == "=+04000"
    parts = [rest[:16], rest[16:26], rest[26:38], rest[38:]]
    assert "".join(parts) == rest and len(parts[3]) == 17
    assert isbt128.parse_din_barcode(parts[0])[0].text == LABEL.din
    assert isbt128.parse_product_code(parts[1]).barcode() == PRODUCT_DATA
    assert isbt128.parse_datetime(parts[2])[0] == "&>"
    assert isbt128.parse_coi(parts[3]).text == LABEL.coi


def test_code_128_is_printed_with_a_quarter_millimetre_module_and_clear_quiet_zones(
        original_image: Image.Image) -> None:
    by_text = {r.text: r for r in decoded(original_image)["Code128"]}
    for data in (DIN_DATA, PRODUCT_DATA, EXPIRY_DATA, COI_DATA):
        position = by_text[data].position
        modules = len(barcode.Code128(data).build()[0])  # bars and spaces, start to stop
        width_px = position.top_right.x - position.top_left.x
        x_dimension_mm = width_px / modules / PX_PER_MM
        assert 0.24 <= x_dimension_mm <= 0.26, (data, x_dimension_mm)
        height_mm = (position.bottom_left.y - position.top_left.y) / PX_PER_MM
        assert height_mm >= 9, (data, height_mm)
        # 10 modules (2.5 mm) either side of the symbol are white across the bar height
        quiet = round(2.5 * PX_PER_MM) - 2
        for left, right in ((position.top_left.x - quiet, position.top_left.x - 2),
                            (position.top_right.x + 2, position.top_right.x + quiet)):
            zone = original_image.crop((left, position.top_left.y, right, position.bottom_left.y))
            assert zone.getextrema()[0] > 200, (data, "quiet zone not clear")


def test_the_code_128_svg_has_bars_only_and_physical_module_sizes() -> None:
    root = svg_of(barcode_svg_code128(COI_DATA))
    namespace = "{http://www.w3.org/2000/svg}"
    assert root.find(f".//{namespace}text") is None
    bars = [rect for rect in root.iter(f"{namespace}rect") if "black" in rect.get("style", "")]
    assert min(mm(bar.get("width")) for bar in bars) == pytest.approx(0.25)
    modules = len(barcode.Code128(COI_DATA).build()[0])
    assert mm(root.get("width")) == pytest.approx(modules * 0.25 + 2 * 2.5)
    assert mm(bars[0].get("x")) == pytest.approx(2.5)


def test_the_datamatrix_svg_has_half_millimetre_modules_and_a_quiet_zone() -> None:
    root = svg_of(datamatrix_svg(COMPOUND))
    side = int(root.get("viewBox").split()[2])
    assert mm(root.get("width")) == mm(root.get("height")) == pytest.approx(side * 0.5)
    path = root.find("{http://www.w3.org/2000/svg}path").get("d")
    starts = [tuple(map(int, match)) for match in re.findall(r"M(\d+),(\d+)", path)]
    assert min(x for x, _ in starts) == 2 and min(y for _, y in starts) == 2


# --- layout and safety ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(4, 4), (6, 4)])
def test_nothing_is_drawn_in_the_page_margin(size: tuple[int, int], original_image: Image.Image,
                                             wide_pdf: bytes) -> None:
    """Text or barcodes running past the label edge would be cut off by the printer."""
    image = original_image if size == (4, 4) else page_image(wide_pdf)
    assert [abs(got - inches * DPI) <= 1 for got, inches in zip(image.size, size, strict=False)] == [True, True]
    edge = round(2 * PX_PER_MM)
    width, height = image.size
    for box in ((0, 0, width, edge), (0, height - edge, width, height),
                (0, 0, edge, height), (width - edge, 0, width, height)):
        assert image.crop(box).getextrema()[0] > 240, box


def test_long_text_wraps_instead_of_running_off_the_label() -> None:
    long = replace(LABEL, product_name="Allogeneic natural killer cells, ex vivo expanded with feeder cells and IL-2, "
                                        "formulated in 5 % human serum albumin; for intravenous infusion",
                   facility="University Hospital Cell Therapy and Regenerative Medicine Manufacturing Facility")
    pdf = render_labels_pdf([long], demo=True)
    assert len(PdfReader(io.BytesIO(pdf)).pages) == 1
    image = page_image(pdf)
    edge = round(2 * PX_PER_MM)
    assert image.crop((image.width - edge, 0, image.width, image.height)).getextrema()[0] > 240
    assert image.crop((0, image.height - edge, image.width, image.height)).getextrema()[0] > 240
    assert len(decoded(image)["Code128"]) == 4


def test_the_html_uses_only_data_uris_and_names_dejavu_sans() -> None:
    document = label_html([LABEL], demo=False)
    references = re.findall(r"""(?:src|href)=["']([^"']*)["']|url\(([^)]*)\)""", document)
    urls = [a or b for a, b in references]
    assert urls and all(url.startswith("data:") for url in urls)
    assert '"DejaVu Sans"' in document
    assert "size: 4in 4in" in document
    assert '<span class="division">A0</span>' in document
    assert '<span class="check">Z</span>' in document and '<span class="flags">00</span>' in document


def test_the_renderer_refuses_any_url_but_data() -> None:
    fetcher = labels._url_fetcher()
    html = '<p style="font-family: \'DejaVu Sans\'">x</p><img src="file:///etc/hostname">'
    with pytest.raises(FatalURLFetchingError):
        weasyprint.HTML(string=html, url_fetcher=fetcher).write_pdf()


def test_the_same_labels_give_byte_identical_pdfs(original_pdf: bytes) -> None:
    assert render_labels_pdf([LABEL], demo=False) == original_pdf


# --- input checks and formatting -----------------------------------------------------------------------


def test_a_malformed_snapshot_is_refused_with_every_problem() -> None:
    with pytest.raises(ValidationFailed) as caught:
        replace(LABEL, din="O123426000124", flags="05", product_code="X9999VA0", coi="CH12",
                expires_at=datetime(2026, 6, 3, 14, 30), nk_cells=0, volume_ml=Decimal("-1"), reprint=-1,
                subject_code=" ")
    problems = " | ".join(caught.value.problems)
    for fragment in ("FIN character 1 is 'O'", "Product description code must start with 'S'", "COI",
                     "no time zone", "NK cells", "Volume", "Reprint", "Subject code"):
        assert fragment in problems, fragment


def test_flags_are_checked_against_the_din() -> None:
    with pytest.raises(ValidationFailed, match="expected flags"):
        replace(LABEL, flags="60")


@pytest.mark.parametrize(("width", "height"), [(1, 4), (4, 9), (0, 0)])
def test_an_unprintable_label_size_is_refused(width: float, height: float) -> None:
    with pytest.raises(ValidationFailed, match="2-8 inches"):
        label_html([LABEL], width_in=width, height_in=height, demo=False)


def test_no_labels_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="No labels"):
        render_labels_pdf([], demo=False)


@pytest.mark.parametrize(("count", "shown"), [
    (187_000_000, "1.87 × 10⁸"), (190_000_000, "1.90 × 10⁸"), (999_500_000, "1.00 × 10⁹"),
    (1_234_567_890, "1.23 × 10⁹"), (1_235_000_000, "1.24 × 10⁹"), (5_000, "5.00 × 10³"), (950, "950"),
])
def test_cell_counts_are_printed_with_three_significant_digits(count: int, shown: str) -> None:
    assert format_cells(count) == shown



# --- the site's local expiry, the facility and the additive statement; ZPL beside the PDF ------------------

SITE_LABEL = replace(LABEL, timezone="America/Chicago", facility_name="University Cell Therapy Laboratory",
                     facility="FIN A1234", facility_address=("200 Lab Road", "Springfield, IL 62701, USA"),
                     additive="Contains 5 % human serum albumin in 0.9 % sodium chloride", product_code="S9999V00")
SITE_EXPIRY_DATA = "&>0261540930"  # 14:30 UTC on 3 June 2026 is 09:30 CDT (UTC-5): the site's local time


def test_the_expiry_is_encoded_and_printed_in_the_sites_local_time_with_its_zone() -> None:
    pdf = render_labels_pdf([SITE_LABEL], demo=False)
    (text,) = pages_text(pdf)
    flat = " ".join(text.split())
    assert "2026-06-03 09:30 CDT" in flat and "14:30" not in flat
    decoded = {b.text for b in zxingcpp.read_barcodes(page_image(pdf))}
    assert SITE_EXPIRY_DATA in decoded and "=<S9999V00" in decoded  # one bag: undivided, division 00
    assert isbt128.parse_datetime(SITE_EXPIRY_DATA, ZoneInfo("America/Chicago"))[1] == \
        datetime(2026, 6, 3, 14, 30, tzinfo=timezone.utc)


def test_the_label_names_the_facility_with_its_address_and_states_the_additive() -> None:
    (text,) = pages_text(render_labels_pdf([SITE_LABEL], demo=False))
    flat = " ".join(text.split())
    for expected in ("University Cell Therapy Laboratory", "FIN A1234", "200 Lab Road",
                     "Springfield, IL 62701, USA", "Contains 5 % human serum albumin in 0.9 % sodium chloride",
                     "Store at 2-8 °C. Do not freeze."):
        assert expected in flat, expected


def test_zpl_carries_the_same_fields_as_the_pdf_label() -> None:
    from mfg.reports import zpl

    text = zpl.labels_zpl([SITE_LABEL, replace(SITE_LABEL, reprint=2)], demo=True)
    assert text.count("^XA") == text.count("^XZ") == 2 and "^CI28" in text
    first, second = zpl.parse(text)
    assert first["din_barcode"] == DIN_DATA and first["product_barcode"] == "=<S9999V00"
    assert first["expiry_barcode"] == SITE_EXPIRY_DATA and first["coi_barcode"] == COI_DATA
    assert first["expiry_eye"] == "2026-06-03 09:30 CDT"
    assert first["datamatrix"] == "=+04000" + DIN_DATA + "=<S9999V00" + SITE_EXPIRY_DATA + COI_DATA
    assert first["facility"] == "University Cell Therapy Laboratory · FIN A1234"
    assert first["facility_address"] == "200 Lab Road, Springfield, IL 62701, USA"
    assert first["additive"] == SITE_LABEL.additive and first["storage"] == SITE_LABEL.storage
    assert first["nk_cells"] == "1.87 × 10⁸ NK cells" and first["volume"] == "Volume 13.4 mL"
    assert first["subject"] == "Subject NK-001" and first["demo"] == DEMO_MARK
    assert first["din_eye"] == "A1234 26 000124 00 Z" and first["coi_eye"] == "CH A1234 26 000456 N"
    assert "reprint" not in first and second["reprint"] == "REPRINT 2"
    assert all(w in first["warnings"] for w in DEFAULT_WARNINGS)


def test_zpl_escapes_its_reserved_characters() -> None:
    from mfg.reports import zpl

    (fields,) = zpl.parse(zpl.labels_zpl([replace(SITE_LABEL, storage="Keep ^cold~ _always_")], demo=False))
    assert fields["storage"] == "Keep ^cold~ _always_"
