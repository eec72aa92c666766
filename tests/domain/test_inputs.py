"""The input policy (mfg/domain/inputs.py), as properties over generated inputs: whatever is accepted is
normalised, clean, bounded and, for identifiers and numbers, from the declared characters; whatever breaks a
rule is refused with a message naming the field and the limit."""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mfg.domain import inputs
from mfg.domain.errors import ValidationFailed

TODAY = date(2026, 12, 6)
FEW = settings(max_examples=60, deadline=None)

TEXTS = {name: r for name, r in inputs.RULES.items() if isinstance(r, inputs.Text)}
IDENTIFIERS = {name: r for name, r in inputs.RULES.items() if isinstance(r, inputs.Identifier)}
NUMBERS = {name: r for name, r in inputs.RULES.items() if isinstance(r, inputs.Number)}
DATES = {name: r for name, r in inputs.RULES.items() if isinstance(r, inputs.DateRange)}

# What the auditor typed (issue 19), and the families it stands for.
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
             "\u2066", "\u2067", "\u2068", "\u2069", "\ufeff", "\u00ad", "\u2028", "\u2029"]
CONTROLS = [chr(c) for c in [*range(0x00, 0x09), 0x0b, 0x0c, *range(0x0e, 0x20), *range(0x7f, 0xa0)]]
# Refused everywhere; a tab or line break only inside multi-line text (and a CR becomes a line break there).
REFUSED = st.sampled_from(INVISIBLE + CONTROLS) | st.characters(categories=["Cc", "Cf", "Co", "Cs", "Zl", "Zp"]).filter(
    lambda c: c not in "\t\n\r")
LOOK_ALIKES = st.sampled_from(["\u041e", "\u0430", "\u0421", "\u0391", "\uff10", "\uff21", "\u0660", "\u2010",
                               "\u00e9", "\u0131", " "]) | st.characters(min_codepoint=0x80).filter(
    lambda c: unicodedata.category(c) not in ("Cs",))


def refused(rule: inputs.Rule, value: object) -> str:
    with pytest.raises(ValidationFailed) as caught:
        rule.clean(value, today=TODAY)  # type: ignore[arg-type]
    [message] = caught.value.problems
    assert message.startswith(rule.label + ":"), message
    return message


def insert(text: str, char: str, where: int) -> str:
    at = where % (len(text) + 1)
    return text[:at] + char + text[at:]


def test_the_evidence_of_the_audit_is_refused() -> None:
    """Each input the auditor got stored (issue 19, item 4) is refused, with the reason in the message."""
    rules = inputs.RULES
    assert "CYRILLIC CAPITAL LETTER O" in refused(rules["subject_code"], "NK-\u041e\u041e1")
    assert "ZERO WIDTH SPACE" in refused(rules["identifier"], "BSC\u200b-01")
    assert "control character" in refused(rules["lot_number"], "LOT\x1b[31m7")
    assert "control character" in refused(rules["username"], "qa1\x00")
    assert "exponent" in refused(rules["weight_kg"], "1E1")
    assert "digits 0-9" in refused(rules["weight_kg"], "\u0666\u0662")  # Arabic-Indic 62
    assert "digits 0-9" in refused(rules["weight_kg"], "\uff16\uff12")  # full-width 62
    assert "earliest accepted is 2016-12-06" in refused(rules["measured_on"], date(1, 1, 1))
    assert "at most 500 are allowed" in refused(rules["reason"], "x" * 1_000_000)
    assert "RIGHT-TO-LEFT OVERRIDE" in refused(rules["comment"], "dose \u202e01 gk")
    for name in ("reason", "comment", "description", "condition", "location", "summary"):
        assert "control character" in refused(rules[name], "ok\x07")


@FEW
@given(name=st.sampled_from(sorted(TEXTS)), value=st.text(max_size=80))
@example(name="comment", value="cafe\u0301\r\nline\t2 ")
def test_accepted_text_is_normalised_clean_and_bounded(name: str, value: str) -> None:
    rule = TEXTS[name]
    try:
        text = rule.clean(value)
    except ValidationFailed as exc:
        assert exc.problems[0].startswith(rule.label + ":")
        return
    assert unicodedata.is_normalized("NFC", text)
    assert text == text.strip()
    assert len(text) <= rule.max_length
    allowed = "\n\t" if rule.multiline else ""
    assert not [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
                and c not in allowed]


