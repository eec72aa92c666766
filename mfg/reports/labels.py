"""Product bag labels: ISBT 128 barcodes and eye-readable text, one label per PDF page.

:func:`label_html` builds the HTML (``templates/reports/label.html``) from plain :class:`LabelData`
snapshots, so the shared PDF pipeline (PDF/A, signature) can reuse it; :func:`render_labels_pdf` renders
it with WeasyPrint as a plain PDF.

What a label carries (DOMAIN.md sections 5-7; identifiers and check characters come from
:mod:`mfg.domain.isbt128`, never re-implemented here):

* **DIN** (data structure 001): Code 128 of ``=`` + DIN + flags (:meth:`Din.barcode`); eye-readable
  ``X9999 26 000123`` (:meth:`Din.eye_readable`), the flags printed rotated after it and the MOD 37-2
  keyboard check character boxed. The check character is never in a barcode.
* **Product code** (003): Code 128 of ``=<`` + the 8 characters; eye-readable with the division (the
  bag's own part of the code) printed inverted, and the product name.
* **Expiration** (005): Code 128 of ``&>`` + ``cyyjjjhhmm`` in the site's local time
  (:func:`encode_datetime` with :attr:`LabelData.timezone`); eye-readable ``2026-06-03 09:30 CDT``, the
  zone printed beside it. Why local: ISBT 128 defines no time zone in the data structure, and a hospital
  (its scanners, its nurses) reads the expiry as its own local time; a UTC expiry was read hours off
  wherever the site is not on UTC. The zone on the label says which time it is, since the barcode cannot.
* **Chain of identity** (040): Code 128 of ``&/`` + COI text (:meth:`CoiId.barcode`); eye-readable
  ``CH X9999 26 000123`` with its boxed check character, next to the subject code.
* NK cells (``1.87 × 10⁸ NK cells``, :func:`mfg.domain.display.cells`), volume, dose level, storage and
  additive statements, the warning statements, the facility's name, FIN and address; ``REPRINT n`` on
  the n-th reprint; ``DEMO — NOT FOR CLINICAL USE`` on demo instances. A label with the demonstration
  FIN :data:`~mfg.domain.isbt128.DEMO_FIN` is refused unless
  ``demo`` is true (the FIN is not assigned to anyone by ICCBBA).

**DataMatrix content** (:func:`datamatrix_content`): one ISBT 128 *compound message* (data structure
023) carrying the same four data structures as the linear barcodes, in this order, each with its own
data identifiers and nothing between them::

    =+04000 =X99992600012300 =<S9999VA0 &>0261541430 &/CHX999926000123   (without the spaces)

``=+`` is the compound message identifier, ``04`` the number of data structures that follow and ``000``
says the sequence is not one of ICCBBA's predefined messages (ST-001 data structure 023; confirm the
sequence code against the licensed ST-001 before clinical use). The data identifiers themselves delimit
the structures (every one starts with ``=`` or ``&``), so no separator is needed: a reader splits the
message at the known prefixes and lengths (16, 10, 12 and 17 characters).

**Print quality.** Code 128 X-dimension :data:`CODE128_MODULE_MM` (0.25 mm), quiet zones of 10 X on
each side and bar height :data:`CODE128_HEIGHT_MM`; DataMatrix modules :data:`DATAMATRIX_MODULE_MM`
with a 2-module quiet zone. Sizes are physical, so a 6 x 4 in label has the same barcodes with more
room around them. All images are ``data:`` URIs; the renderer refuses any other URL and fails (rather
than print a label with a missing barcode) if one cannot be loaded.

**Warning statements.** DOMAIN.md does not list label warning statements. :data:`DEFAULT_WARNINGS`
holds common cellular-therapy statements as a placeholder; the statements are a regulatory decision for
QA and belong in the trial configuration: pass them per label in :attr:`LabelData.warnings`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import barcode
import jinja2
from barcode.writer import SVGWriter
from ppf.datamatrix import DataMatrix

from mfg.config import TEMPLATES_DIR
from mfg.domain import display, isbt128
from mfg.domain.errors import ValidationFailed

CODE128_MODULE_MM = 0.25
"""Code 128 X-dimension (narrowest bar) in mm: printable on 203/300 dpi thermal label printers."""
CODE128_QUIET_ZONE_MM = 10 * CODE128_MODULE_MM
CODE128_HEIGHT_MM = 10.0
DATAMATRIX_MODULE_MM = 0.5
DATAMATRIX_QUIET_MODULES = 2

COMPOUND_MESSAGE_PREFIX = "=+"
COMPOUND_SEQUENCE_UNDEFINED = "000"

DEMO_MARK = "DEMO — NOT FOR CLINICAL USE"

DEFAULT_WARNINGS: tuple[str, ...] = (
    "For allogeneic use only",
    "Rx only",
    "Do not irradiate",
    "Do not use leukoreduction filters",
)
"""Placeholder warning statements (DOMAIN.md lists none): QA decides, the trial configuration supplies."""

_TEMPLATE = "reports/label.html"
_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class LabelData:
    """Everything one bag label prints: a plain snapshot, no ORM objects. Validated on creation."""

    din: str  # 13-character DIN text
    flags: str  # DIN flag pair, e.g. "00"
    product_code: str  # 8 characters: description (5), type of donation (1), division (2)
    product_name: str
    expires_at: datetime  # aware; printed and encoded in the site's local time (``timezone``)
    subject_code: str
    coi: str  # 15-character COI text (CoiId.text)
    nk_cells: int
    volume_ml: Decimal
    dose_level: str
    storage: str
    facility: str  # site name / FIN text
    reprint: int = 0  # 0 original; N = the N-th reprint
    warnings: tuple[str, ...] = DEFAULT_WARNINGS
    timezone: str = "UTC"  # the site's IANA time zone: the expiry is encoded and printed in it
    facility_name: str = ""  # the facility's name and address (the trial configuration's)
    facility_address: tuple[str, ...] = ()
    additive: str = ""  # the additive statement (what the cells are suspended in)

    def __post_init__(self) -> None:
        problems: list[str] = []

        def attempt(step: Callable[[], object]) -> object:  # collect every problem, not only the first
            try:
                return step()
            except ValidationFailed as exc:
                problems.extend(exc.problems)
                return None

        din = attempt(lambda: isbt128.din_from_text(self.din))
        if isinstance(din, isbt128.Din):
            attempt(lambda: din.barcode(self.flags))
        attempt(lambda: isbt128.parse_product_code(isbt128.PRODUCT_CODE_PREFIX + _text(self.product_code)))
        try:
            zone: tzinfo = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            problems.append(f"Time zone {self.timezone!r} is not known")
            zone = timezone.utc
        attempt(lambda: isbt128.encode_datetime(isbt128.EXPIRATION_PREFIX, self.expires_at, zone))
        attempt(lambda: isbt128.parse_coi(isbt128.COI_PREFIX + _text(self.coi)))
        for name in ("product_name", "subject_code", "dose_level", "storage", "facility"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{name.replace('_', ' ').capitalize()} must be given on the label")
        if not isinstance(self.nk_cells, int) or isinstance(self.nk_cells, bool) or self.nk_cells <= 0:
            problems.append(f"NK cells must be a positive whole number, got {self.nk_cells!r}")
        if not isinstance(self.volume_ml, Decimal) or not self.volume_ml.is_finite() or self.volume_ml <= 0:
            problems.append(f"Volume must be a positive Decimal number of mL, got {self.volume_ml!r}")
        if not isinstance(self.reprint, int) or isinstance(self.reprint, bool) or self.reprint < 0:
            problems.append(f"Reprint must be 0 (original) or the reprint number, got {self.reprint!r}")
        if (not isinstance(self.warnings, tuple) or not self.warnings
                or not all(isinstance(w, str) and w.strip() for w in self.warnings)):
            problems.append("Warnings must be a non-empty tuple of statements")
        if not isinstance(self.facility_address, tuple) or not all(isinstance(a, str) for a in self.facility_address):
            problems.append("Facility address must be a tuple of lines")
        if problems:
            raise ValidationFailed(*problems)

    @classmethod
    def from_plain(cls, data: dict[str, Any], *, reprint: int = 0) -> LabelData:
        """A label from its plain form (``reports.contents.labels``, and what the labels PDF embeds)."""
        return cls(din=data["din"], flags=data["flags"], product_code=data["product_code"],
                   product_name=data["product_name"], expires_at=datetime.fromisoformat(
                       data["expires_at"].replace("Z", "+00:00")),
                   subject_code=data["subject_code"], coi=data["coi"], nk_cells=data["nk_cells"],
                   volume_ml=Decimal(data["volume_ml"]), dose_level=data["dose_level"], storage=data["storage"],
                   facility=f"FIN {data['facility']}", reprint=reprint,
                   warnings=tuple(data["warnings"]) or DEFAULT_WARNINGS, timezone=data["timezone"],
                   facility_name=data["facility_name"], facility_address=tuple(data["facility_address"]),
                   additive=data["additive"])

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    # The ISBT 128 objects, built by the domain module (validated above, so these cannot fail).
    @property
    def din_id(self) -> isbt128.Din:
        return isbt128.din_from_text(self.din)

    @property
    def coi_id(self) -> isbt128.CoiId:
        return isbt128.parse_coi(isbt128.COI_PREFIX + self.coi)

    @property
    def product(self) -> isbt128.ProductCode:
        return isbt128.parse_product_code(isbt128.PRODUCT_CODE_PREFIX + self.product_code)

    @property
    def din_data(self) -> str:
        return self.din_id.barcode(self.flags)

    @property
    def product_data(self) -> str:
        return self.product.barcode()

    @property
    def expiry_data(self) -> str:
        return isbt128.encode_datetime(isbt128.EXPIRATION_PREFIX, self.expires_at, self.zone)

    @property
    def coi_data(self) -> str:
        return self.coi_id.barcode()


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValidationFailed(f"Expected text, got {type(value).__name__}")
    return value


# --- formatting ----------------------------------------------------------------------------------------


def format_cells(count: int) -> str:
    """``187000000`` -> ``1.87 × 10⁸`` (:func:`mfg.domain.display.cells`, the one formatter)."""
    return display.cells(count)


def format_expiry(moment: datetime, zone: tzinfo = timezone.utc) -> str:
    """The expiry as printed: the site's local time to the minute with its zone (``2026-06-03 09:30 CDT``;
    the barcode drops seconds, so does the text)."""
    local = moment.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def datamatrix_content(label: LabelData) -> str:
    """The DataMatrix message: ISBT 128 compound message (``=+`` + count + ``000``) then DIN, product
    code, expiration and COI data structures, concatenated (see the module docstring)."""
    structures = (label.din_data, label.product_data, label.expiry_data, label.coi_data)
    return f"{COMPOUND_MESSAGE_PREFIX}{len(structures):02d}{COMPOUND_SEQUENCE_UNDEFINED}" + "".join(structures)


# --- barcodes ------------------------------------------------------------------------------------------


def _data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def barcode_svg_code128(data: str) -> str:
    """Code 128 of ``data`` (python-barcode picks code sets A/B/C) as an SVG ``data:`` URI: bars only, no
    text (the label prints its own eye-readable text), X = 0.25 mm, 10 X quiet zones, physical size in mm."""
    if not isinstance(data, str) or not data or not data.isascii() or not data.isprintable():
        raise ValidationFailed(f"Code 128 data must be printable ASCII text, got {data!r}")
    symbol = barcode.Code128(data, writer=SVGWriter())
    svg = symbol.render(writer_options={
        "module_width": CODE128_MODULE_MM,
        "module_height": CODE128_HEIGHT_MM,
        "quiet_zone": CODE128_QUIET_ZONE_MM,
        "write_text": False,
        "margin_top": 0,
        "margin_bottom": 0,
    }, text="")
    return _data_uri(svg.decode("utf-8"))


def datamatrix_svg(data: str) -> str:
    """ECC 200 DataMatrix of ``data`` (ppf-datamatrix encodes it) as an SVG ``data:`` URI: square modules
    of :data:`DATAMATRIX_MODULE_MM`, 2-module quiet zone, one filled path, physical size in mm."""
    if not isinstance(data, str) or not data or not data.isascii():
        raise ValidationFailed(f"DataMatrix data must be ASCII text, got {data!r}")
    matrix = DataMatrix(data).matrix
    q = DATAMATRIX_QUIET_MODULES
    size = len(matrix) + 2 * q
    runs = []
    for y, row in enumerate(matrix):
        x = 0
        while x < len(row):
            if row[x]:
                start = x
                while x < len(row) and row[x]:
                    x += 1
                runs.append(f"M{start + q},{y + q}h{x - start}v1h-{x - start}z")
            else:
                x += 1
    mm = size * DATAMATRIX_MODULE_MM
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{mm:g}mm" height="{mm:g}mm" '
           f'viewBox="0 0 {size} {size}" shape-rendering="crispEdges">'
           f'<rect width="{size}" height="{size}" fill="#fff"/>'
           f'<path fill="#000" d="{"".join(runs)}"/></svg>')
    return _data_uri(svg)


# --- HTML and PDF --------------------------------------------------------------------------------------


def _view(label: LabelData) -> dict[str, object]:
    din, coi, product = label.din_id, label.coi_id, label.product
    return {
        "din_barcode": barcode_svg_code128(label.din_data),
        "din_eye": din.eye_readable(),
        "din_check": din.check,
        "flags": label.flags,
        "product_barcode": barcode_svg_code128(label.product_data),
        "product_main": product.description + product.donation_type,
        "product_division": product.division,
        "product_name": label.product_name,
        "expiry_barcode": barcode_svg_code128(label.expiry_data),
        "expiry_eye": format_expiry(label.expires_at, label.zone),
        "coi_barcode": barcode_svg_code128(label.coi_data),
        "coi_eye": coi.eye_readable(),
        "coi_check": coi.check,
        "subject_code": label.subject_code,
        "nk_cells": format_cells(label.nk_cells),
        "volume": f"{label.volume_ml:f} mL",
        "dose_level": label.dose_level,
        "storage": label.storage,
        "warnings": label.warnings,
        "facility": label.facility,
        "facility_name": label.facility_name,
        "facility_address": label.facility_address,
        "additive": label.additive,
        "reprint": label.reprint,
        "datamatrix": datamatrix_svg(datamatrix_content(label)),
        "datamatrix_text": datamatrix_content(label),
    }


def _check_size(width_in: float, height_in: float) -> None:
    problems = [f"Label {name} must be 2-8 inches, got {value!r}"
                for name, value in (("width", width_in), ("height", height_in))
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not 2 <= value <= 8]
    if problems:
        raise ValidationFailed(*problems)


def label_html(labels: Sequence[LabelData], *, width_in: float = 4, height_in: float = 4, demo: bool) -> str:
    """The labels as one HTML document, one label per page of ``width_in`` x ``height_in`` inches."""
    if not labels:
        raise ValidationFailed("No labels to print.")
    if not all(isinstance(label, LabelData) for label in labels):
        raise ValidationFailed("Labels must be LabelData snapshots.")
    if not isinstance(demo, bool):
        raise ValidationFailed("demo must be True or False.")
    _check_size(width_in, height_in)
    if not demo:
        demo_fin = [f"label {n} (DIN {label.din_id.eye_readable()}) uses the demonstration FIN "
                    f"{isbt128.DEMO_FIN}: it can only be printed as a DEMO label"
                    for n, label in enumerate(labels, start=1)
                    if isbt128.DEMO_FIN in (label.din_id.fin, label.coi_id.fin)]
        if demo_fin:
            raise ValidationFailed(*demo_fin)
    return _ENVIRONMENT.get_template(_TEMPLATE).render(
        labels=[_view(label) for label in labels],
        width_in=f"{width_in:g}",
        height_in=f"{height_in:g}",
        wide=width_in >= 5,
        demo=demo,
        demo_mark=DEMO_MARK,
        title=f"Bag labels ({len(labels)})",
    )


def _url_fetcher():
    from weasyprint.urls import URLFetcher

    # data: URIs only; a refused or broken image stops the rendering instead of printing a label without it.
    return URLFetcher(allowed_protocols=("data",), fail_on_errors=True)


def render_labels_pdf(labels: Sequence[LabelData], *, demo: bool, width_in: float = 4, height_in: float = 4) -> bytes:
    """The labels as a plain PDF (WeasyPrint), one page per label."""
    import weasyprint

    document = label_html(labels, width_in=width_in, height_in=height_in, demo=demo)
    return weasyprint.HTML(string=document, url_fetcher=_url_fetcher()).write_pdf()
