"""Bag labels as ZPL II for Zebra thermal printers: the same :class:`~mfg.reports.labels.LabelData` as the
PDF labels, the same barcode data (ISBT 128 DIN, product code, expiration in the site's local time, COI;
the DataMatrix compound message) and the same eye-readable text, as plain ZPL text a site sends to the
printer (port 9100, or a driver's raw queue).

One ``^XA`` ... ``^XZ`` format per label, for a 4 x 4 in label at 203 dpi (8 dots/mm; ``^PW``/``^LL`` follow
the label size). Code 128 barcodes use ZPL's automatic subset selection (``^BC...,A``) with a module width
of 2 dots (0.25 mm, :data:`~mfg.reports.labels.CODE128_MODULE_MM`); the DataMatrix is ECC 200 (``^BX``,
quality 200). Text is UTF-8 (``^CI28``); the characters ZPL reserves (``^``, ``~``) and the hexadecimal
escape character are written as escapes (``^FH``), so every field's data is exactly the label's.
Font 0 (``^A0``) is the printer's scalable font: a site validates that its printer prints every
character of its statements (× and superscripts included) before use.

:func:`parse` reads the fields of a ZPL text back (tests, and a check before printing).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .labels import DEMO_MARK, LabelData, datamatrix_content, format_cells, format_expiry

DOTS_PER_INCH = 203
MODULE_DOTS = 2  # 0.25 mm at 8 dots/mm
BAR_HEIGHT_DOTS = 80  # 10 mm
_ESCAPE = "_"
_RESERVED = {"^": "_5E", "~": "_7E", "_": "_5F"}


def _data(text: str) -> str:
    """Field data with ZPL's reserved characters escaped (decoded by ``^FH_``)."""
    return "".join(_RESERVED.get(ch, ch) for ch in text)


def _text(x: int, y: int, size: int, text: str, name: str) -> str:
    return f"^FX{name}^FS^FO{x},{y}^A0N,{size},{size}^FH{_ESCAPE}^FD{_data(text)}^FS"


def _code128(x: int, y: int, data: str, name: str) -> str:
    return (f"^FX{name}^FS^FO{x},{y}^BY{MODULE_DOTS}^BCN,{BAR_HEIGHT_DOTS},N,N,N,A"
            f"^FH{_ESCAPE}^FD{_data(data)}^FS")


def label_zpl(label: LabelData, *, demo: bool, width_in: float = 4, height_in: float = 4) -> str:
    """One label as a ZPL format (``^XA`` ... ``^XZ``); each field is preceded by a ``^FX`` comment naming it."""
    width, height = round(width_in * DOTS_PER_INCH), round(height_in * DOTS_PER_INCH)
    din, coi, product = label.din_id, label.coi_id, label.product
    parts = ["^XA", "^CI28", f"^PW{width}", f"^LL{height}", "^LH0,0"]
    y = 16
    if demo:
        parts.append(_text(16, y, 26, DEMO_MARK, "demo"))
        y += 32
    facility = f"{label.facility_name} · {label.facility}" if label.facility_name else label.facility
    parts.append(_text(16, y, 22, facility, "facility"))
    y += 26
    if label.facility_address:
        parts.append(_text(16, y, 18, ", ".join(label.facility_address), "facility_address"))
        y += 22
    if label.reprint:
        parts.append(_text(width - 180, 16, 24, f"REPRINT {label.reprint}", "reprint"))
    y += 6
    column = width // 2 + 8
    parts += [_text(16, y, 16, "DONATION IDENTIFICATION NUMBER", "din_caption"),
              _text(column, y, 16, "PRODUCT CODE", "product_caption")]
    y += 20
    parts += [_code128(16, y, label.din_data, "din_barcode"),
              _code128(column, y, label.product_data, "product_barcode")]
    y += BAR_HEIGHT_DOTS + 6
    parts += [_text(16, y, 26, f"{din.eye_readable()} {label.flags} {din.check}", "din_eye"),
              _text(column, y, 26, f"{product.description}{product.donation_type} {product.division}", "product_eye")]
    y += 30
    parts.append(_text(column, y, 20, label.product_name, "product_name"))
    y += 30
    parts += [_text(16, y, 16, "CHAIN OF IDENTITY", "coi_caption"),
              _text(column, y, 16, "EXPIRATION DATE-TIME", "expiry_caption")]
    y += 20
    parts += [_code128(16, y, label.coi_data, "coi_barcode"),
              _code128(column, y, label.expiry_data, "expiry_barcode")]
    y += BAR_HEIGHT_DOTS + 6
    parts += [_text(16, y, 24, f"{coi.eye_readable()} {coi.check}", "coi_eye"),
              _text(column, y, 26, format_expiry(label.expires_at, label.zone), "expiry_eye")]
    y += 30
    parts.append(_text(16, y, 24, f"Subject {label.subject_code}", "subject"))
    y += 34
    parts += [_text(16, y, 24, f"{format_cells(label.nk_cells)} NK cells", "nk_cells"),
              f"^FXdatamatrix^FS^FO{width - 190},{y}^BXN,6,200^FH{_ESCAPE}^FD{_data(datamatrix_content(label))}^FS"]
    y += 28
    parts.append(_text(16, y, 24, f"Volume {label.volume_ml:f} mL", "volume"))
    y += 28
    parts.append(_text(16, y, 20, f"Dose level {label.dose_level}", "dose_level"))
    y += 26
    parts.append(_text(16, y, 20, label.storage, "storage"))
    y += 24
    if label.additive:
        parts.append(_text(16, y, 18, label.additive, "additive"))
        y += 22
    parts.append(f"^FXwarnings^FS^FO16,{y}^FB{width - 32},4,0,L^A0N,18,18^FH{_ESCAPE}"
                 f"^FD{_data(' • '.join(label.warnings))}^FS")
    parts.append("^XZ")
    return "\n".join(parts) + "\n"


def labels_zpl(labels: Sequence[LabelData], *, demo: bool, width_in: float = 4, height_in: float = 4) -> str:
    """Every label, one ZPL format each, in order."""
    return "".join(label_zpl(label, demo=demo, width_in=width_in, height_in=height_in) for label in labels)


_FIELD = re.compile(r"\^FX(?P<name>[a-z_]+)\^FS\^FO\d+,\d+(?P<command>.*?)\^FD(?P<data>.*?)\^FS", re.S)


def parse(zpl: str) -> list[dict[str, str]]:
    """The named fields of each label of a ZPL text, with the escapes decoded: ``[{"din_barcode":
    "=X99992600012300", "expiry_eye": "2026-06-03 09:30 CDT", ...}, ...]``."""
    found = []
    for block in re.findall(r"\^XA(.*?)\^XZ", zpl, re.S):
        fields = {}
        for match in _FIELD.finditer(block):
            fields[match["name"]] = re.sub(r"_([0-9A-F]{2})", lambda m: chr(int(m[1], 16)), match["data"])
        found.append(fields)
    return found