@FEW
@given(name=st.sampled_from(sorted(TEXTS) + sorted(IDENTIFIERS)), char=REFUSED, where=st.integers(0, 20))
def test_a_control_or_invisible_character_is_refused_in_every_text(name: str, char: str, where: int) -> None:
    rule = inputs.RULES[name]
    assert re.search(r"(control|invisible or formatting) character", refused(rule, insert("BSC-01", char, where)))


@FEW
@given(name=st.sampled_from(sorted(TEXTS) + sorted(IDENTIFIERS)), extra=st.integers(1, 50))
def test_every_length_is_bounded_with_the_limit_in_the_message(name: str, extra: int) -> None:
    rule = inputs.RULES[name]
    limit = rule.max_length  # type: ignore[attr-defined]
    assert rule.clean("A" * limit) == "A" * limit
    assert f"at most {limit} are allowed" in refused(rule, "A" * (limit + extra))


@FEW
@given(name=st.sampled_from(sorted(IDENTIFIERS)), value=st.text(max_size=30))
def test_an_accepted_identifier_is_from_its_declared_ascii_set(name: str, value: str) -> None:
    rule = IDENTIFIERS[name]
    try:
        identifier = rule.clean(value)
    except ValidationFailed:
        return
    assert identifier == "" or rule.charset.odd_character(identifier) is None
    assert identifier.isascii()


@FEW
@given(name=st.sampled_from(sorted(IDENTIFIERS)), char=LOOK_ALIKES, where=st.integers(1, 10))
def test_a_look_alike_in_an_identifier_is_refused(name: str, char: str, where: int) -> None:
    rule = IDENTIFIERS[name]
    if rule.charset is inputs.SCAN and char == " ":
        return  # a scan's eye-readable form has spaces between its parts
    assert refused(rule, insert("NK-001", char, 1 + where % 5))  # inside: surrounding spaces are trimmed


@FEW
@given(number=st.decimals(min_value=Decimal("0.01"), max_value=Decimal(400), places=2, allow_nan=False))
def test_a_weight_in_plain_decimal_is_taken_as_typed(number: Decimal) -> None:
    assert inputs.RULES["weight_kg"].clean(f"{number:f}") == number


@FEW
@given(value=st.text(alphabet="0123456789.,-+eE \u0660\u0662\u06f5\uff10\uff15\u0966_'", min_size=1, max_size=8))
def test_a_number_is_accepted_only_in_plain_decimal(value: str) -> None:
    rule = NUMBERS["weight_kg"]
    try:
        number = rule.clean(value)
    except ValidationFailed:
        return
    assert re.fullmatch(r"[0-9]+(\.[0-9]{1,2})?", value.strip()), value
    assert Decimal(0) < number <= Decimal(400)


@FEW
@given(name=st.sampled_from(sorted(DATES)), day=st.dates())
@example(name="measured_on", day=date(1, 1, 1))
@example(name="expiry", day=date(9999, 12, 31))
def test_a_date_is_accepted_only_within_its_declared_range(name: str, day: date) -> None:
    rule = DATES[name]
    earliest, latest = rule.bounds(TODAY)
    assert earliest.year >= inputs.MIN_YEAR
    if earliest <= day <= latest:
        assert rule.clean(day, today=TODAY) == day
    else:
        assert "accepted" in refused(rule, day)


def test_birth_like_and_expiry_like_dates_have_different_ranges() -> None:
    """Past-only dates (a weighing, a specimen) refuse tomorrow; expiry and calibration dates take years ahead."""
    tomorrow = date(2026, 12, 7)
    assert "in the future" in refused(inputs.RULES["measured_on"], tomorrow)
    assert "in the future" in refused(inputs.RULES["specimen_date"], tomorrow)
    assert inputs.RULES["expiry"].clean(date(2030, 1, 1), today=TODAY) == date(2030, 1, 1)
    assert inputs.RULES["calibration_due"].clean(date(2027, 6, 1), today=TODAY) == date(2027, 6, 1)
    assert "implausibly far ahead" in refused(inputs.RULES["expiry"], date(2100, 1, 1))
